"""Registry of the benchmark shapes (one layer at T steps, B sequences, D inputs, H hidden) and implementations."""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

from nrnm_fast import NRNM, available_backends

# The memory hyper-parameters every registered shape uses.
MEMORY = dict(block_size=8, stride=4, num_slots=2, num_heads=4)


class Shape(NamedTuple):
    T: int
    B: int
    D: int
    H: int

    @property
    def name(self) -> str:
        return f"T{self.T}-B{self.B}-D{self.D}-H{self.H}"


SHAPES = [Shape(256, 32, 128, 128), Shape(512, 16, 256, 256), Shape(1024, 8, 128, 128), Shape(128, 64, 512, 512)]
DEFAULT = SHAPES[0]  # the numerics table's shape

# Streaming (benchmarks/test_streaming_speed.py): one step per call of a batch of one, T = 1,
# for STREAM_STEPS calls a round.
STREAM_SHAPES = [Shape(1, 1, 128, 128), Shape(1, 1, 512, 512)]
STREAM_STEPS = 64


def selected_shapes() -> list[Shape]:
    """SHAPES, or those named in $NRNM_BENCH_SHAPES (comma-separated, e.g. T256-B32-D128-H128)."""
    names = os.environ.get("NRNM_BENCH_SHAPES")
    if not names:
        return SHAPES
    by_name = {s.name: s for s in SHAPES}
    unknown = [n for n in names.split(",") if n not in by_name]
    if unknown:
        raise ValueError(f"NRNM_BENCH_SHAPES names unknown shapes {unknown}; known: {list(by_name)}")
    return [by_name[n] for n in names.split(",")]


def bench_threads() -> int:
    """Threads the benchmarks run with: $NRNM_BENCH_THREADS, default every core."""
    return int(os.environ.get("NRNM_BENCH_THREADS", os.cpu_count() or 1))


LSTM = "nn.LSTM"


def _impls(device: str, skip: str) -> list[str]:
    """nn.LSTM, the fast backends, then the reference: in each shape and mode the implementations
    whose ratio the table reports are timed back to back, before the reference's long run leaves
    the process (its heap, its caches) in another state."""
    backends = [b for b in available_backends(device) if b != skip]
    return [LSTM, *(f"nrnm-{b}" for b in sorted(backends, key=lambda b: b == "reference"))]


# What runs on each device: nn.LSTM (oneDNN on CPU, cuDNN on CUDA) and every NRNM backend there, except
# the Triton interpreter on CPU (a correctness tool) and "triton" on CUDA (the "cuda" path itself).
IMPLS = _impls("cpu", skip="triton")
CUDA_IMPLS = _impls("cuda", skip="triton")


def build_module(impl: str, shape: Shape, device: str = "cpu") -> torch.nn.Module:
    """One float32 layer of ``impl`` (an IMPLS name) at ``shape`` on ``device``, seeded."""
    torch.manual_seed(0)
    if impl == LSTM:
        return torch.nn.LSTM(shape.D, shape.H, device=device)
    return NRNM(shape.D, shape.H, backend=impl.removeprefix("nrnm-"), device=device, **MEMORY)


def inputs(shape: Shape, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded input (T, B, D) and upstream gradient (T, B, H)."""
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(shape.T, shape.B, shape.D, generator=gen).to(device),
            torch.randn(shape.T, shape.B, shape.H, generator=gen).to(device))
