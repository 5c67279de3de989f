"""The C++ CPU path against the reference: every output, final state and gradient.

Random inputs, random states with per-element steps, random lengths, random
upstream gradients on the output and on every final-state tensor.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
import torch

from helpers import random_model, torch_threads
from nrnm_fast import NRNM, NRNMState, available_backends
from parity import (CASES, assert_matches, large_random_config, random_config, reference_spread, run_case,
                    run_random_config)

requires_cpu_ext = pytest.mark.skipif("cpu" not in available_backends(), reason="C++ extension not built")


def test_extension_is_built_when_required():
    """`make test` sets NRNM_REQUIRE_EXTENSION=1: a build that lost the extension must fail, not skip."""
    if os.environ.get("NRNM_REQUIRE_EXTENSION") != "1":
        pytest.skip("NRNM_REQUIRE_EXTENSION is not set")
    assert "cpu" in available_backends("cpu")


@requires_cpu_ext
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_cpu_matches_reference_float64(case):
    assert_matches(run_case("cpu", torch.float64, case), run_case("reference", torch.float64, case), 1e-10)


@requires_cpu_ext
@pytest.mark.parametrize("seed", range(64))
def test_cpu_matches_reference_random_config(seed):
    """Seeded random configurations (parity.random_config), each on one or two threads."""
    config = random_config(seed)
    with batch_shards(2, 2) if seed % 2 else contextlib.nullcontext():
        actual = run_random_config("cpu", config)
    assert_matches(actual, run_random_config("reference", config), 1e-10)


@requires_cpu_ext
@pytest.mark.parametrize("seed", range(16))
def test_cpu_matches_reference_large_random_config(seed):
    """Seeded random configurations at H up to 192 and B up to 66 (parity.large_random_config),
    on one or two threads, to 10x the reference's own spread under a 1e-15 change of its
    parameters (at least 1e-10), which must stay small enough for the comparison to mean
    something (a wrong term moves results by far more than 1e-7)."""
    config = large_random_config(seed)
    expected = run_random_config("reference", config)
    tol = max(1e-10, 10 * reference_spread(config, expected))
    assert tol <= 1e-7, f"the configuration is too ill-conditioned to compare: tolerance {tol:.1e}"
    with batch_shards(2, 2) if seed % 2 else contextlib.nullcontext():
        actual = run_random_config("cpu", config)
    assert_matches(actual, expected, tol)


@requires_cpu_ext
@pytest.mark.parametrize("case", ["T17-s-not-dividing-k", "T50-two-layers"])
def test_cpu_matches_reference_float32(case):
    assert_matches(run_case("cpu", torch.float32, CASES[case]), run_case("reference", torch.float32, CASES[case]), 1e-5)


@requires_cpu_ext
@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("case", ["T17-s-not-dividing-k", "T50-two-layers"])
def test_cpu_matches_reference_without_input_grad(case, shards):
    """An input that needs no gradient: the op skips its GEMM; every other gradient is the same
    (in two layers the second layer's input still needs one)."""
    with batch_shards(shards, 1):
        actual = run_case("cpu", torch.float64, CASES[case], input_grad=False)
    assert "grad.input" not in actual
    assert_matches(actual, run_case("reference", torch.float64, CASES[case], input_grad=False), 1e-10)


@requires_cpu_ext
def test_cpu_matches_reference_without_avx512_kernels():
    """NRNM_DISABLE_AVX512=1 (read once per process, so in a process of its own): the kernels of
    CPUs without AVX-512 (32-byte vectors: the packed GEMM's narrow panels, the attention's), which
    a CPU with AVX-512 would not run otherwise; every case in float64, two in float32, and random
    configurations."""
    script = textwrap.dedent("""
        import torch
        from nrnm_fast import _C
        from parity import CASES, assert_matches, random_config, run_case, run_random_config
        assert not _C.avx512_kernels_enabled()
        for case in CASES.values():
            assert_matches(run_case("cpu", torch.float64, case), run_case("reference", torch.float64, case), 1e-10)
        for name in ["T13-H42", "T10-H64-four-heads"]:
            assert_matches(run_case("cpu", torch.float32, CASES[name]),
                           run_case("reference", torch.float32, CASES[name]), 1e-5)
        for seed in range(16):
            config = random_config(seed)
            assert_matches(run_random_config("cpu", config), run_random_config("reference", config), 1e-10)
    """)
    tests = Path(__file__).parent
    env = dict(os.environ, NRNM_DISABLE_AVX512="1",
               PYTHONPATH=os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tests, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@contextlib.contextmanager
def extension_setting(name: str, value):
    """The CPU ops' process-wide setting ``name`` (``_C.<name>()``, ``_C.set_<name>(value)``) at
    ``value`` for the block, then restored."""
    from nrnm_fast import _C

    default = getattr(_C, name)()
    getattr(_C, "set_" + name)(value)
    try:
        yield
    finally:
        getattr(_C, "set_" + name)(default)


def large_products_packed(on: bool):
    """The CPU ops' large products through their packed GEMM (on) or through at::mm (off)."""
    return extension_setting("packed_large_products", on)


def avx512_kernels_enabled() -> bool:
    from nrnm_fast import _C

    return _C.avx512_kernels_enabled()


@requires_cpu_ext
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "at-mm"])
@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("case", ["T17-s-not-dividing-k", "T50-two-layers", "T13-H42"])
def test_large_products_either_way_match_reference(case, shards, packed):
    """The input product, the input's gradient and the weight gradients (csrc/cpu/small_gemm.h,
    packed_large_products) through the packed GEMM and through at::mm, whichever this CPU picks:
    float64 on one and two shards (two threads), float32 on one."""
    if packed and not avx512_kernels_enabled():
        pytest.skip("the packed GEMM takes the large products on AVX-512 CPUs only")
    with large_products_packed(packed):
        with batch_shards(shards, shards):
            actual = run_case("cpu", torch.float64, CASES[case])
        assert_matches(actual, run_case("reference", torch.float64, CASES[case]), 1e-10)
        if shards == 1:
            assert_matches(run_case("cpu", torch.float32, CASES[case]),
                           run_case("reference", torch.float32, CASES[case]), 1e-5)


