"""The NRNM module as a drop-in nn.LSTM: parameters, init, layouts, states, layers, dropout, dispatch."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import nrnm_fast
from helpers import assert_close, random_model
from nrnm_fast import NRNM, NRNMState


def test_parameter_names_shapes_and_init():
    D, H, N, F = 5, 8, 3, 6
    model = NRNM(D, H, num_layers=2, num_slots=N, num_heads=2, mlp_size=F)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    for l, Dl in ((0, D), (1, H)):
        expected = {
            "weight_ih": (4 * H, Dl), "weight_hh": (4 * H, H), "bias_ih": (4 * H,), "bias_hh": (4 * H,),
            "weight_xr": (N * H, Dl), "weight_mr": (N * H, N * H), "bias_r": (N * H,), "weight_mc": (H, N * H),
            "input_proj_weight": (H, Dl), "input_proj_bias": (H,), "attn_in_weight": (3 * H, H),
            "attn_in_bias": (3 * H,), "attn_out_weight": (H, H), "attn_out_bias": (H,), "norm1_weight": (H,),
            "norm1_bias": (H,), "mlp1_weight": (F, H), "mlp1_bias": (F,), "mlp2_weight": (H, F),
            "mlp2_bias": (H,), "norm2_weight": (H,), "norm2_bias": (H,), "gate_x_weight": (2 * H, H),
            "gate_m_weight": (2 * H, H), "gate_bias": (2 * H,),
        }
        for name, shape in expected.items():
            assert shapes.pop(f"{name}_l{l}") == shape, name
    assert not shapes, f"unexpected parameters {shapes}"

    p = dict(model.named_parameters())
    for name in ("bias_r_l0", "input_proj_bias_l1", "attn_in_bias_l0", "attn_out_bias_l0", "norm1_bias_l0",
                 "mlp1_bias_l0", "mlp2_bias_l1", "norm2_bias_l0"):
        assert torch.all(p[name] == 0), name
    assert torch.all(p["norm1_weight_l0"] == 1) and torch.all(p["norm2_weight_l1"] == 1)
    assert torch.all(p["gate_bias_l0"][:H] == 0) and torch.all(p["gate_bias_l0"][H:] == 1)
    bound = {"input_proj_weight_l0": 1 / math.sqrt(D), "input_proj_weight_l1": 1 / math.sqrt(H),
             "mlp2_weight_l0": 1 / math.sqrt(F), "weight_mr_l0": 1 / math.sqrt(H), "bias_ih_l1": 1 / math.sqrt(H)}
    for name, b in bound.items():
        assert p[name].abs().max() <= b and p[name].abs().max() > 0.5 * b, name


def test_no_bias():
    model = NRNM(3, 4, bias=False, num_heads=2)
    names = {n for n, _ in model.named_parameters()}
    assert "bias_ih_l0" not in names and "bias_hh_l0" not in names and "bias_r_l0" in names
    assert model.layer_weights(0).bias_ih is None
    out, _ = model(torch.randn(5, 2, 3))
    assert out.shape == (5, 2, 4)


def test_a_parametrized_weight_is_the_one_the_layer_uses():
    """weight_norm on weight_hh_l0: the layer reads the parametrized weight, and its parts get gradients."""
    torch.manual_seed(0)
    model = random_model(4, 8, backend="reference")
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    before, _ = model(x)
    nn.utils.parametrizations.weight_norm(model, "weight_hh_l0")
    with torch.no_grad():
        model.parametrizations.weight_hh_l0.original0.mul_(2)  # the magnitude: weight_hh doubles
    assert torch.equal(model.layer_weights(0).weight_hh, model.weight_hh_l0)
    after, _ = model(x)
    assert not torch.allclose(before, after)
    after.sum().backward()
    assert model.parametrizations.weight_hh_l0.original1.grad.abs().max() > 0


def test_extra_repr_and_defaults():
    model = NRNM(3, 8, num_layers=2, batch_first=True, dropout=0.25)
    text = repr(model)
    for part in ("3, 8, num_layers=2", "batch_first=True", "dropout=0.25", "block_size=8", "stride=4",
                 "num_slots=2", "num_heads=4", "mlp_size=8", "backend='auto'"):
        assert part in text, part


def test_batch_first_matches_time_major():
    model = random_model(3, 4, num_heads=2, block_size=3, stride=2)
    bf = random_model(3, 4, num_heads=2, block_size=3, stride=2, batch_first=True)
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    out, (h, c) = model(x)
    out_bf, (h_bf, c_bf) = bf(x.transpose(0, 1).contiguous())
    assert out_bf.shape == (2, 7, 4)
    assert_close((out_bf.transpose(0, 1), h_bf, c_bf), (out, h, c), what="batch_first")


def test_state_forms():
    model = random_model(3, 4, num_layers=2, num_heads=2, block_size=3, stride=2)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    zero = model.initial_state(2)
    assert [tuple(t.shape) for t in zero] == [(2, 2, 4), (2, 2, 4), (2, 2, 2, 4), (2, 2, 3, 4), (2, 2, 3, 4), (2,)]
    assert zero.steps.dtype == torch.int64 and all(torch.all(t == 0) for t in zero)

    out_none, hc_none = model(x)
    out_full, full = model(x, zero)
    assert isinstance(full, NRNMState) and not isinstance(hc_none, NRNMState)
    assert_close((out_none, *hc_none), (out_full, full.h, full.c), what="None vs zero NRNMState")
    assert full.steps.tolist() == [6, 6]

    h0, c0 = torch.randn(2, 2, 4, dtype=torch.float64), torch.randn(2, 2, 4, dtype=torch.float64)
    out_hc, (h, c) = model(x, (h0, c0))
    out_st, st = model(x, zero._replace(h=h0, c=c0))
    assert_close((out_hc, h, c), (out_st, st.h, st.c), what="(h0, c0) vs NRNMState")


def test_detach_cuts_the_graph():
    model = random_model(3, 4, num_heads=2)
    _, state = model(torch.randn(5, 2, 3, dtype=torch.float64), model.initial_state(2))
    assert state.memory.requires_grad
    detached = state.detach()
    assert isinstance(detached, NRNMState)
    assert not any(t.requires_grad for t in detached)
    assert all(torch.equal(a, b) for a, b in zip(detached, state))


def test_a_saved_state_loads_with_torch_load_defaults(tmp_path):
    model = random_model(3, 4, num_heads=2)
    _, state = model(torch.randn(5, 2, 3, dtype=torch.float64), model.initial_state(2))
    torch.save(state.detach(), tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt")  # weights_only=True: allowed classes only
    assert isinstance(loaded, NRNMState)
    assert all(torch.equal(a, b) for a, b in zip(loaded, state))


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_activation_checkpointing_gives_the_same_gradients(backend, reentrant):
    # The first pass of a checkpointed segment runs without a graph (the fast op then keeps nothing for a
    # backward), the backward runs it again with one.
    if backend not in nrnm_fast.available_backends():
        pytest.skip("C++ extension not built")
    model = random_model(3, 4, num_layers=2, num_heads=2, block_size=3, stride=2, backend=backend)
    x = torch.randn(9, 2, 3, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(9, 2, 4, dtype=torch.float64)

    def gradients(checkpointed: bool):
        model.zero_grad()
        x.grad = None
        run = lambda inp: model(inp)[0]  # noqa: E731
        out = checkpoint(run, x, use_reentrant=reentrant) if checkpointed else run(x)
        (out * grad_out).sum().backward()
        return [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]

    assert_close(gradients(True), gradients(False), rtol=0, atol=0, what="gradients")


def test_truncated_bptt_loop_trains():
    torch.manual_seed(0)
    model = NRNM(2, 8, num_heads=2, block_size=4, stride=2)
    head = nn.Linear(8, 1)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=0.02)
    x = torch.randn(40, 4, 2)
    y = torch.cumsum(x[..., :1], 0) * 0.1
    losses = []
    for _ in range(15):
        state = model.initial_state(4)
        total = 0.0
        for chunk in range(0, 40, 10):
            out, state = model(x[chunk:chunk + 10], state)
            loss = ((head(out) - y[chunk:chunk + 10]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            state = state.detach()
            total += loss.item()
        losses.append(total)
    assert losses[-1] < 0.5 * losses[0]


def test_multilayer_dropout_train_vs_eval():
    kw = dict(num_layers=3, num_heads=2, block_size=3, stride=2)
    model = random_model(3, 4, dropout=0.5, **kw)
    plain = random_model(3, 4, dropout=0.0, **kw)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    model.eval()
    out_eval, _ = model(x)
    assert_close(out_eval, plain(x)[0], what="eval mode applies no dropout")
    model.train()
    torch.manual_seed(1)
    out_a, _ = model(x)
    torch.manual_seed(2)
    out_b, _ = model(x)
    assert (out_a - out_b).abs().max() > 1e-3 and (out_a - out_eval).abs().max() > 1e-3

    single = random_model(3, 4, dropout=0.5, num_heads=2).train()  # one layer: dropout never applies
    assert_close(single(x)[0], single.eval()(x)[0], what="last layer gets no dropout")


def test_multilayer_stacks_layers():
    model = random_model(3, 4, num_layers=2, num_heads=2, block_size=3, stride=2)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    out, state = model(x, model.initial_state(2))
    first = random_model(3, 4, num_layers=1, num_heads=2, block_size=3, stride=2)
    second = NRNM(4, 4, num_layers=1, num_heads=2, block_size=3, stride=2, dtype=torch.float64)
    with torch.no_grad():
        for name, p in model.named_parameters():
            target, new_name = (first, name) if name.endswith("_l0") else (second, name[:-1] + "0")
            target.get_parameter(new_name).copy_(p)
    mid, s0 = first(x, first.initial_state(2))
    out2, s1 = second(mid, second.initial_state(2))
    assert_close(out, out2, what="layer 1 reads layer 0's output")
    assert_close(state.memory, torch.cat([s0.memory, s1.memory]), what="per-layer memories")


def test_dtype_float32_runs_and_backward():
    model = NRNM(3, 8, num_heads=2)
    x = torch.randn(9, 2, 3, requires_grad=True)
    out, (h, c) = model(x)
    (out.sum() + c.sum()).backward()
    assert out.dtype == torch.float32 and x.grad is not None and model.attn_in_weight_l0.grad is not None
    assert model.attn_in_weight_l0.grad.abs().max() > 0


def test_meta_device_gives_shapes():
    """As nn.LSTM, a model on the meta device runs for shape inference (no values: no value checks)."""
    model = NRNM(3, 8, num_layers=2, num_heads=2, batch_first=True, device="meta")
    x = torch.empty(2, 9, 3, device="meta")
    out, (h, c) = model(x)
    assert out.shape == (2, 9, 8) and out.is_meta and h.shape == c.shape == (2, 2, 8)
    out, state = model(x, model.initial_state(2), lengths=torch.tensor([9, 4]))
    assert out.shape == (2, 9, 8) and state.memory.shape == (2, 2, 2, 8) and state.steps.is_meta


def test_backend_dispatch():
    assert nrnm_fast.available_backends()[0] == "reference"
    assert set(nrnm_fast.available_backends()) <= {"reference", "triton", "cpu"}
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    auto = random_model(3, 4, num_heads=2, backend="auto")
    ref = random_model(3, 4, num_heads=2, backend="reference")
    assert_close(auto(x)[0], ref(x)[0], rtol=1e-10, atol=1e-12, what="auto and reference")
    x = x.float()
    with pytest.raises(RuntimeError, match="backend='cuda' is not available: it runs on CUDA tensors; got tensors "
                                           "on cpu"):
        NRNM(3, 4, num_heads=2, backend="cuda")(x)
    if os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(RuntimeError, match="backend='triton' is not available: on CPU tensors the Triton kernels "
                                               "run in Triton's interpreter: set TRITON_INTERPRET=1"):
            NRNM(3, 4, num_heads=2, backend="triton")(x)
