"""benchmarks/paired.py: the median of per-pair time ratios, the order alternating."""

from __future__ import annotations

import pytest

from benchmarks.paired import paired_ratio


class FakeClock:
    """A clock that the callables advance by the time they are said to take."""

    def __init__(self):
        self.now = 0.0
        self.calls = []

    def __call__(self) -> float:
        return self.now

    def taking(self, name: str, seconds):
        durations = iter(seconds)

        def f():
            self.calls.append(name)
            self.now += next(durations)

        return f


def test_median_of_the_pairs_ratios_with_the_order_alternating():
    clock = FakeClock()
    # a drift that doubles both times from the third pair on, and one outlier pair
    run = clock.taking("run", [2.0, 2.0, 4.0, 40.0, 4.0])
    base = clock.taking("base", [1.0, 1.0, 2.0, 2.0, 2.0])
    assert paired_ratio(run, base, pairs=5, clock=clock) == 2.0
    assert clock.calls == ["run", "base", "base", "run", "run", "base", "base", "run", "run", "base"]


def test_pairs_must_be_positive():
    with pytest.raises(ValueError, match="pairs must be at least 1"):
        paired_ratio(lambda: None, lambda: None, pairs=0)
