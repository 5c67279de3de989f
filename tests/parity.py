"""Parity of a fast backend with the reference: the configurations and the comparison.

Random inputs, random states with per-element steps, random lengths, random
upstream gradients on the output and on every final-state tensor; every output,
final state and gradient is compared.
"""

from __future__ import annotations

import torch

from helpers import random_model
from nrnm_fast import NRNMState
from nrnm_fast.testing import max_relative_error, outputs_and_grads

# (T, B, L, block_size, stride, num_slots, num_heads, lengths, steps[, H]); H = 8 unless given, D = 5
CASES = {
    "T1": (1, 3, 1, 4, 2, 2, 2, None, [0, 1, 3]),
    "T3-stride1": (3, 1, 1, 2, 1, 1, 1, None, [0]),
    "T17-s-divides-k": (17, 3, 2, 6, 3, 2, 4, [17, 9, 9], [0, 0, 0]),
    "T17-s-not-dividing-k": (17, 3, 1, 5, 3, 3, 2, [1, 17, 12], [2, 7, 0]),
    "T50-s-equals-k": (50, 3, 1, 4, 4, 1, 4, [50, 31, 1], [0, 5, 2]),
    "T50-two-layers": (50, 3, 2, 8, 4, 2, 2, [50, 50, 20], [3, 0, 9]),
    "T17-B1-streamed": (17, 1, 2, 3, 2, 3, 1, None, [11]),
    "T3-k1": (3, 3, 1, 1, 1, 2, 2, [3, 1, 2], [0, 4, 1]),
    # 13 rows per step GEMM: the CPU path's register-blocked GEMM in blocks of 4 rows and a remainder
    "T9-B13": (9, 13, 1, 4, 2, 2, 2, [9, 9, 5, 9, 1, 9, 7, 9, 9, 3, 9, 9, 8], [0, 0, 1, 0, 2, 0, 0, 5, 0, 0, 3, 0, 0]),
    # Rows of several of the CPU attention kernels' vectors with a remainder at every vector width
    # (16 or 8 floats, 8 or 4 doubles); 6 and 8 queries per block (blocks of 4 and 2, one of 8)
    "T13-H42": (13, 3, 1, 5, 2, 3, 2, [13, 6, 13], [0, 3, 1], 42),
    "T10-H64-four-heads": (10, 2, 1, 4, 4, 2, 4, None, [0, 6], 64),
    # 20 rows by W_hh (4H x H) and W_mr ((NH)^2) of 36864 elements: the CPU path's packed products
    # of more than 16 rows by a large weight (csrc/cpu/small_gemm.h)
    "T6-B20-H96": (6, 20, 1, 4, 2, 2, 2, [6] * 17 + [4, 1, 6], [0] * 10 + [1, 2, 3, 5] * 2 + [9, 0], 96),
    # 66 rows by every weight, 132 memory rows per update (one shard): the step loop's products
    # packed on 64-byte panels (up to 128 rows), MKL's on 32-byte ones (up to 64); the memory
    # updates' on MKL's path either way (csrc/cpu/small_gemm.h packed_gemm_pays)
    "T5-B66-H24": (5, 66, 1, 4, 2, 2, 2, [5] * 60 + [4, 1, 5, 3, 5, 2], [0] * 33 + [1, 2, 3] * 11, 24),
    # 130 rows: every product on MKL's path
    "T5-B130-H24": (5, 130, 1, 4, 2, 2, 2, [5] * 124 + [4, 1, 5, 3, 5, 2], [0] * 67 + [1, 2, 3] * 21, 24),
    # The CPU path computes the input product in slabs of 256 rows (csrc/layer.cpp InputSlabs):
    # 52 steps of 5 elements, three slabs per layer (in two shards: 86 and 128 steps);
    "T120-B5-input-slabs": (120, 5, 2, 3, 2, 2, 2, [120, 120, 77, 120, 3], [0, 1, 2, 5, 0]),
    # and a slab as long as the longest chunk, here 60 steps without a memory update after
    # every element's last step, where 256 rows of 8 elements would be 32 steps.
    "T90-B8-idle-tail": (90, 8, 1, 4, 2, 2, 2, [30, 12, 30, 1, 29, 30, 7, 30], [0, 1, 0, 3, 0, 0, 2, 1]),
    # The backward takes the input product's gradient in the same slabs, walking back a chunk at a
    # time: here slabs whose earliest chunk does not reach their first row (three in one shard,
    # one in each of two).
    "T110-B7-gradient-slabs": (110, 7, 1, 4, 3, 2, 2, [110, 110, 110, 93, 7, 110, 110], [3, 4, 0, 0, 4, 4, 4]),
}


def run_case(backend: str, dtype: torch.dtype, case, device: str = "cpu", input_grad: bool = True) -> dict:
    """Every output and gradient of one case (drawn in float64 on the CPU, then cast and moved);
    without input_grad the input needs no gradient, as a model's data usually does not."""
    T, B, L, k, s, N, nh, lengths, steps, *hidden = case
    model = random_model(5, hidden[0] if hidden else 8, num_layers=L, block_size=k, stride=s, num_slots=N, num_heads=nh,
                         backend=backend).to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(T, B, 5, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    zero = model.initial_state(B)
    state = NRNMState(*(torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t) * 0.5 for t in zero[:5]),
                      torch.tensor(steps, device=device))
    lengths = None if lengths is None else torch.tensor(lengths, device=device)
    return outputs_and_grads(model, x, state, lengths, seed=11, input_grad=input_grad)


