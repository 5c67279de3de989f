"""Time one layer, forward (inference) and forward+backward (training), per backend and for nn.LSTM,
and record the peak extra memory of one forward+backward (benchmarks/memory.py).

Run through ``python -m benchmarks`` for the ratio table, or directly with
``pytest benchmarks`` for pytest-benchmark's own report.
"""

from __future__ import annotations

import functools

import pytest
import torch

from benchmarks.memory import peak_extra_bytes
from benchmarks.paired import PAIRS, REFERENCE_PAIRS, paired_ratio
from benchmarks.shapes import IMPLS, LSTM, bench_threads, build_module, inputs, selected_shapes

ROUNDS = {"nrnm-reference": 3}  # the reference is slow and steady; everything else gets 10
FAST_IMPLS = [i for i in IMPLS if i not in (LSTM, "nrnm-reference")]


_cached_module = functools.lru_cache(maxsize=len(IMPLS))(build_module)


# Collected shape by shape, mode by mode, implementation by implementation (IMPLS' order): the
# times whose ratio the table reports are taken back to back; a fast path's paired ratio then
# alternates its calls with nn.LSTM's, and the reference's alternates with each fast path's.
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape", selected_shapes(), ids=lambda s: s.name)
def test_layer(benchmark, shape, impl, mode):
    module = _cached_module(impl, shape)
    x, grad_out = inputs(shape)

    def runner(m):
        def forward():
            with torch.no_grad():
                return m(x)

        def forward_backward():
            out, _ = m(x)
            out.backward(grad_out)

        return forward if mode == "fwd" else forward_backward

    benchmark.extra_info.update(device="cpu", shape=shape.name, impl=impl, mode=mode, threads=bench_threads(),
                                torch=torch.__version__)
    if mode == "fwd+bwd":
        benchmark.extra_info["peak_extra_bytes"] = peak_extra_bytes(impl, shape)
    run = runner(module)
    benchmark.pedantic(run, rounds=ROUNDS.get(impl, 10), iterations=1, warmup_rounds=1)
    if impl in FAST_IMPLS:
        benchmark.extra_info["paired_vs_lstm"] = paired_ratio(run, runner(_cached_module(LSTM, shape)), PAIRS)
    elif impl == "nrnm-reference":
        benchmark.extra_info["paired_over"] = {
            fast: paired_ratio(run, runner(_cached_module(fast, shape)), REFERENCE_PAIRS) for fast in FAST_IMPLS}
