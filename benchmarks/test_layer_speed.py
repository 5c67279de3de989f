"""Time one layer, forward (inference) and forward+backward (training), per backend and for nn.LSTM.

Run through ``python -m benchmarks`` for the ratio table, or directly with
``pytest benchmarks`` for pytest-benchmark's own report.
"""

from __future__ import annotations

import functools

import pytest
import torch

from benchmarks.shapes import MEMORY, Shape, bench_threads, selected_shapes
from nrnm_fast import NRNM, available_backends

LSTM = "nn.LSTM"
IMPLS = [LSTM, *(f"nrnm-{b}" for b in available_backends("cpu"))]
ROUNDS = {"nrnm-reference": 3}  # the reference is slow and steady; everything else gets 10


@functools.lru_cache(maxsize=2)
def _module(impl: str, shape: Shape) -> torch.nn.Module:
    torch.manual_seed(0)
    if impl == LSTM:
        return torch.nn.LSTM(shape.D, shape.H)
    return NRNM(shape.D, shape.H, backend=impl.removeprefix("nrnm-"), **MEMORY)


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", selected_shapes(), ids=lambda s: s.name)
def test_layer(benchmark, shape, impl, mode):
    module = _module(impl, shape)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape.T, shape.B, shape.D, generator=gen)
    grad_out = torch.randn(shape.T, shape.B, shape.H, generator=gen)

    def forward():
        with torch.no_grad():
            return module(x)

    def forward_backward():
        out, _ = module(x)
        out.backward(grad_out)

    benchmark.extra_info.update(shape=shape.name, impl=impl, mode=mode, threads=bench_threads(),
                                torch=torch.__version__)
    run = forward if mode == "fwd" else forward_backward
    benchmark.pedantic(run, rounds=ROUNDS.get(impl, 10), iterations=1, warmup_rounds=1)
