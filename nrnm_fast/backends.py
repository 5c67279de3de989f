"""The one place that chooses which implementation runs an NRNM layer.

Every backend is a function with the signature of :func:`nrnm_fast.reference.nrnm_layer`:
``(x, lengths, state, weights, config) -> (output, state)``.
"""

from __future__ import annotations

from typing import Callable

import torch

from . import reference

LayerFunction = Callable[..., tuple]

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")

# Backends named by the design whose implementation this build does not contain, and what they need.
_NOT_BUILT = {
    "cpu": "the C++ extension nrnm_fast._C (CPU fast path)",
    "cuda": "the CUDA extension and Triton kernels (GPU fast path)",
    "triton": "the Triton attention kernels nrnm_fast.kernels",
}


def check_backend_name(backend: object) -> str:
    """Return ``backend`` if it names a backend, else raise TypeError / ValueError."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, one of {BACKENDS}; got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    return backend


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Names of the backends that can run layers on ``device`` in this install, fastest last."""
    return ["reference"]


def layer_function(backend: str, device: torch.device) -> tuple[str, LayerFunction]:
    """Resolve ``backend`` for tensors on ``device``: (name of the implementation, its layer function).

    ``"auto"`` picks the fastest available implementation for the device;
    naming one that is not available raises RuntimeError saying what is missing.
    """
    check_backend_name(backend)
    if backend == "auto":
        backend = available_backends(device)[-1]
    if backend == "reference":
        return "reference", reference.nrnm_layer
    raise RuntimeError(
        f"backend={backend!r} needs {_NOT_BUILT[backend]}, which this build of nrnm_fast does not include; "
        f"available on {torch.device(device).type}: {available_backends(device)}"
    )
