"""Every bad argument gets a TypeError or ValueError that names it and says what was expected."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

from nrnm_fast import NRNM, NRNMState


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(input_size=0), ValueError, "input_size must be an int >= 1; got 0"),
        (dict(hidden_size=-4), ValueError, "hidden_size must be an int >= 1"),
        (dict(hidden_size=8.0), TypeError, "hidden_size must be an int"),
        (dict(num_layers=0), ValueError, "num_layers must be an int >= 1"),
        (dict(block_size=0), ValueError, "block_size must be an int >= 1"),
        (dict(stride=0), ValueError, "stride must be an int >= 1"),
        (dict(stride=9), ValueError, r"stride must be <= block_size = 8"),
        (dict(num_slots=0), ValueError, "num_slots must be an int >= 1"),
        (dict(num_heads=0), ValueError, "num_heads must be an int >= 1"),
        (dict(num_heads=3), ValueError, "hidden_size = 8 must be divisible by num_heads = 3"),
        (dict(mlp_size=0), ValueError, "mlp_size must be an int >= 1"),
        (dict(dropout=1.5), ValueError, r"dropout must be a float in \[0, 1\]"),
        (dict(dropout="0.1"), TypeError, "dropout must be a float"),
        (dict(bias=1), TypeError, "bias must be a bool"),
        (dict(batch_first=None), TypeError, "batch_first must be a bool"),
        (dict(backend="gpu"), ValueError, "backend must be one of"),
        (dict(backend=None), TypeError, "backend must be a str"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    args = dict(input_size=3, hidden_size=8)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        NRNM(**args)


@pytest.fixture
def model():
    return NRNM(3, 4, num_layers=2, num_heads=2, block_size=3, stride=2)


X = torch.randn(5, 2, 3)


@pytest.mark.parametrize(
    "x, error, match",
    [
        (torch.randn(5, 3), ValueError, r"input must be 3-D \(T, B, D\); got 2-D"),
        (torch.randn(5, 2, 3, 1), ValueError, "input must be 3-D"),
        (torch.randn(5, 2, 4), ValueError, "input must have input_size = 3 features.*got 4"),
        (torch.ones(5, 2, 3, dtype=torch.int64), TypeError, "input must be a floating-point tensor; got dtype torch.int64"),
        (torch.ones(5, 2, 3, dtype=torch.complex64), TypeError, "input must be a floating-point tensor"),
        (torch.randn(5, 2, 3, dtype=torch.float64), TypeError, "input has dtype torch.float64 but the parameters"),
        (torch.randn(0, 2, 3), ValueError, "at least one step and one sequence; got T=0"),
        (torch.randn(5, 0, 3), ValueError, "at least one step and one sequence; got T=5, B=0"),
        ([[1.0, 2.0, 3.0]], TypeError, "input must be a Tensor or a PackedSequence; got list"),
    ],
)
def test_bad_input(model, x, error, match):
    with pytest.raises(error, match=match):
        model(x)


def test_input_on_another_device(model):
    with pytest.raises(ValueError, match="input is on meta but the parameters are on cpu"):
        model(torch.randn(5, 2, 3, device="meta"))


def test_batch_first_layout_in_message():
    with pytest.raises(ValueError, match=r"\(B, T, D\)"):
        NRNM(3, 4, num_heads=2, batch_first=True)(torch.randn(5, 3))


@pytest.mark.parametrize(
    "lengths, error, match",
    [
        (torch.tensor([5, 4, 3]), ValueError, r"lengths must have shape \(B,\) = \(2,\); got \(3,\)"),
        (torch.tensor([[5, 4]]), ValueError, r"lengths must have shape \(B,\)"),
        (torch.tensor([5, 0]), ValueError, r"lengths must lie in 1..T = 1..5; got values in 0..5"),
        (torch.tensor([6, 2]), ValueError, r"lengths must lie in 1..T = 1..5; got values in 2..6"),
        (torch.tensor([5.0, 2.0]), TypeError, "lengths must hold integers; got dtype torch.float32"),
        (torch.tensor([True, True]), TypeError, "lengths must hold integers"),
        (torch.tensor([5, 2], device="meta"), ValueError, "lengths must be on the CPU or on the input's device"),
        ("5,2", TypeError, "lengths must be a 1-D integer Tensor or a list of ints; got str"),
        ([5, 2.5], TypeError, "lengths must be a 1-D integer Tensor or a list of ints"),
    ],
)
def test_bad_lengths(model, lengths, error, match):
    with pytest.raises(error, match=match):
        model(X, lengths=lengths)


def test_lengths_as_list_is_accepted(model):
    out, _ = model(X, lengths=[5, 2])
    assert torch.all(out[2:, 1] == 0) and out[1, 1].abs().sum() > 0


def test_lengths_with_packed_sequence(model):
    packed = pack_sequence([torch.randn(3, 3), torch.randn(2, 3)])
    with pytest.raises(ValueError, match="lengths must be None when input is a PackedSequence"):
        model(packed, lengths=torch.tensor([3, 2]))
    with pytest.raises(ValueError, match=r"input.data must have input_size = 3"):
        model(pack_sequence([torch.randn(3, 4)]))


@pytest.mark.parametrize(
    "state, error, match",
    [
        ((torch.zeros(2, 2, 4),), TypeError, "state must be None, a tuple \\(h0, c0\\) or an NRNMState; got tuple of length 1"),
        (torch.zeros(2, 2, 4), TypeError, "state must be None, a tuple .* got Tensor"),
        ((torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)), ValueError,
         r"state\[0\] \(h0\) must have shape \(L, B, H\) = \(2, 2, 4\); got \(1, 2, 4\)"),
        ((torch.zeros(2, 2, 4), torch.zeros(2, 4)), ValueError, r"state\[1\] \(c0\) must have shape"),
        ((torch.zeros(2, 2, 4), torch.zeros(2, 2, 4, dtype=torch.float64)), TypeError,
         r"state\[1\] \(c0\) must have the input's dtype torch.float32; got torch.float64"),
        ((torch.zeros(2, 2, 4), torch.zeros(2, 2, 4, device="meta")), ValueError,
         r"state\[1\] \(c0\) must be on the input's device cpu"),
        ((torch.zeros(2, 2, 4), [0.0]), TypeError, r"state\[1\] \(c0\) must be a Tensor"),
    ],
)
def test_bad_tuple_state(model, state, error, match):
    with pytest.raises(error, match=match):
        model(X, state)


@pytest.mark.parametrize(
    "field, value, error, match",
    [
        ("h", torch.zeros(2, 3, 4), ValueError, r"state.h must have shape \(L, B, H\) = \(2, 2, 4\); got \(2, 3, 4\)"),
        ("memory", torch.zeros(2, 2, 4), ValueError, r"state.memory must have shape \(L, B, N, H\) = \(2, 2, 2, 4\)"),
        ("window", torch.zeros(2, 2, 4, 4), ValueError, r"state.window must have shape \(L, B, k, H\) = \(2, 2, 3, 4\)"),
        ("ewindow", torch.zeros(2, 2, 3, 4, dtype=torch.float64), TypeError, "state.ewindow must have the input's dtype"),
        ("steps", torch.zeros(2, dtype=torch.int32), TypeError, "state.steps must have dtype torch.int64"),
        ("steps", torch.zeros(3, dtype=torch.int64), ValueError, r"state.steps must have shape \(B,\) = \(2,\)"),
        ("steps", torch.tensor([0, -1]), ValueError, "state.steps must be >= 0"),
        ("steps", [0, 0], TypeError, "state.steps must be an int64 Tensor"),
    ],
)
def test_bad_nrnm_state(model, field, value, error, match):
    state = model.initial_state(2)._replace(**{field: value})
    with pytest.raises(error, match=match):
        model(X, state)


def test_initial_state_bad_batch(model):
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        model.initial_state(0)


def test_from_lstm_bad_arguments():
    with pytest.raises(TypeError, match="lstm must be a torch.nn.LSTM; got GRU"):
        NRNM.from_lstm(torch.nn.GRU(3, 4))
    with pytest.raises(ValueError, match="lstm must be unidirectional"):
        NRNM.from_lstm(torch.nn.LSTM(3, 4, bidirectional=True))
    with pytest.raises(ValueError, match="hidden_size = 4 must be divisible by num_heads = 3"):
        NRNM.from_lstm(torch.nn.LSTM(3, 4), num_heads=3)


def test_state_is_not_broadcast(model):
    state = model.initial_state(1)
    with pytest.raises(ValueError, match=r"state.h must have shape \(L, B, H\) = \(2, 2, 4\); got \(2, 1, 4\)"):
        model(X, state)
    assert isinstance(state, NRNMState)
