"""Where the CPU path's time goes: its phases, as torch.profiler records them.

    python -m benchmarks.phases [--shapes NAME,...] [--threads N]

The C++ layer marks its phases with named scopes (``RECORD_USER_SCOPE("nrnm::<phase>")`` in
csrc/layer.cpp, csrc/weight_grad_rows.cpp, csrc/batch_shards.cpp and the CPU's loop_weight),
which cost next to nothing unless a profiler listens (a check of the thread's callbacks). This
module profiles one inference forward and one training step's backward of the ``"cpu"`` backend
per shape and prints, for each op call, the share of its thread time (the op's wall time times
the shards that ran it, one a thread) that each phase took, excluding the phases nested in it.
What no phase covers ("outside") is the op's set-up and a thread done with its shard waiting
for the others or running units of their GEMMs (csrc/shard_team.h). The
profiler's own cost per ATen call (about a microsecond) falls mostly on the memory updates,
which make the most calls.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Iterable

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.shapes import Shape, bench_threads, build_module, inputs, selected_shapes

# (scope name without "nrnm::", column title); forward and backward scopes share a column.
PHASES = (
    ("pack_weights", "pack weights"),
    ("input_product", "input product"),
    ("input_product_backward", "input product"),
    ("memory_term", "memory term"),
    ("memory_term_backward", "memory term"),
    ("steps", "steps"),
    ("steps_backward", "steps"),
    ("memory_update", "memory update"),
    ("memory_update_backward", "memory update"),
    ("weight_gradients", "weight gradients"),
    ("sum_shard_gradients", "sum of shards"),
)
COLUMNS = tuple(dict.fromkeys(title for _, title in PHASES))
PREFIX = "nrnm::"
OPS = {"fwd": "nrnm_fast::layer_forward", "bwd": "nrnm_fast::layer_backward"}


def _nearest_phases(event) -> Iterable:
    """The phase events nested in ``event`` with no other phase between them and it."""
    for child in event.cpu_children:
        if child.name.startswith(PREFIX):
            yield child
        else:
            yield from _nearest_phases(child)


def phase_times(events, op: str) -> dict[str, float]:
    """Microseconds per phase name (without "nrnm::") inside the calls of ``op``, summed over
    threads, nested phases excluded. The shards' threads record their phases apart from the
    op's, so a phase belongs to a call by its time."""
    calls = [e.time_range for e in events if e.name == op]
    times: dict[str, float] = {}
    for e in events:
        inside = any(c.start <= e.time_range.start and e.time_range.end <= c.end for c in calls)
        if inside and e.name.startswith(PREFIX):
            own = e.cpu_time_total - sum(n.cpu_time_total for n in _nearest_phases(e))
            name = e.name.removeprefix(PREFIX)
            times[name] = times.get(name, 0.0) + own
    return times


def profile_calls(shape: Shape, threads: int) -> dict[str, tuple[float, dict[str, float]]]:
    """For "fwd" (an inference forward) and "bwd" (a training step's backward): the op's wall
    time in us and its phase_times, one profiled call each after a warm-up call."""
    torch.set_num_threads(threads)
    module = build_module("nrnm-cpu", shape)
    x, g = inputs(shape)

    def forward():
        with torch.no_grad():
            module(x)

    def step():
        module(x)[0].backward(g)

    # Kineto (torch 2.13) prints two "USDT" lines per profile below log level 6; the user's level stands.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    result = {}
    for mode, call in (("fwd", forward), ("bwd", step)):
        call()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
        events = prof.events()
        wall = sum(e.cpu_time_total for e in events if e.name == OPS[mode])
        result[mode] = (wall, phase_times(events, OPS[mode]))
    return result


def phases_table(shapes: Iterable[Shape], threads: int) -> str:
    """The markdown table of profile_calls over ``shapes``."""
    lines = [f"Where the time goes: the CPU path's phases ({threads} threads, torch.profiler, one call each; "
             "% of the op's thread time: wall time x shards, nested phases excluded; benchmarks/phases.py)",
             "| shape | op | ms | " + " | ".join(COLUMNS) + " | outside |",
             "|---|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for shape in shapes:
        shards = min(threads, shape.B)
        for mode, (wall, times) in profile_calls(shape, threads).items():
            thread_time = wall * shards
            share = dict.fromkeys(COLUMNS, 0.0)
            for name, title in PHASES:
                share[title] += 100 * times.get(name, 0.0) / thread_time
            cells = [f"{share[c]:.1f}" if share[c] else "-" for c in COLUMNS]
            lines.append(f"| {shape.name} | {mode} | {wall / 1e3:.1f} | " + " | ".join(cells)
                         + f" | {100 - sum(share.values()):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.phases", description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", help="comma-separated shape names (default: all registered)")
    parser.add_argument("--threads", type=int, help="torch threads (default: every core)")
    args = parser.parse_args(argv)
    if args.shapes:
        os.environ["NRNM_BENCH_SHAPES"] = args.shapes
    print(phases_table(selected_shapes(), args.threads or bench_threads()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
