"""The block attention Triton kernels against the PyTorch reference, under TRITON_INTERPRET=1 (CPU tensors).

Grids are kept small: the interpreter runs each program in Python (about 10 ms each).
"""

from dataclasses import dataclass

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")

from nrnm_fast.kernels import block_attention as ba  # noqa: E402
from nrnm_fast.kernels import block_attention_ref as ref  # noqa: E402

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


@dataclass
class Case:
    name: str
    N: int  # memory slots
    H: int
    nh: int
    k: int  # block size
    T: int
    B: int
    t: int  # block rows are time-line rows t + 1 .. t + k
    elems: list  # batch index of each updating element (u < B, unsorted)
    n_valid: list  # rows of each block that exist (< k: start of a sequence)


CASES = [
    # k not a power of two, 4 heads, short blocks mixed with a full one, elems unsorted, u < B.
    Case("N3-heads4-k5", N=3, H=32, nh=4, k=5, T=9, B=5, t=3, elems=[4, 1, 2], n_valid=[5, 2, 1]),
    # dh = 144 > 64: several head-dimension chunks, the last one partial; the block ends at the last row.
    Case("N1-dh144-k8", N=1, H=144, nh=1, k=8, T=10, B=3, t=9, elems=[2, 0], n_valid=[8, 3]),
    # Everything small: a single element, a full block of 1, block rows starting at row 0 (t = -1).
    Case("N2-k1", N=2, H=16, nh=2, k=1, T=3, B=2, t=-1, elems=[1], n_valid=[1]),
]