@requires_cpu_ext
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "at-mm"])
@pytest.mark.parametrize("seed", [9, 11])
def test_large_products_either_way_large_random_config(seed, packed):
    """As above, at H up to 192 and B up to 66 on two threads (parity.large_random_config)."""
    if packed and not avx512_kernels_enabled():
        pytest.skip("the packed GEMM takes the large products on AVX-512 CPUs only")
    config = large_random_config(seed)
    expected = run_random_config("reference", config)
    tol = max(1e-10, 10 * reference_spread(config, expected))
    with large_products_packed(packed), batch_shards(2, 2):
        actual = run_random_config("cpu", config)
    assert_matches(actual, expected, tol)


@contextlib.contextmanager
def batch_shards(shards: int, threads: int):
    """The op split into `shards` batch shards (the op takes at most the batch) on `threads` torch threads."""
    from nrnm_fast import layer_ops

    with torch_threads(threads), mock.patch.object(layer_ops, "batch_shards", lambda x, triton: shards):
        yield


SHARDED_CASES = [name for name, case in CASES.items() if case[1] > 1]


@requires_cpu_ext
@pytest.mark.parametrize("shards, threads", [(2, 1), (3, 1), (2, 2), (3, 2)])
@pytest.mark.parametrize("case", SHARDED_CASES)
def test_batch_shards_match_reference_float64(case, shards, threads):
    """Shards of 1 and 2 elements, run one after another and on two threads (unevenly with 3 shards)."""
    with batch_shards(shards, threads):
        actual = run_case("cpu", torch.float64, CASES[case])
    assert_matches(actual, run_case("reference", torch.float64, CASES[case]), 1e-10)


