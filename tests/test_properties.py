"""The four properties of docs/spec.md that every implementation keeps, checked on the reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence, pad_packed_sequence

from helpers import assert_close, random_model, random_state
from nrnm_fast import NRNM, NRNMState


# ---- 1. LSTM limit ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_layers, bias, batch_first", [(1, True, False), (2, True, True), (2, False, False)])
def test_lstm_limit_from_lstm(num_layers, bias, batch_first, backend):
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 8, num_layers, bias=bias, batch_first=batch_first).double()
    model = NRNM.from_lstm(lstm, backend=backend, block_size=3, stride=2, num_slots=2, num_heads=2)
    with torch.no_grad():  # a memory that is really updated, so only weight_mc == 0 cuts it off
        for name, p in model.named_parameters():
            if not name.startswith(("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_mc")):
                p.uniform_(-0.5, 0.5)
    x = torch.randn((3, 11, 5) if batch_first else (11, 3, 5), dtype=torch.float64)
    h0 = torch.randn(num_layers, 3, 8, dtype=torch.float64)
    c0 = torch.randn(num_layers, 3, 8, dtype=torch.float64)

    out, (h, c) = model(x, (h0, c0))
    ref_out, (ref_h, ref_c) = lstm(x, (h0, c0))
    assert_close((out, h, c), (ref_out, ref_h, ref_c), what="NRNM.from_lstm vs nn.LSTM")

    _, state = model(x, model.initial_state(3))
    assert state.memory.abs().max() > 0.1, "the memory must be updated for the test to mean anything"


def test_lstm_limit_from_state_dict(backend):
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6, 2)
    model = NRNM(4, 6, num_layers=2, num_heads=3, block_size=4, stride=2, backend=backend)
    missing, unexpected = model.load_state_dict(lstm.state_dict(), strict=False)
    assert not unexpected
    assert set(missing) == {n for n, _ in model.named_parameters()} - set(lstm.state_dict())
    with torch.no_grad():
        model.weight_mc_l0.zero_()
        model.weight_mc_l1.zero_()
    x = torch.randn(13, 2, 4)
    out, (h, c) = model(x)
    ref_out, (ref_h, ref_c) = lstm(x)
    assert_close((out, h, c), (ref_out, ref_h, ref_c), rtol=1e-5, atol=1e-6, what="state_dict-loaded NRNM")


# ---- 2. Streaming -----------------------------------------------------------------------------


@pytest.mark.parametrize("split", [1, 2, 3, 5, 6, 8, 13])  # s = 4, k = 6: before the first update, mid-stride, ...
def test_streaming_equals_one_call(split, backend):
    model = random_model(3, 4, num_layers=2, block_size=6, stride=4, num_slots=2, num_heads=2, backend=backend)
    x = torch.randn(14, 2, 3, dtype=torch.float64)
    start = random_state(model, 2, [0, 3])
    full_out, full_state = model(x, start)
    out1, mid = model(x[:split], start)
    out2, end = model(x[split:], mid)
    assert_close(torch.cat([out1, out2]), full_out, what="streamed output")
    assert_close(end, full_state, what="streamed final state")


def test_streaming_with_lengths(backend):
    model = random_model(3, 4, block_size=3, stride=2, num_slots=1, num_heads=1, backend=backend)
    x = torch.randn(9, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([9, 4, 7])
    full_out, full_state = model(x, model.initial_state(3), lengths=lengths)
    out1, mid = model(x[:5], model.initial_state(3), lengths=lengths.clamp(max=5))
    out2, end = model(x[5:], mid, lengths=(lengths - 5).clamp(min=1))
    # element 1 had finished after 4 steps: its second call must not run it further
    keep = torch.tensor([True, False, True])
    assert_close(out1, full_out[:5], what="first chunk")
    assert_close(out2[:, keep], full_out[5:, keep], what="second chunk, running elements")
    for name in ("h", "c", "memory", "window", "ewindow"):
        assert_close(getattr(end, name)[:, keep], getattr(full_state, name)[:, keep], what=name)
    assert end.steps.tolist() == [9, 5, 7]


# ---- 3. Padding -------------------------------------------------------------------------------


def _padding_case(backend):
    model = random_model(3, 4, num_layers=2, block_size=4, stride=3, num_slots=2, num_heads=2, backend=backend)
    lengths = [7, 2, 5, 7]
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    start = random_state(model, 4, [0, 1, 5, 2])
    return model, x, lengths, start


def test_padding_equals_each_element_alone(backend):
    model, x, lengths, start = _padding_case(backend)
    x.requires_grad_(True)
    out, state = model(x, start, lengths=torch.tensor(lengths))
    grad_out = torch.randn_like(out)
    (gx,) = torch.autograd.grad((out * grad_out).sum() + state.memory.sum(), x)

    for b, n in enumerate(lengths):
        xb = x[:n, b:b + 1].detach().requires_grad_(True)
        sb = NRNMState(*(t[:, b:b + 1] for t in start[:5]), start.steps[b:b + 1])
        out_b, state_b = model(xb, sb)
        (gxb,) = torch.autograd.grad((out_b * grad_out[:n, b:b + 1]).sum() + state_b.memory.sum(), xb)
        assert_close(out[:n, b:b + 1], out_b, what=f"output of element {b}")
        assert_close(NRNMState(*(t[:, b:b + 1] for t in state[:5]), state.steps[b:b + 1]), state_b,
                     what=f"final state of element {b}")
        assert_close(gx[:n, b:b + 1], gxb, what=f"input gradient of element {b}")
        assert torch.all(out[n:, b] == 0), "padded output rows must be zero"
        assert torch.all(gx[n:, b] == 0), "padding must get no gradient"


def test_packed_sequence_equals_lengths(backend):
    model, x, lengths, start = _padding_case(backend)
    out, state = model(x, start, lengths=torch.tensor(lengths))
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    packed_out, packed_state = model(packed, start)
    assert torch.equal(packed_out.batch_sizes, packed.batch_sizes)
    assert torch.equal(packed_out.unsorted_indices, packed.unsorted_indices)
    padded, out_lengths = pad_packed_sequence(packed_out)
    assert out_lengths.tolist() == lengths
    assert_close(padded, out, what="packed output")
    assert_close(packed_state, state, what="final state")


def test_packed_sequence_like_nn_lstm(backend):
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, batch_first=True)
    model = NRNM.from_lstm(lstm, backend=backend, num_heads=1, block_size=2, stride=2)
    seqs = [torch.randn(n, 3) for n in (4, 6, 1)]
    packed = pack_sequence(seqs, enforce_sorted=False)
    out, (h, c) = model(packed)
    ref_out, (ref_h, ref_c) = lstm(packed)
    assert_close((out.data, h, c), (ref_out.data, ref_h, ref_c), rtol=1e-5, atol=1e-6, what="packed vs nn.LSTM")


# ---- 4. No memory update before the first stride ------------------------------------------------


def test_no_update_before_first_stride(backend):
    model = random_model(3, 4, block_size=5, stride=4, num_slots=2, num_heads=2, backend=backend)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    start = random_state(model, 2, [0, 0])
    out, state = model(x[:3], start)
    assert_close(state.memory, start.memory, rtol=0, atol=0, what="memory after s - 1 steps")

    # the memory-update weights change nothing up to and including step s (the update comes after it) ...
    other = random_model(3, 4, seed=1, block_size=5, stride=4, num_slots=2, num_heads=2, backend=backend)
    with torch.no_grad():
        for name, p in other.named_parameters():
            if name.startswith(("weight_", "bias_")):
                p.copy_(model.get_parameter(name))
    out_a, _ = model(x, start)
    out_b, _ = other(x, start)
    assert_close(out_a[:4], out_b[:4], what="outputs of steps 1..s")
    # ... and the step after the update sees the new memory
    assert (out_a[4] - out_b[4]).abs().max() > 1e-3


def test_update_only_at_multiples_of_stride_per_element(backend):
    model = random_model(3, 4, block_size=4, stride=3, num_slots=1, num_heads=2, backend=backend)
    x = torch.randn(1, 2, 3, dtype=torch.float64)
    start = random_state(model, 2, [2, 3])  # element 0 reaches tau = 3 now, element 1 tau = 4
    _, state = model(x, start)
    assert (state.memory[0, 0] - start.memory[0, 0]).abs().max() > 1e-3
    assert_close(state.memory[0, 1], start.memory[0, 1], rtol=0, atol=0, what="element 1 memory")
    assert state.steps.tolist() == [3, 4]
