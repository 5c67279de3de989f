"""The whole layer with backend="triton" on CPU tensors against the reference, under TRITON_INTERPRET=1.

This runs the GPU path's C++ orchestration (csrc/layer.cpp), its call into the Triton
attention through the dispatcher (csrc/triton_attention.cpp), its ATen-indexed block rows
(csrc/block_rows.cpp) and the Triton kernels themselves; only the element-wise step kernels
are the CPU's. Every output, final state and gradient, with random upstream gradients.
"""

from __future__ import annotations

import pytest
import torch

from helpers import random_model
from nrnm_fast import available_backends
from parity import CASES, assert_matches, run_case

# Small grids: the interpreter runs each (element, head) program in Python.
LAYER_CASES = [
    "T1", "T3-stride1", "T17-s-divides-k", "T17-s-not-dividing-k", "T50-s-equals-k", "T17-B1-streamed", "T3-k1",
]


def test_triton_backend_is_available_under_the_interpreter():
    assert "triton" in available_backends("cpu", torch.float64)
    assert available_backends("cpu", torch.float32)[-1] == "cpu", "auto must not pick the interpreter"


@pytest.mark.parametrize("case", LAYER_CASES)
def test_triton_layer_matches_reference_float64(case):
    assert_matches(run_case("triton", torch.float64, CASES[case]), run_case("reference", torch.float64, CASES[case]),
                   1e-10)


def test_triton_layer_matches_reference_float32():
    case = CASES["T17-s-not-dividing-k"]
    assert_matches(run_case("triton", torch.float32, case), run_case("reference", torch.float32, case), 1e-5)


def test_triton_layer_gradcheck():
    model = random_model(3, 4, block_size=3, stride=2, num_slots=2, num_heads=2, backend="triton")
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 3])
    weight = model.attn_in_weight_l0.detach().clone().requires_grad_(True)

    def f(x, weight):
        out, (h, c) = torch.func.functional_call(model, {"attn_in_weight_l0": weight}, (x,), {"lengths": lengths})
        return out, h, c

    assert torch.autograd.gradcheck(f, (x, weight), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def test_block_larger_than_the_kernels_tiles_is_a_value_error():
    model = random_model(3, 4, block_size=40, stride=4, num_heads=2, backend="triton")
    with pytest.raises(ValueError, match=r"block_size must be in 1\.\.32"):
        model(torch.randn(5, 2, 3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_block_attention_ops(dtype):
    """The attention ops the C++ layer calls: schema, fake kernels (what torch.compile traces), dispatch."""
    import nrnm_fast.triton_attention  # noqa: F401  (registers their kernels)

    g = torch.Generator().manual_seed(0)
    u, N, H, k, T, B, nh = 2, 2, 8, 3, 4, 3, 2
    qkv = torch.randn(u, N, 3 * H, generator=g, dtype=dtype)
    kv_emb, kv_hid = (torch.randn(k + T, B, 2 * H, generator=g, dtype=dtype) for _ in range(2))
    elems, n_valid = torch.tensor([2, 0]), torch.tensor([3, 1])
    forward_args = (qkv, kv_emb, kv_hid, elems, n_valid, 1, k, nh)
    torch.library.opcheck(torch.ops.nrnm_fast.block_attention_forward.default, forward_args)
    _, probs = torch.ops.nrnm_fast.block_attention_forward(*forward_args)
    d_out = torch.randn(u, N, H, generator=g, dtype=dtype)
    torch.library.opcheck(torch.ops.nrnm_fast.block_attention_backward.default, (*forward_args, probs, d_out))
