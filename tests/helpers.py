"""Shared test helpers: models with every parameter random, random states, comparisons."""

from __future__ import annotations

import contextlib

import torch

from nrnm_fast import NRNM, NRNMState


@contextlib.contextmanager
def torch_threads(threads: int):
    """torch's CPU thread count set to ``threads`` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def random_model(input_size: int, hidden_size: int, *, seed: int = 0, dtype=torch.float64, **kwargs) -> NRNM:
    """An NRNM whose parameters are all random, so that no zero/one init hides a wrong term."""
    torch.manual_seed(seed)
    model = NRNM(input_size, hidden_size, dtype=dtype, **kwargs)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("norm1_weight", "norm2_weight")):
                p.uniform_(0.5, 1.5)
            else:
                p.uniform_(-0.6, 0.6)
    return model


def random_state(model: NRNM, batch: int, steps, *, seed: int = 1) -> NRNMState:
    """A random NRNMState with the given per-element ``steps`` (list of ints)."""
    g = torch.Generator().manual_seed(seed)
    zero = model.initial_state(batch)
    rand = [torch.randn(t.shape, generator=g, dtype=t.dtype) * 0.5 for t in zero[:5]]
    return NRNMState(*rand, torch.tensor(steps, dtype=torch.int64))


def assert_close(actual, expected, *, rtol=1e-10, atol=1e-12, what=""):
    """Compare tensors or (nested) tuples of tensors; ``what`` names the quantity in a failure."""
    if isinstance(expected, (tuple, list)):
        assert len(actual) == len(expected), what
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, rtol=rtol, atol=atol, what=f"{what}[{i}]")
        return
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")
