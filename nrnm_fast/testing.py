"""Helpers for comparing NRNM implementations: every output and every gradient of one run.

Used by the test suite and by the benchmark's numerics table, so that both
compare the same quantities.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .module import NRNM
from .state import NRNMState


def outputs_and_grads(
    model: NRNM, x: Tensor, state: NRNMState, lengths: Optional[Tensor] = None, *, seed: int = 0,
    input_grad: bool = True,
) -> dict[str, Tensor]:
    """Run ``model`` once and backpropagate random upstream gradients from every output.

    Args:
        model: the module to run (its backend decides the implementation).
        x: (T, B, D) input (or (B, T, D) if ``model.batch_first``).
        state: the initial :class:`NRNMState`.
        lengths: optional (B,) valid steps per element.
        seed: seeds the upstream gradients, so two runs get the same ones.
        input_grad: whether ``x`` requires a gradient (as a model's data input usually does not).

    Returns:
        name -> tensor: ``output``, every final-state field (``state.h``, ...), and
        ``grad.<name>`` for the input (if ``input_grad``), every floating initial-state field
        and every parameter.
    """
    x = x.detach().clone().requires_grad_(input_grad)
    state_in = NRNMState(*(t.detach().clone().requires_grad_(True) for t in state[:5]), state.steps.clone())
    out, final = model(x, state_in, lengths=lengths)

    results = {"output": out.detach()}
    results.update({f"state.{name}": t.detach() for name, t in final._asdict().items()})
    differentiable = [out, *final[:5]]
    gen = torch.Generator().manual_seed(seed)
    # drawn in float64 and cast, so runs in different dtypes get the same upstream gradients
    upstream = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t) for t in differentiable]
    params = dict(model.named_parameters())
    inputs = {"input": x} if input_grad else {}
    wrt = {**inputs, **{f"state.{n}": t for n, t in zip(NRNMState._fields, state_in[:5])}, **params}
    grads = torch.autograd.grad(differentiable, list(wrt.values()), upstream, allow_unused=True)
    for name, t, g in zip(wrt, wrt.values(), grads):
        results[f"grad.{name}"] = torch.zeros_like(t) if g is None else g
    return results


def max_relative_error(actual: Tensor, expected: Tensor) -> float:
    """max |actual - expected| / max |expected|, in float64: one scale-aware number per tensor.

    Integer tensors (``state.steps``) give 0 when equal and inf otherwise.
    """
    if not expected.dtype.is_floating_point:
        return 0.0 if torch.equal(actual.cpu(), expected.cpu()) else float("inf")
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if e.numel() == 0:
        return 0.0
    return float((a - e).abs().max() / e.abs().max().clamp_min(torch.finfo(torch.float64).tiny))