def assert_matches(actual: dict, expected: dict, tol: float):
    assert actual.keys() == expected.keys()
    worst = {name: max_relative_error(actual[name], e) for name, e in expected.items()}
    bad = {name: err for name, err in worst.items() if not err <= tol}
    assert not bad, f"relative errors above {tol}: {bad}"
    nonzero = [name for name, e in expected.items() if e.is_floating_point() and e.abs().max() > 0]
    assert len(nonzero) > 0.8 * len(expected), "the comparison must not be between zeros"


def random_config(seed: int) -> dict:
    """A configuration drawn at random (seeded) over what CASES hold fixed as well: input size,
    head size, mlp_size, bias, batch_first, three layers.
    Kept short (T <= 40, L <= 3), where float64 results agree to ~1e-13: over hundreds of steps
    through several layers a random model is chaotic enough that a one-rounding change of its
    parameters moves the reference's own gradients by ~1e-9."""
    import random

    rng = random.Random(seed)
    nh = rng.choice([1, 2, 3, 4])
    H = nh * rng.choice([3, 5, 8] if nh == 1 else [2, 3, 5, 8])  # LayerNorm over H = 2 is degenerate
    k = rng.randint(1, 9)
    s = rng.randint(1, k)
    # every element updates its memory at least once (its length at least s), but a length-1 one
    B, T = rng.choice([1, 2, 3, 5, 13]), max(s, rng.choice([1, 2, 5, 8, 17, 40]))
    lengths = [rng.randint(s, T) for _ in range(B)] if rng.random() < 0.5 else None
    if lengths and B > 1:
        lengths[rng.randrange(B)] = 1
    return dict(
        model=dict(input_size=rng.choice([1, 2, 5, 16]), hidden_size=H, num_layers=rng.choice([1, 1, 2, 3]),
                   block_size=k, stride=s, num_slots=rng.randint(1, 3), num_heads=nh,
                   mlp_size=rng.choice([3, H, 2 * H + 1]), bias=rng.random() < 0.7, batch_first=rng.random() < 0.3),
        T=T, B=B, lengths=lengths,
        steps=[rng.choice([0, rng.randint(0, 3 * k + 2)]) for _ in range(B)],
    )


def large_random_config(seed: int) -> dict:
    """random_config at the sizes where the CPU path packs its weights into panels and splits the
    batch into shards: H = 8-192, B up to 66.
    There a random model can be chaotic (its outputs move by up to ~1e-6 when its parameters
    move by 1e-15): compare with a tolerance from reference_spread."""
    import random

    config = random_config(seed)
    rng = random.Random(-1 - seed)
    m = config["model"]
    m["hidden_size"] = m["num_heads"] * rng.choice([8, 16, 24, 48])
    s = m["stride"]
    B, T = rng.choice([1, 7, 20, 66]), max(s, rng.choice([5, 17, 33]))
    lengths = [rng.randint(s, T) for _ in range(B)] if rng.random() < 0.5 else None
    if lengths and B > 1:
        lengths[rng.randrange(B)] = 1
    config.update(T=T, B=B, lengths=lengths, steps=[rng.choice([0, rng.randint(0, 30)]) for _ in range(B)])
    return config


def reference_spread(config: dict, expected: dict) -> float:
    """How far the reference's own outputs and gradients (``expected``) move, at most, when every
    parameter moves by a random relative 1e-15: the rounding error that the configuration's
    conditioning alone can account for."""
    moved = run_random_config("reference", config, perturb=1e-15)
    return max(max_relative_error(moved[name], e) for name, e in expected.items())


def run_random_config(backend: str, config: dict, perturb: float = 0.0) -> dict:
    """Every output and gradient of one random_config (float64, the input needing a gradient);
    ``perturb``: each parameter times 1 + perturb * (a standard normal draw), seeded."""
    m = config["model"]
    model = random_model(m["input_size"], m["hidden_size"], backend=backend,
                         **{k: v for k, v in m.items() if k not in ("input_size", "hidden_size")})
    if perturb:
        noise = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + perturb * torch.randn(p.shape, generator=noise, dtype=p.dtype))
    T, B = config["T"], config["B"]
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(T, B, m["input_size"], generator=gen, dtype=torch.float64)
    if m["batch_first"]:
        x = x.transpose(0, 1).contiguous()
    zero = model.initial_state(B)
    state = NRNMState(*(torch.randn(t.shape, generator=gen, dtype=torch.float64) * 0.5 for t in zero[:5]),
                      torch.tensor(config["steps"]))
    lengths = None if config["lengths"] is None else torch.tensor(config["lengths"])
    return outputs_and_grads(model, x, state, lengths, seed=11)
