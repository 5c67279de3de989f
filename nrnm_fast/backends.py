"""The one place that chooses which implementation runs an NRNM layer.

Every backend is a function with the signature of :func:`nrnm_fast.reference.nrnm_layer`:
``(x, lengths, state, weights, config) -> (output, state)``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Optional

import torch

from . import reference

LayerFunction = Callable[..., tuple]

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")

BUILD_HINT = "build it with `pip install --no-build-isolation -e .` (or `make test`) from the source tree"

# Backends named by the design whose implementation this build does not contain, and what they need.
_NOT_BUILT = {
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


def _load_cpu_extension() -> tuple[Optional[LayerFunction], str]:
    """(the C++ layer function, "") or (None, why it cannot be loaded)."""
    try:
        from . import cpu
    except ImportError as e:
        return None, f"the C++ extension nrnm_fast._C is not built ({e}); {BUILD_HINT}"
    return cpu.nrnm_layer, ""


# Resolved once at import, so that dispatch is plain Python that torch.compile traces.
CPU_LAYER, CPU_MISSING = _load_cpu_extension()


# The dtypes the C++ CPU path computes in; others run on the reference.
CPU_DTYPES = (torch.float32, torch.float64)


def available_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> list[str]:
    """Names of the backends that can run layers on ``device`` in ``dtype`` in this install, fastest last."""
    names = ["reference"]
    if torch.device(device).type == "cpu" and dtype in CPU_DTYPES and CPU_LAYER is not None:
        names.append("cpu")
    return names


@functools.lru_cache(maxsize=None)
def _warn_reference_fallback(device_type: str, why: str) -> None:
    warnings.warn(f"nrnm_fast: backend='auto' runs the slow reference on {device_type}: {why}", stacklevel=4)


def layer_function(backend: str, device: torch.device, dtype: torch.dtype) -> tuple[str, LayerFunction]:
    """Resolve ``backend`` for ``dtype`` tensors on ``device``: (name of the implementation, its layer function).

    ``"auto"`` picks the fastest available implementation for the device (and warns
    once when the device's fast path is missing); naming one that is not available
    raises RuntimeError saying what is missing.
    """
    check_backend_name(backend)
    device = torch.device(device)
    if backend == "auto":
        backend = available_backends(device, dtype)[-1]
        if backend == "reference" and device.type == "cpu" and dtype in CPU_DTYPES:
            _warn_reference_fallback("cpu", CPU_MISSING)
    if backend == "reference":
        return "reference", reference.nrnm_layer
    if backend == "cpu":
        if device.type != "cpu":
            raise RuntimeError(f"backend='cpu' runs on CPU tensors; got tensors on {device}")
        if CPU_LAYER is None:
            raise RuntimeError(f"backend='cpu' is not available: {CPU_MISSING}")
        if dtype not in CPU_DTYPES:
            raise TypeError(f"backend='cpu' computes in float32 or float64; got {dtype} (use backend='reference' "
                            f"or convert the model and input)")
        return "cpu", CPU_LAYER
    raise RuntimeError(
        f"backend={backend!r} needs {_NOT_BUILT[backend]}, which this build of nrnm_fast does not include; "
        f"available on {device.type}: {available_backends(device)}"
    )