def make_inputs(c: Case, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = len(c.elems)
    qkv = torch.randn(u, c.N, 3 * c.H, generator=g, dtype=torch.float64).to(dtype)
    kv_emb = torch.randn(c.k + c.T, c.B, 2 * c.H, generator=g, dtype=torch.float64).to(dtype)
    kv_hid = torch.randn(c.k + c.T, c.B, 2 * c.H, generator=g, dtype=torch.float64).to(dtype)
    elems = torch.tensor(c.elems, dtype=torch.int64)
    n_valid = torch.tensor(c.n_valid, dtype=torch.int64)
    return qkv, kv_emb, kv_hid, elems, n_valid


def block_rows(x, c: Case, elems):
    """(k + T, B, 2H) time-line tensor -> (u, k, 2H): each element's block rows, oldest first."""
    return x[torch.arange(c.t + 1, c.t + 1 + c.k)][:, elems].transpose(0, 1)


def masked_rows(c: Case):
    """(u, k) bool: block rows that do not exist."""
    r = torch.arange(c.k)
    return r[None, :] < (c.k - torch.tensor(c.n_valid))[:, None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_forward_backward_match_reference(c, dtype):
    qkv, kv_emb, kv_hid, elems, n_valid = make_inputs(c, dtype)
    args = (elems, n_valid, c.t, c.k, c.nh)
    out, probs = ba.block_attention_forward(qkv, kv_emb, kv_hid, *args)

    leaves = [x.clone().requires_grad_() for x in (qkv, kv_emb, kv_hid)]
    ref_out, ref_probs = ref.block_attention_ref(*leaves, *args)
    assert out.dtype == dtype and probs.dtype == dtype
    assert out.shape == (len(c.elems), c.N, c.H) and probs.shape == (len(c.elems), c.nh, c.N, c.N + 2 * c.k)
    torch.testing.assert_close(out, ref_out.detach(), **TOL[dtype])
    torch.testing.assert_close(probs, ref_probs.detach(), **TOL[dtype])

    # Masked keys have probability exactly 0; every row sums to 1.
    gone = masked_rows(c)[:, None, None, :]
    assert (probs[..., c.N : c.N + c.k].masked_select(gone) == 0).all()
    assert (probs[..., c.N + c.k :].masked_select(gone) == 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)), **TOL[dtype])

    d_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(dtype)
    d_qkv, d_kv_emb, d_kv_hid = ba.block_attention_backward(qkv, kv_emb, kv_hid, *args, probs, d_out)
    g_qkv, g_emb, g_hid = torch.autograd.grad(ref_out, leaves, d_out)
    torch.testing.assert_close(d_qkv, g_qkv, **TOL[dtype])
    torch.testing.assert_close(d_kv_emb, block_rows(g_emb, c, elems), **TOL[dtype])
    torch.testing.assert_close(d_kv_hid, block_rows(g_hid, c, elems), **TOL[dtype])

    # Gradients of rows that do not exist are exactly 0 (the outputs are not pre-zeroed).
    gone = masked_rows(c)[:, :, None].expand_as(d_kv_emb)
    assert (d_kv_emb.masked_select(gone) == 0).all() and (d_kv_hid.masked_select(gone) == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_inputs(dtype):
    """Half inputs are upcast to float32: outputs in the input dtype, probs in float32."""
    c = CASES[0]
    qkv, kv_emb, kv_hid, elems, n_valid = make_inputs(c, dtype)
    args = (elems, n_valid, c.t, c.k, c.nh)
    out, probs = ba.block_attention_forward(qkv, kv_emb, kv_hid, *args)
    ref_out, ref_probs = ref.block_attention_ref(qkv.float(), kv_emb.float(), kv_hid.float(), *args)
    assert out.dtype == dtype and probs.dtype == torch.float32
    torch.testing.assert_close(probs, ref_probs, rtol=1e-5, atol=1e-6)  # computed from the same half values
    torch.testing.assert_close(out, ref_out.to(dtype), rtol=1e-2, atol=1e-2)
    d_out = torch.ones(out.shape, dtype=dtype)
    grads = ba.block_attention_backward(qkv, kv_emb, kv_hid, *args, probs, d_out)
    assert all(x.dtype == dtype for x in grads)


class _BlockAttention(torch.autograd.Function):
    """out = attention(qkv, kv_emb, kv_hid) through the two launchers; block-row gradients scattered back."""

    @staticmethod
    def forward(ctx, qkv, kv_emb, kv_hid, elems, n_valid, t, k, nh):
        out, probs = ba.block_attention_forward(qkv, kv_emb, kv_hid, elems, n_valid, t, k, nh)
        ctx.save_for_backward(qkv, kv_emb, kv_hid, elems, n_valid, probs)
        ctx.meta = (t, k, nh)
        return out

    @staticmethod
    def backward(ctx, d_out):
        qkv, kv_emb, kv_hid, elems, n_valid, probs = ctx.saved_tensors
        t, k, nh = ctx.meta
        d_qkv, d_blk_emb, d_blk_hid = ba.block_attention_backward(
            qkv, kv_emb, kv_hid, elems, n_valid, t, k, nh, probs, d_out.contiguous()
        )
        rows = torch.arange(t + 1, t + 1 + k)[None, :].expand(len(elems), k)
        cols = elems[:, None].expand(len(elems), k)
        d_emb = torch.zeros_like(kv_emb).index_put_((rows, cols), d_blk_emb, accumulate=True)
        d_hid = torch.zeros_like(kv_hid).index_put_((rows, cols), d_blk_hid, accumulate=True)
        return d_qkv, d_emb, d_hid, None, None, None, None, None


def test_gradcheck_fp64():
    c = Case("gradcheck", N=2, H=8, nh=2, k=3, T=4, B=3, t=1, elems=[2, 0], n_valid=[3, 1])
    qkv, kv_emb, kv_hid, elems, n_valid = make_inputs(c, torch.float64)
    inputs = tuple(x.requires_grad_() for x in (qkv, kv_emb, kv_hid))
    assert torch.autograd.gradcheck(
        lambda q, e, h: _BlockAttention.apply(q, e, h, elems, n_valid, c.t, c.k, c.nh), inputs, fast_mode=True
    )


def test_no_updating_element():
    c = CASES[0]
    qkv, kv_emb, kv_hid, _, _ = make_inputs(c, torch.float64)
    none = torch.zeros(0, dtype=torch.int64)
    out, probs = ba.block_attention_forward(qkv[:0].contiguous(), kv_emb, kv_hid, none, none, c.t, c.k, c.nh)
    assert out.shape == (0, c.N, c.H) and probs.shape == (0, c.nh, c.N, c.N + 2 * c.k)


@pytest.mark.parametrize("block_size", [0, ba.MAX_BLOCK_SIZE + 1])
def test_bad_block_size_raises(block_size):
    qkv = torch.randn(1, 2, 24, dtype=torch.float64)
    kv = torch.randn(block_size + 4, 1, 16, dtype=torch.float64)
    one = torch.ones(1, dtype=torch.int64)
    with pytest.raises(ValueError, match="block_size"):
        ba.block_attention_forward(qkv, kv, kv, one * 0, one, 0, block_size, 2)
    with pytest.raises(ValueError, match="block_size"):
        ba.launch_config(2, block_size, 8)


def test_launch_config_tiles():
    cfg = ba.launch_config(2, 8, 32)
    assert (cfg["BLOCK_N"], cfg["BLOCK_K"]) == (16, 16)
    for n, k, dh in [(1, 1, 1), (3, 5, 160), (ba.MAX_NUM_SLOTS, ba.MAX_BLOCK_SIZE, 512)]:
        cfg = ba.launch_config(n, k, dh)
        for name in ("BLOCK_N", "BLOCK_K", "BLOCK_D"):
            v = cfg[name]
            assert v >= 16 and v & (v - 1) == 0, (name, v)
        assert cfg["BLOCK_N"] >= n and cfg["BLOCK_K"] >= k and cfg["BLOCK_D"] <= 64
