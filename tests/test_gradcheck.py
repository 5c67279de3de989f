"""Analytic gradients of the reference against finite differences (float64, tiny shapes)."""

from __future__ import annotations

import torch
from torch.autograd import gradcheck

from helpers import random_model, random_state
from nrnm_fast import NRNMState


def _case(backend):
    # k = 3, s = 2: one element starts mid-sequence with a part-valid window, one has a padded tail
    model = random_model(2, 4, num_layers=2, block_size=3, stride=2, num_slots=2, num_heads=2, mlp_size=3,
                         backend=backend)
    x = torch.randn(5, 2, 2, dtype=torch.float64)
    start = random_state(model, 2, [0, 2])
    lengths = torch.tensor([5, 4])
    return model, x, start, lengths


def _outputs(model, x, state, lengths):
    out, new = model(x, state, lengths=lengths)
    return out, new.h, new.c, new.memory, new.window, new.ewindow


def test_gradcheck_input_and_state(backend):
    model, x, start, lengths = _case(backend)

    def f(x, h, c, memory, window, ewindow):
        return _outputs(model, x, NRNMState(h, c, memory, window, ewindow, start.steps), lengths)

    inputs = [t.clone().requires_grad_(True) for t in (x, *start[:5])]
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_parameters(backend):
    model, x, start, lengths = _case(backend)
    names = [n for n, _ in model.named_parameters()]

    def f(*params):
        out, new = torch.func.functional_call(model, dict(zip(names, params)), (x, start), {"lengths": lengths})
        return out, new.h, new.c, new.memory

    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    assert gradcheck(f, params, eps=1e-6, atol=1e-7, rtol=1e-5)
