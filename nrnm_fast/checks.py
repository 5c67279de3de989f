"""Argument checks at the Python boundary: every bad input gets a TypeError or ValueError naming it."""

from __future__ import annotations

import numbers
from typing import Optional, Sequence

import torch
from torch import Tensor


def positive_int(name: str, value: object) -> int:
    """``value`` if it is an int >= 1 (or a symbolic one: a traced size, checked when the graph runs)."""
    if isinstance(value, torch.SymInt):
        torch._check(value >= 1, lambda: f"{name} must be an int >= 1; got {value}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= 1; got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value}")
    return int(value)


def boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool; got {type(value).__name__} {value!r}")
    return value


def probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1]; got {type(value).__name__} {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a float in [0, 1]; got {value}")
    return float(value)


def float_tensor(name: str, value: object, shape: Sequence[int], like: Tensor, layout: str) -> Tensor:
    """``value`` if it is a tensor of exactly ``shape`` with the dtype and device of ``like``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a Tensor of shape {layout} = {tuple(shape)}; got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {layout} = {tuple(shape)}; got {tuple(value.shape)}")
    if value.dtype != like.dtype:
        raise TypeError(f"{name} must have the input's dtype {like.dtype}; got {value.dtype}")
    if value.device != like.device:
        raise ValueError(f"{name} must be on the input's device {like.device}; got {value.device}")
    return value


def _values_readable(t: Tensor) -> bool:
    """Whether value checks may read ``t``: a compiled graph leaves them to the ops (the C++ op
    checks them too), and meta tensors (shape inference) hold no values."""
    return not torch.compiler.is_compiling() and not t.is_meta


def steps_tensor(name: str, value: object, batch: int, device: torch.device) -> Tensor:
    """``value`` if it is a (B,) int64 tensor of non-negative step counts on ``device``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be an int64 Tensor of shape (B,) = ({batch},); got {type(value).__name__}")
    if value.dtype != torch.int64:
        raise TypeError(f"{name} must have dtype torch.int64; got {value.dtype}")
    if tuple(value.shape) != (batch,):
        raise ValueError(f"{name} must have shape (B,) = ({batch},); got {tuple(value.shape)}")
    if value.device != device:
        raise ValueError(f"{name} must be on the input's device {device}; got {value.device}")
    if _values_readable(value):
        lowest = int(value.min())  # one reduction: a streamed step calls this every time
        if lowest < 0:
            raise ValueError(f"{name} must be >= 0 (steps consumed so far); got min {lowest}")
    return value


def lengths_tensor(value: object, T: int, B: int, device: torch.device) -> Optional[Tensor]:
    """``lengths`` as a (B,) int64 tensor on ``device`` with values in 1..T, or None."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise TypeError(f"lengths must hold integers; got dtype {value.dtype}")
        if value.device.type != "cpu" and value.device != device:
            raise ValueError(f"lengths must be on the CPU or on the input's device {device}; got {value.device}")
    elif isinstance(value, (list, tuple)) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
    ):
        value = torch.tensor(value, dtype=torch.int64)
    else:
        raise TypeError(f"lengths must be a 1-D integer Tensor or a list of ints; got {type(value).__name__}")
    if tuple(value.shape) != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},); got {tuple(value.shape)}")
    if _values_readable(value):
        lo, hi = int(value.min()), int(value.max())
        if lo < 1 or hi > T:
            raise ValueError(f"lengths must lie in 1..T = 1..{T}; got values in {lo}..{hi}")
    return value.to(device=device, dtype=torch.int64)
