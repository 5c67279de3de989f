"""The time ratio of two callables measured in alternating pairs.

On a shared machine the speed drifts over seconds to minutes (this project's VMs moved a
median by up to 1.5x between runs); medians taken one implementation after the other carry
that drift into their ratio, a pair of calls back to back shares it.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

PAIRS = 10  # pairs per fast path, shape and mode in the layer benchmark
REFERENCE_PAIRS = 3  # pairs of the reference's calls with each fast path's (the reference is slow)


def paired_ratio(run: Callable[[], object], base: Callable[[], object], pairs: int,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """The median over ``pairs`` pairs of (``run``'s time / ``base``'s time), the two called back
    to back, which of them first alternating from pair to pair."""
    if pairs < 1:
        raise ValueError(f"pairs must be at least 1; got {pairs}")
    ratios = []
    for i in range(pairs):
        times = {}
        for name, f in (("run", run), ("base", base)) if i % 2 == 0 else (("base", base), ("run", run)):
            start = clock()
            f()
            times[name] = clock() - start
        ratios.append(times["run"] / times["base"])
    return statistics.median(ratios)