@requires_cpu_ext
def test_batch_shards_match_reference_float32():
    with batch_shards(2, 2):
        actual = run_case("cpu", torch.float32, CASES["T50-two-layers"])
    assert_matches(actual, run_case("reference", torch.float32, CASES["T50-two-layers"]), 1e-5)


# Five elements in three shards (2, 2, 1) on two threads: the thread of the last shard is done
# while the other runs its second shard, and then takes units of that shard's GEMMs.
SHARD_HELP_CASE = (30, 5, 1, 4, 2, 2, 2, [30, 30, 23, 30, 30], [0, 1, 2, 3, 0], 96)


@requires_cpu_ext
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_a_thread_done_with_its_shards_takes_part_in_the_others_gemms(dtype):
    """With every GEMM of two units or more offered (min_shared_work 1), the idle thread runs some
    of the other thread's column panels and row blocks: outputs and gradients equal those without
    help bit for bit (a unit's result does not depend on the thread), and match the reference."""
    from nrnm_fast import _C

    with batch_shards(3, 2):
        with extension_setting("min_shared_work", 2**62):
            alone = run_case("cpu", dtype, SHARD_HELP_CASE)
        before = _C.units_helped()
        with extension_setting("min_shared_work", 1):
            helped = run_case("cpu", dtype, SHARD_HELP_CASE)
        assert _C.units_helped() > before
    assert alone.keys() == helped.keys()
    for name in alone:
        assert torch.equal(alone[name], helped[name]), name
    if dtype == torch.float64:
        assert_matches(helped, run_case("reference", dtype, SHARD_HELP_CASE), 1e-10)


BATCH_OF_ONE_H256 = {T: (T, 1, 1, 4, 3, 2, 2, None, [2], 256) for T in (9, 20)}


@requires_cpu_ext
@pytest.mark.parametrize("T", BATCH_OF_ONE_H256)
def test_batch_of_one_shares_large_weights_between_threads(T):
    """A batch of one runs in one shard; on two threads its products by a weight of 1 MB or more
    (here W_hh^T and W_mr^T, 2 MB each at H = 256 in float64) give each thread a share of the weight's
    columns (csrc/cpu/loop_matmul.h for_column_shares): at T = 9 the step reads W_hh^T in place
    (and the backward's step W_hh, row-major), at T = 20 packed, in shares of whole panels."""
    with batch_shards(1, 2):
        actual = run_case("cpu", torch.float64, BATCH_OF_ONE_H256[T])
    assert_matches(actual, run_case("reference", torch.float64, BATCH_OF_ONE_H256[T]), 1e-10)


@requires_cpu_ext
@pytest.mark.parametrize("T", BATCH_OF_ONE_H256)
def test_batch_of_one_float32_is_the_same_on_one_and_two_threads(T):
    """The float32 shares (W_hh^T and W_mr^T, 1 MB each) against the same op on one thread, which
    reads every weight whole: the shares compute each output column as the whole product does, so
    only ATen's threaded reductions may round differently (~4e-8). (The float32 reference is no
    yardstick here: this random model at H = 256 and T = 20 amplifies its rounding to ~1e-3 of the
    float64 one.)"""
    with batch_shards(1, 1):
        one_thread = run_case("cpu", torch.float32, BATCH_OF_ONE_H256[T])
    with batch_shards(1, 2):
        two_threads = run_case("cpu", torch.float32, BATCH_OF_ONE_H256[T])
    assert_matches(two_threads, one_thread, 1e-6)


@requires_cpu_ext
def test_one_shard_per_thread():
    from nrnm_fast.layer_ops import batch_shards

    x = torch.empty(4, 3, 2)  # the op runs at most B = 3 (tests/test_cpu_ops.py), whatever it is given
    for threads, expected in [(1, 1), (2, 2), (5, 5)]:
        with torch_threads(threads):
            assert batch_shards(x, triton_attention=False) == expected
    assert batch_shards(x, triton_attention=True) == 1


