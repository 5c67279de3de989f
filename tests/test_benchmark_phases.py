"""The phase breakdown of the CPU path (benchmarks/phases.py): the C++ layer's named scopes as
torch.profiler records them, and the arithmetic of the table over them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks.phases import COLUMNS, phase_times, phases_table, profile_calls
from benchmarks.shapes import Shape
from nrnm_fast import available_backends

FORWARD = {"input_product", "memory_term", "steps", "memory_update"}
BACKWARD = {"input_product_backward", "memory_term_backward", "steps_backward", "memory_update_backward",
            "weight_gradients"}


def _event(name, start, end, children=()):
    return SimpleNamespace(name=name, cpu_time_total=end - start, time_range=SimpleNamespace(start=start, end=end),
                           cpu_children=list(children))


def test_phase_times_exclude_nested_phases_and_other_calls():
    """A phase's own time leaves out the phases inside it (also under an ATen op), not other ops;
    phases outside the op's calls (another op, or the forward of a training step) do not count."""
    weights = _event("nrnm::weight_gradients", 30, 45)
    mm = _event("aten::mm", 20, 50, [weights])
    update = _event("nrnm::memory_update_backward", 10, 60, [mm])
    worker_steps = _event("nrnm::steps_backward", 15, 55)  # another thread's: no parent
    op = _event("nrnm_fast::layer_backward", 0, 100, [update])
    earlier = _event("nrnm::steps", -50, -10)  # the forward's, before the backward op
    events = [earlier, op, update, mm, weights, worker_steps]
    assert phase_times(events, "nrnm_fast::layer_backward") == {
        "memory_update_backward": 50 - 15, "weight_gradients": 15, "steps_backward": 40}


@pytest.mark.skipif("cpu" not in available_backends(), reason="C++ extension not built")
@pytest.mark.parametrize("threads", [1, 2])
def test_profiled_calls_report_their_phases(threads):
    """T not a multiple of the stride, batch 3 (shards of 2 and 1 on two threads)."""
    calls = profile_calls(Shape(T=19, B=3, D=5, H=8), threads)
    shards = min(threads, 3)
    for mode, phases in (("fwd", FORWARD), ("bwd", BACKWARD)):
        wall, times = calls[mode]
        assert wall > 0
        assert phases <= {name for name, t in times.items() if t > 0}, (mode, times)
        assert not (FORWARD | BACKWARD) - phases & times.keys(), (mode, times)
        # Each thread's phases lie inside the op's wall time, nested ones counted once.
        assert sum(times.values()) <= wall * shards * 1.01


@pytest.mark.skipif("cpu" not in available_backends(), reason="C++ extension not built")
def test_phases_table_rows():
    lines = phases_table([Shape(T=9, B=2, D=4, H=8)], threads=1).splitlines()
    assert len(lines) == 5
    header = [c.strip() for c in lines[1].strip("|").split("|")]
    assert header == ["shape", "op", "ms", *COLUMNS, "outside"]
    for line, op in zip(lines[3:], ("fwd", "bwd")):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:2] == ["T9-B2-D4-H8", op]
        shares = [float(c) for c in cells[3:] if c != "-"]
        # each cell rounded to 0.1, "outside" the rest of 100 before rounding
        assert abs(sum(shares) - 100) <= 0.05 * len(shares) + 1e-9 and all(s >= 0 for s in shares[:-1])
