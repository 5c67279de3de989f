"""The CUDA path against the reference on a GPU: every output, final state and gradient.

Skipped without a CUDA device (our CI has none); ready for the day one is present.
float32 and float64 are compared with the reference in the same dtype on the GPU; bfloat16
(fp32 accumulation inside, bf16 storage between steps) with the float64 reference, at a
tolerance of a few bf16 roundings (eps 2^-8) accumulated over the sequence.
"""

from __future__ import annotations

import pytest
import torch

from nrnm_fast import NRNM, available_backends
from parity import CASES, assert_matches, run_case

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

GPU_CASES = ["T1", "T3-stride1", "T17-s-divides-k", "T17-s-not-dividing-k", "T50-two-layers", "T3-k1"]


def test_cuda_backend_is_built_and_picked_by_auto():
    assert "cuda" in available_backends("cuda", torch.float32), available_backends("cuda", torch.float32)
    x = torch.randn(5, 2, 3, device="cuda")
    model = NRNM(3, 4, num_heads=2, device="cuda")
    out, _ = model(x)
    assert out.is_cuda and out.shape == (5, 2, 4)


@pytest.mark.parametrize("case", GPU_CASES)
def test_cuda_matches_reference_float64(case):
    assert_matches(run_case("cuda", torch.float64, CASES[case], "cuda"),
                   run_case("reference", torch.float64, CASES[case], "cuda"), 1e-10)


@pytest.mark.parametrize("case", GPU_CASES)
def test_cuda_matches_reference_float32(case):
    assert_matches(run_case("cuda", torch.float32, CASES[case], "cuda"),
                   run_case("reference", torch.float32, CASES[case], "cuda"), 1e-5)


@pytest.mark.parametrize("case", ["T17-s-not-dividing-k", "T50-two-layers"])
def test_cuda_bfloat16_within_bf16_rounding(case):
    assert_matches(run_case("cuda", torch.bfloat16, CASES[case], "cuda"),
                   run_case("reference", torch.float64, CASES[case], "cuda"), 5e-2)


def test_cuda_matches_cpu_path_on_the_same_weights():
    """The CUDA step kernels and the CPU loops run the same per-unit math (csrc/nrnm_cell.h)."""
    case = CASES["T17-s-not-dividing-k"]
    if "cpu" not in available_backends("cpu", torch.float64):
        pytest.skip("the CPU extension is not built")
    assert_matches(run_case("cuda", torch.float64, case, "cuda"), run_case("cpu", torch.float64, case), 1e-10)
