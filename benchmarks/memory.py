"""Peak extra memory of one forward+backward, measured as resident-set growth in a fresh process.

The peak resident set (VmHWM) is reset just before the run, so the number is the
highest resident memory during the run minus the resident memory before it
(model, input and upstream gradient already allocated). A fresh process keeps
memory that an earlier run freed from hiding the growth. Linux only.

    python -m benchmarks.memory IMPL SHAPE_NAME THREADS   # prints the bytes
"""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.shapes import SHAPES, bench_threads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(impl: str, shape_name: str, threads: int) -> int:
    """In this process: bytes of resident-set growth at the peak of one forward+backward."""
    import torch

    from benchmarks.shapes import build_module, inputs

    torch.set_num_threads(threads)
    shape = {s.name: s for s in SHAPES}[shape_name]
    module = build_module(impl, shape)
    x, grad_out = inputs(shape)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _status_kib("VmRSS")
    out, _ = module(x)
    out.backward(grad_out)
    return (_status_kib("VmHWM") - before) * 1024


def peak_extra_bytes(impl: str, shape) -> int:
    """Run :func:`measure` in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", impl, shape.name, str(bench_threads())],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    return int(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    impl, shape_name, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(measure(impl, shape_name, threads))
