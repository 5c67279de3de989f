"""Time streaming: one step per call (T = 1) of a batch of one, carrying the state from call
to call without a gradient, as online inference runs a recurrent layer. nn.LSTM carries
(h, c), NRNM its full NRNMState. A round streams STREAM_STEPS steps from the zero state, so
it holds STREAM_STEPS / stride memory updates; the table reports the median round over
STREAM_STEPS.

At one row per product every call is mostly fixed cost (argument checks, the dispatch, the
op's small tensors) and the weights' reads: this is where that cost shows.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.shapes import IMPLS, LSTM, STREAM_SHAPES, STREAM_STEPS, bench_threads, build_module, inputs

ROUNDS = {"nrnm-reference": 3}  # everything else gets 10


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", STREAM_SHAPES, ids=lambda s: s.name)
def test_streamed_steps(benchmark, shape, impl):
    module = build_module(impl, shape)
    steps = inputs(shape._replace(T=STREAM_STEPS))[0].split(1)  # STREAM_STEPS inputs (1, B, D)

    def stream():
        with torch.no_grad():
            state = None if impl == LSTM else module.initial_state(shape.B)
            for x in steps:
                _, state = module(x, state)

    benchmark.extra_info.update(device="cpu", shape=shape.name, impl=impl, mode="streamed", steps=STREAM_STEPS,
                                threads=bench_threads(), torch=torch.__version__)
    benchmark.pedantic(stream, rounds=ROUNDS.get(impl, 10), iterations=1, warmup_rounds=1)