@requires_cpu_ext
def test_auto_picks_cpu_and_streaming_is_exact():
    model = random_model(5, 8, num_heads=2, block_size=4, stride=3, backend="auto")
    ref = random_model(5, 8, num_heads=2, block_size=4, stride=3, backend="reference")
    x = torch.randn(20, 2, 5, dtype=torch.float64)
    out, state = model(x, model.initial_state(2))
    out1, mid = model(x[:7], model.initial_state(2))
    out2, end = model(x[7:], mid)
    torch.testing.assert_close(torch.cat([out1, out2]), out, rtol=1e-12, atol=1e-13)
    for a, b in zip(end, state):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(out, ref(x, ref.initial_state(2))[0], rtol=1e-10, atol=1e-12)


@requires_cpu_ext
def test_inference_matches_training_forward():
    """Under no_grad the op keeps nothing for a backward (for_backward=False); the results are the same."""
    model = random_model(5, 8, num_layers=2, num_heads=2, block_size=4, stride=3, backend="cpu")
    x = torch.randn(20, 3, 5, dtype=torch.float64)
    state, lengths = random_state_of(model, 3), torch.tensor([20, 11, 1])
    out, new = model(x, state, lengths=lengths)
    assert out.requires_grad
    with torch.no_grad():
        out_inference, new_inference = model(x, state, lengths=lengths)
    assert torch.equal(out_inference, out.detach())
    for a, b in zip(new_inference, new):
        assert torch.equal(a, b.detach())


@requires_cpu_ext
def test_cpu_gradcheck():
    model = random_model(3, 4, num_layers=2, block_size=3, stride=2, num_slots=2, num_heads=2, backend="cpu")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    start = random_state_of(model)
    lengths = torch.tensor([5, 3])
    names = [n for n, _ in model.named_parameters()]

    def f(x, h, c, memory, window, ewindow, *params):
        state = NRNMState(h, c, memory, window, ewindow, start.steps)
        out, new = torch.func.functional_call(model, dict(zip(names, params)), (x, state), {"lengths": lengths})
        return out, *new[:5]

    inputs = [t.detach().clone().requires_grad_(True) for t in (x, *start[:5], *model.parameters())]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def random_state_of(model: NRNM, B: int = 2) -> NRNMState:
    gen = torch.Generator().manual_seed(3)
    zero = model.initial_state(B)
    return NRNMState(*(torch.randn(t.shape, generator=gen, dtype=t.dtype) * 0.5 for t in zero[:5]),
                     torch.arange(B) * 2)


def test_cpu_backend_without_extension_message(monkeypatch):
    from nrnm_fast import backends

    monkeypatch.setattr(backends, "LAYER_OPS", None)
    monkeypatch.setattr(backends, "EXTENSION_MISSING", "the C++ extension nrnm_fast._C is not built (test)")
    assert backends.available_backends("cpu") == ["reference"]
    with pytest.raises(RuntimeError, match=r"backend='cpu' is not available: the C\+\+ extension nrnm_fast._C is not"):
        NRNM(3, 4, num_heads=2, backend="cpu")(torch.randn(2, 1, 3))
    backends._warn_reference_fallback.cache_clear()
    try:
        with pytest.warns(UserWarning, match=r"backend='auto' runs the slow reference on cpu: the C\+\+ extension"):
            out, _ = NRNM(3, 4, num_heads=2)(torch.randn(2, 1, 3))
        assert out.shape == (2, 1, 4)
    finally:
        backends._warn_reference_fallback.cache_clear()


@requires_cpu_ext
def test_bfloat16_runs_on_the_reference_with_auto_and_is_refused_by_cpu():
    x = torch.randn(4, 2, 3, dtype=torch.bfloat16)
    out, _ = NRNM(3, 4, num_heads=2, dtype=torch.bfloat16)(x)
    assert out.dtype == torch.bfloat16 and out.shape == (4, 2, 4)
    assert available_backends("cpu", torch.bfloat16) == ["reference"]
    with pytest.raises(TypeError, match="backend='cpu' computes in float32, float64 on cpu; got torch.bfloat16"):
        NRNM(3, 4, num_heads=2, dtype=torch.bfloat16, backend="cpu")(x)
