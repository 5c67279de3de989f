"""The one place that chooses which implementation runs an NRNM layer.

Every backend is a function with the signature of :func:`nrnm_fast.reference.nrnm_layer`:
``(x, lengths, state, weights, config) -> (output, state)``.

- ``"reference"``: :mod:`nrnm_fast.reference`, any device and dtype.
- ``"cpu"``: the C++ layer op with its CPU kernels (float32, float64).
- ``"cuda"``: the same op with its CUDA kernels and the memory update's attention in Triton.
- ``"triton"``: the op with the Triton attention on either device; on CPU tensors the Triton
  kernels run in Triton's interpreter (``TRITON_INTERPRET=1``), which is how they are tested
  without a GPU. On CUDA tensors it is the ``"cuda"`` path.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from typing import Callable, Optional

import torch

from . import reference

LayerFunction = Callable[..., tuple]

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")

BUILD_HINT = "build it with `pip install --no-build-isolation -e .` (or `make test`) from the source tree"

# The dtypes each fast path computes in; others run on the reference.
CPU_DTYPES = (torch.float32, torch.float64)
CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_backend_name(backend: object) -> str:
    """Return ``backend`` if it names a backend, else raise TypeError / ValueError."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, one of {BACKENDS}; got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    return backend


def _load_layer_ops():
    """(the module nrnm_fast.layer_ops, "") or (None, why it cannot be loaded)."""
    try:
        from . import layer_ops
    except ImportError as e:
        return None, f"the C++ extension nrnm_fast._C is not built ({e}); {BUILD_HINT}"
    return layer_ops, ""


# Resolved once at import, so that dispatch is plain Python that torch.compile traces.
LAYER_OPS, EXTENSION_MISSING = _load_layer_ops()
CUDA_BUILT = LAYER_OPS is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
    "nrnm_fast::layer_forward", "CUDA")
TRITON_FOUND = importlib.util.find_spec("triton") is not None


def _missing(backend: str, device: torch.device) -> str:
    """Why ``backend`` cannot run layers on ``device`` in this install, or "" if it can."""
    if LAYER_OPS is None:
        return EXTENSION_MISSING
    if backend == "cpu":
        return "" if device.type == "cpu" else f"it runs on CPU tensors; got tensors on {device}"
    if device.type not in ("cpu", "cuda"):
        return f"it runs on CPU or CUDA tensors; got tensors on {device}"
    if not TRITON_FOUND:
        return "it needs the triton package (`pip install triton`; torch's CUDA wheels bring it)"
    if device.type == "cpu":
        if backend == "cuda":
            return f"it runs on CUDA tensors; got tensors on {device}"
        if os.environ.get("TRITON_INTERPRET") != "1":
            return "on CPU tensors the Triton kernels run in Triton's interpreter: set TRITON_INTERPRET=1 before " \
                   "importing triton"
        return ""
    if not CUDA_BUILT:
        return "this build of the C++ extension has no CUDA kernels: build it with a CUDA torch and nvcc " \
               "(`pip install --no-build-isolation -e .`)"
    return ""


def _dtypes(device: torch.device) -> tuple:
    return CUDA_DTYPES if device.type == "cuda" else CPU_DTYPES


def available_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> list[str]:
    """Names of the backends that can run layers on ``device`` in ``dtype`` in this install, fastest last."""
    device = torch.device(device)
    candidates = ("triton", "cpu") if device.type == "cpu" else ("triton", "cuda")
    return ["reference"] + [name for name in candidates
                            if not _missing(name, device) and dtype in _dtypes(device)]


@functools.lru_cache(maxsize=None)
def _warn_reference_fallback(device_type: str, why: str) -> None:
    warnings.warn(f"nrnm_fast: backend='auto' runs the slow reference on {device_type}: {why}", stacklevel=4)


def layer_function(backend: str, device: torch.device, dtype: torch.dtype) -> tuple[str, LayerFunction]:
    """Resolve ``backend`` for ``dtype`` tensors on ``device``: (name of the implementation, its layer function).

    ``"auto"`` picks the fastest available implementation for the device (and warns
    once when the device's fast path is missing); naming one that cannot run raises
    RuntimeError saying what is missing, or TypeError for a dtype it does not compute in.
    """
    check_backend_name(backend)
    device = torch.device(device)
    if backend == "auto":
        backend = available_backends(device, dtype)[-1]
        if backend == "reference" and device.type in ("cpu", "cuda") and dtype in _dtypes(device):
            _warn_reference_fallback(device.type, _missing(device.type, device))
    if backend == "reference":
        return "reference", reference.nrnm_layer
    why = _missing(backend, device)
    if why:
        raise RuntimeError(f"backend={backend!r} is not available: {why}")
    dtypes = _dtypes(device)
    if dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"backend={backend!r} computes in {names} on {device.type}; got {dtype} (use "
                        f"backend='reference' or convert the model and input)")
    if backend == "cpu":
        return "cpu", LAYER_OPS.cpu_layer
    from . import triton_attention  # imported here: it imports triton, and registers the kernels the C++ layer calls

    return backend, triton_attention.triton_layer
