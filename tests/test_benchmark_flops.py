"""The benchmark's multiply-add counts (benchmarks/flops.py), from which its GFLOP/s and
arithmetic ratios come: the reference's against torch's FLOP counter, the fast paths' against
the per-step counts of docs/cpu.md."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.flops import fast_multiply_adds, lstm_multiply_adds, reference_multiply_adds
from benchmarks.shapes import MEMORY, Shape
from nrnm_fast import NRNM

ODD_MEMORY = dict(block_size=5, stride=3, num_slots=3, num_heads=2, mlp_size=7)


@pytest.mark.parametrize("memory", [MEMORY, ODD_MEMORY], ids=["default", "odd"])
@pytest.mark.parametrize("shape", [Shape(11, 3, 5, 8), Shape(2, 1, 4, 8), Shape(13, 2, 6, 12)], ids=str)
def test_reference_count_is_what_torch_counts(shape, memory):
    """Forward, and forward+backward of the output with an input that needs no gradient, as benchmarked."""
    torch.manual_seed(0)
    model = NRNM(shape.D, shape.H, backend="reference", dtype=torch.float64, **memory)
    x = torch.randn(shape.T, shape.B, shape.D, dtype=torch.float64)
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        model(x)
    with FlopCounterMode(display=False) as training:
        out, _ = model(x)
        out.backward(torch.randn_like(out))
    assert forward.get_total_flops() == 2 * reference_multiply_adds(shape, False, memory)
    assert training.get_total_flops() == 2 * reference_multiply_adds(shape, True, memory)


@pytest.mark.parametrize("H", [128, 512])
def test_fast_count_per_step_is_the_documented_one(H):
    """docs/cpu.md at D = H, N = 2, k = 8, s = 4, F = H, in units of H^2 per (step, element):
    forward 18.5 + 72 / H; backward 31 + 216 / H without the input's gradient. The steps
    between T = 64 and 128 are all past the first blocks (every block holds k rows)."""
    B = 3

    def per_step(backward: bool) -> float:
        extra = fast_multiply_adds(Shape(128, B, H, H), backward) - fast_multiply_adds(Shape(64, B, H, H), backward)
        return extra / (64 * B * H * H)

    assert per_step(False) == pytest.approx(18.5 + 72 / H, rel=1e-12)
    assert per_step(True) - per_step(False) == pytest.approx(31 + 216 / H, rel=1e-12)
    assert lstm_multiply_adds(Shape(64, B, H, H), False) == 64 * B * 8 * H * H
