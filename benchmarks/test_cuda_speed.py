"""Time one layer on a CUDA device, forward and forward+backward, for nn.LSTM (cuDNN) and every NRNM
backend there, and record the peak extra GPU memory of one forward+backward. Skipped without a GPU.

docs/gpu.md predicts these times (benchmarks/roofline.py): compare the first GPU run with it.
"""

from __future__ import annotations

import functools

import pytest
import torch

from benchmarks.shapes import CUDA_IMPLS, build_module, inputs, selected_shapes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ROUNDS = {"nrnm-reference": 3}  # the per-step reference is slow; everything else gets 20

_cached_module = functools.lru_cache(maxsize=2)(build_module)


def _peak_extra_bytes(run) -> int:
    """Peak GPU memory allocated by one call of ``run`` above what was allocated before it."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


@pytest.mark.parametrize("impl", CUDA_IMPLS)  # in this order: as benchmarks/test_layer_speed.py
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape", selected_shapes(), ids=lambda s: s.name)
def test_layer_cuda(benchmark, shape, impl, mode):
    module = _cached_module(impl, shape, "cuda")
    x, grad_out = inputs(shape, "cuda")

    def forward():
        with torch.no_grad():
            module(x)
        torch.cuda.synchronize()

    def forward_backward():
        out, _ = module(x)
        out.backward(grad_out)
        torch.cuda.synchronize()

    run = forward if mode == "fwd" else forward_backward
    benchmark.extra_info.update(device="cuda", gpu=torch.cuda.get_device_name(), shape=shape.name, impl=impl,
                                mode=mode, torch=torch.__version__)
    if mode == "fwd+bwd":
        run()  # warm-up: allocator, cuBLAS handles, Triton compiles
        benchmark.extra_info["peak_extra_bytes"] = _peak_extra_bytes(run)
    benchmark.pedantic(run, rounds=ROUNDS.get(impl, 20), iterations=1, warmup_rounds=2)
