"""Triton kernels for the attention of one memory update (see ../shared/design/SPEC.md, "Memory update").

Per (updating element i, head h), the N memory queries attend over N + 2k keys: the N memory rows,
then the k input-embedding rows of the block, then the k hidden-state rows of the block. Keys and
values are read in place from the time lines; block rows that do not exist yet (the first
``k - n_valid[i]`` of each k) are masked. This is the function of ``csrc/cpu/block_attention.cpp``.

Shape letters: u updating elements, N memory slots, H hidden size, nh heads of dh = H / nh, k block
size, T steps, B batch.

Kernel layout: one program per (element, head), grid (u * nh,). The score tiles (queries padded to
BLOCK_N rows, keys in three tiles: BLOCK_N memory keys, BLOCK_K embedding keys, BLOCK_K hidden keys),
the softmax and the weighted sums stay on chip. The head dimension is walked in chunks of BLOCK_D
columns: scores (and, in the backward, dp = g @ v^T) accumulate over the chunks, then each output is
produced chunk by chunk, each product in its own loop, so any dh works and the registers held at once
stay bounded. Every loaded value is upcast to the compute dtype (float32, or float64 for float64
inputs) before any arithmetic, and products use ``tl.dot(..., input_precision="ieee")`` (no TF32).

Limits (``launch_config`` raises ValueError beyond them): block_size <= MAX_BLOCK_SIZE = 32 and
num_slots <= MAX_NUM_SLOTS = 16: the largest tiles checked to compile for sm_80 and sm_90 without
register spills for fp32 / fp16 / bf16 (``python -m nrnm_fast.kernels.aot`` checks the defaults and these limits).
fp32 ``tl.dot`` with ieee precision runs on the FMA units, where each thread holds its rows and columns
of both operands over the whole reduction: that, not shared memory, is what bounds the tiles.

Only torch and triton are imported: the module works under ``TRITON_INTERPRET=1`` with CPU
tensors (how the tests run it) and on CUDA tensors.
"""

import torch
import triton
import triton.language as tl

# The largest block size k and number of memory slots N the kernels take (tiles without spills).
MAX_BLOCK_SIZE = 32
MAX_NUM_SLOTS = 16
# Head-dimension chunk: the reduction length of the score products, whose FMA-unit operands each thread
# holds whole: 64 spilled in the backward at 4 warps on sm_80 / sm_90 (kernels/aot.py), 32 does not.
MAX_BLOCK_D = 32
# Passed to every launch and to the AOT check (Triton 3.9 warns when it is left to its changing default).
COMPILE_OPTIONS = {"enable_fp_fusion": True}

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def launch_config(num_slots: int, block_size: int, head_dim: int) -> dict:
    """The tile sizes and warp count of both kernels; the one place they are chosen.

    BLOCK_N = max(16, next_pow2(N)) (queries and memory keys, padded to the 16 rows ``tl.dot`` needs),
    BLOCK_K = max(16, next_pow2(k)) (the k embedding keys, and the k hidden keys: one tile each),
    BLOCK_D = 16 when dh <= 16 and k <= 16, else 32 (head-dimension chunk),
    num_warps = 4 when BLOCK_K == 16 (k <= 16), else 8.
    Measured with kernels/aot.py: wider head chunks spill in the backward, and with BLOCK_K = 32 a
    16-column chunk makes ptxas trade a few bytes of spills for occupancy, at 4 and at 8 warps.

    Raises ValueError when block_size is outside 1..MAX_BLOCK_SIZE (32) or num_slots outside
    1..MAX_NUM_SLOTS (16).
    """
    if not 1 <= block_size <= MAX_BLOCK_SIZE:
        raise ValueError(
            f"block attention kernel: block_size must be in 1..{MAX_BLOCK_SIZE} (the largest block whose "
            f"tiles compile without register spills), got block_size={block_size}"
        )
    if not 1 <= num_slots <= MAX_NUM_SLOTS:
        raise ValueError(f"block attention kernel: num_slots must be in 1..{MAX_NUM_SLOTS}, got num_slots={num_slots}")
    if head_dim < 1:
        raise ValueError(f"block attention kernel: head_dim must be positive, got {head_dim}")
    block_n = max(16, _next_pow2(num_slots))
    block_k = max(16, _next_pow2(block_size))
    block_d = 16 if head_dim <= 16 and block_k == 16 else MAX_BLOCK_D
    num_warps = 4 if block_k == 16 else 8
    return {"BLOCK_N": block_n, "BLOCK_K": block_k, "BLOCK_D": block_d, "num_warps": num_warps}


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in (and the dtype of probs): float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_compute_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


# ----------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------
# Rows are addressed by the element offset of their first column of this head (`rows`, int64); the
# head dimension is walked in chunks of BLOCK_D columns. Each loop below holds only the tiles of one
# product (or of one sum of three), so the register use stays bounded whatever dh is.


@triton.jit
def _softmax_scale(HEAD_DIM, CDT: tl.constexpr):
    # 1 / sqrt(dh), correctly rounded in the compute dtype (as the CPU code computes it).
    if CDT == tl.float64:
        scale = 1.0 / tl.sqrt(tl.cast(HEAD_DIM, tl.float64))
    else:
        scale = tl.math.div_rn(1.0, tl.sqrt_rn(tl.cast(HEAD_DIM, tl.float32)))
    return scale


@triton.jit
def _load_chunk(ptr, rows, row_ok, cols, HEAD_DIM, CDT: tl.constexpr):
    """(len(rows), len(cols)) tile ptr[rows + cols], upcast to CDT; 0 outside row_ok / the head."""
    mask = row_ok[:, None] & (cols < HEAD_DIM)[None, :]
    return tl.load(ptr + rows[:, None] + cols[None, :], mask=mask, other=0.0).to(CDT)


@triton.jit
def _row_products(a_ptr, a_rows, a_ok, b_ptr, b_rows, b_ok, HEAD_DIM, CDT: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """(BLOCK_M, BLOCK_J): sum over the head dimension of a[m, d] * b[j, d] (0 for rows not ok)."""
    acc = tl.zeros((BLOCK_M, BLOCK_J), dtype=CDT)
    rd = tl.arange(0, BLOCK_D)
    for d0 in range(0, HEAD_DIM, BLOCK_D):
        cols = d0 + rd
        a = _load_chunk(a_ptr, a_rows, a_ok, cols, HEAD_DIM, CDT)
        b = _load_chunk(b_ptr, b_rows, b_ok, cols, HEAD_DIM, CDT)
        acc += tl.dot(a, tl.trans(b), input_precision="ieee", out_dtype=CDT)
    return acc


@triton.jit
def _store_mixed_rows(dst_ptr, dst_rows, dst_ok, keep, w, src_ptr, src_rows, src_ok, HEAD_DIM, CDT: tl.constexpr,
                      BLOCK_D: tl.constexpr):  # fmt: skip
    """dst[r, :] = sum_m w[r, m] * src[m, :] over the head dimension (exactly 0 where not keep), stored where
    dst_ok."""
    rd = tl.arange(0, BLOCK_D)
    for d0 in range(0, HEAD_DIM, BLOCK_D):
        cols = d0 + rd
        x = tl.dot(w, _load_chunk(src_ptr, src_rows, src_ok, cols, HEAD_DIM, CDT), input_precision="ieee",
                   out_dtype=CDT)  # fmt: skip
        x = tl.where(keep[:, None], x, 0.0)
        mask = dst_ok[:, None] & (cols < HEAD_DIM)[None, :]
        tl.store(dst_ptr + dst_rows[:, None] + cols[None, :], x.to(dst_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _store_mixed_rows3(dst_ptr, dst_rows, dst_ok, w1, src1_ptr, rows1, ok1, w2, src2_ptr, rows2, ok2, w3, src3_ptr,
                       rows3, ok3, HEAD_DIM, CDT: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """dst = w1 @ src1 + w2 @ src2 + w3 @ src3 over the head dimension, stored where dst_ok."""
    rd = tl.arange(0, BLOCK_D)
    for d0 in range(0, HEAD_DIM, BLOCK_D):
        cols = d0 + rd
        x = tl.dot(w1, _load_chunk(src1_ptr, rows1, ok1, cols, HEAD_DIM, CDT), input_precision="ieee", out_dtype=CDT)
        x += tl.dot(w2, _load_chunk(src2_ptr, rows2, ok2, cols, HEAD_DIM, CDT), input_precision="ieee", out_dtype=CDT)
        x += tl.dot(w3, _load_chunk(src3_ptr, rows3, ok3, cols, HEAD_DIM, CDT), input_precision="ieee", out_dtype=CDT)
        mask = dst_ok[:, None] & (cols < HEAD_DIM)[None, :]
        tl.store(dst_ptr + dst_rows[:, None] + cols[None, :], x.to(dst_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _program_rows(elems_ptr, n_valid_ptr, t, B, N, H, NUM_HEADS, HEAD_DIM, K, BLOCK_N: tl.constexpr,
                  BLOCK_K: tl.constexpr):  # fmt: skip
    """This program's (element i, head h) and the element offsets of its rows' first column of the head.

    Returns i, h; rn (BLOCK_N,) query / memory-key rows and rk (BLOCK_K,) block rows; masks n_ok (rows < N),
    k_in (rows < k) and k_ok (block rows that exist); H as int64; head_col = h * dh; mem_row, the rows of
    qkv (q at +0, key at +H, value at +2H); line_row, the block's rows of the time lines (key at +0, value
    at +H).
    """
    pid = tl.program_id(0)
    i = (pid // NUM_HEADS).to(tl.int64)
    h = pid % NUM_HEADS
    b = tl.load(elems_ptr + i).to(tl.int64)
    first = K - tl.load(n_valid_ptr + i).to(tl.int32)  # first existing block row
    rn = tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    n_ok = rn < N
    k_in = rk < K
    k_ok = (rk >= first) & k_in
    H64 = tl.cast(H, tl.int64)
    head_col = h * HEAD_DIM
    mem_row = (i * N + rn) * (3 * H64) + head_col
    line_row = ((t + 1 + rk).to(tl.int64) * B + b) * (2 * H64) + head_col
    return i, h, rn, rk, n_ok, k_in, k_ok, H64, head_col, mem_row, line_row


@triton.jit
def _block_attention_fwd_kernel(
    qkv_ptr,  # (u, N, 3H)
    kv_emb_ptr,  # (k + T, B, 2H)
    kv_hid_ptr,  # (k + T, B, 2H)
    elems_ptr,  # (u,) int64
    n_valid_ptr,  # (u,) int64
    out_ptr,  # (u, N, H)
    probs_ptr,  # (u, nh, N, N + 2k), compute dtype
    t,
    B,
    N,
    H,
    NUM_HEADS,
    HEAD_DIM,
    K,
    CDT: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    i, h, rn, rk, n_ok, k_in, k_ok, H64, head_col, mem_row, line_row = _program_rows(
        elems_ptr, n_valid_ptr, t, B, N, H, NUM_HEADS, HEAD_DIM, K, BLOCK_N, BLOCK_K)

    # Scores over the N memory keys, the k embedding keys and the k hidden keys.
    s_m = _row_products(qkv_ptr, mem_row, n_ok, qkv_ptr + H64, mem_row, n_ok, HEAD_DIM, CDT, BLOCK_N, BLOCK_N, BLOCK_D)
    s_e = _row_products(qkv_ptr, mem_row, n_ok, kv_emb_ptr, line_row, k_ok, HEAD_DIM, CDT, BLOCK_N, BLOCK_K, BLOCK_D)
    s_h = _row_products(qkv_ptr, mem_row, n_ok, kv_hid_ptr, line_row, k_ok, HEAD_DIM, CDT, BLOCK_N, BLOCK_K, BLOCK_D)

    # Softmax over the N + 2k keys (three tiles), masked and padding keys at -inf. Every row has its N
    # memory keys, so no row is all -inf.
    scale = _softmax_scale(HEAD_DIM, CDT)
    s_m = tl.where(n_ok[None, :], s_m * scale, float("-inf"))
    s_e = tl.where(k_ok[None, :], s_e * scale, float("-inf"))
    s_h = tl.where(k_ok[None, :], s_h * scale, float("-inf"))
    top = tl.maximum(tl.maximum(tl.max(s_m, axis=1), tl.max(s_e, axis=1)), tl.max(s_h, axis=1))
    p_m = tl.exp(s_m - top[:, None])
    p_e = tl.exp(s_e - top[:, None])
    p_h = tl.exp(s_h - top[:, None])
    total = tl.sum(p_m, axis=1) + tl.sum(p_e, axis=1) + tl.sum(p_h, axis=1)
    p_m = p_m / total[:, None]
    p_e = p_e / total[:, None]
    p_h = p_h / total[:, None]

    J = N + 2 * K
    p_row = (((i * NUM_HEADS + h) * N + rn) * J)[:, None]
    tl.store(probs_ptr + p_row + rn[None, :], p_m, mask=n_ok[:, None] & n_ok[None, :])
    tl.store(probs_ptr + p_row + N + rk[None, :], p_e, mask=n_ok[:, None] & k_in[None, :])
    tl.store(probs_ptr + p_row + N + K + rk[None, :], p_h, mask=n_ok[:, None] & k_in[None, :])

    # out = p @ values.
    out_row = (i * N + rn) * H64 + head_col
    _store_mixed_rows3(out_ptr, out_row, n_ok,
                       p_m, qkv_ptr + 2 * H64, mem_row, n_ok,
                       p_e, kv_emb_ptr + H64, line_row, k_ok,
                       p_h, kv_hid_ptr + H64, line_row, k_ok,
                       HEAD_DIM, CDT, BLOCK_D)  # fmt: skip


@triton.jit
def _block_attention_bwd_kernel(
    qkv_ptr,  # (u, N, 3H)
    kv_emb_ptr,  # (k + T, B, 2H)
    kv_hid_ptr,  # (k + T, B, 2H)
    elems_ptr,  # (u,) int64
    n_valid_ptr,  # (u,) int64
    probs_ptr,  # (u, nh, N, N + 2k), compute dtype
    d_out_ptr,  # (u, N, H)
    d_qkv_ptr,  # (u, N, 3H)
    d_kv_emb_ptr,  # (u, k, 2H)
    d_kv_hid_ptr,  # (u, k, 2H)
    t,
    B,
    N,
    H,
    NUM_HEADS,
    HEAD_DIM,
    K,
    CDT: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    i, h, rn, rk, n_ok, k_in, k_ok, H64, head_col, mem_row, line_row = _program_rows(
        elems_ptr, n_valid_ptr, t, B, N, H, NUM_HEADS, HEAD_DIM, K, BLOCK_N, BLOCK_K)
    out_row = (i * N + rn) * H64 + head_col  # rows of d_out
    blk_row = (i * K + rk) * (2 * H64) + head_col  # rows of d_kv_emb / d_kv_hid

    # The saved probabilities (0 at masked keys; padding loads as 0).
    J = N + 2 * K
    p_row = (((i * NUM_HEADS + h) * N + rn) * J)[:, None]
    p_m = tl.load(probs_ptr + p_row + rn[None, :], mask=n_ok[:, None] & n_ok[None, :], other=0.0).to(CDT)
    p_e = tl.load(probs_ptr + p_row + N + rk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0).to(CDT)
    p_h = tl.load(probs_ptr + p_row + N + K + rk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0).to(CDT)

    # dp = g @ values^T.
    dp_m = _row_products(d_out_ptr, out_row, n_ok, qkv_ptr + 2 * H64, mem_row, n_ok, HEAD_DIM, CDT, BLOCK_N, BLOCK_N,
                         BLOCK_D)  # fmt: skip
    dp_e = _row_products(d_out_ptr, out_row, n_ok, kv_emb_ptr + H64, line_row, k_ok, HEAD_DIM, CDT, BLOCK_N, BLOCK_K,
                         BLOCK_D)  # fmt: skip
    dp_h = _row_products(d_out_ptr, out_row, n_ok, kv_hid_ptr + H64, line_row, k_ok, HEAD_DIM, CDT, BLOCK_N, BLOCK_K,
                         BLOCK_D)  # fmt: skip

    # d score = p * (dp - sum_j p_j dp_j) * scale: 0 wherever p is 0 (masked keys, padding).
    scale = _softmax_scale(HEAD_DIM, CDT)
    p_dot_dp = tl.sum(p_m * dp_m, axis=1) + tl.sum(p_e * dp_e, axis=1) + tl.sum(p_h * dp_h, axis=1)
    ds_m = p_m * (dp_m - p_dot_dp[:, None]) * scale
    ds_e = p_e * (dp_e - p_dot_dp[:, None]) * scale
    ds_h = p_h * (dp_h - p_dot_dp[:, None]) * scale

    # dq = d scores @ keys.
    _store_mixed_rows3(d_qkv_ptr, mem_row, n_ok,
                       ds_m, qkv_ptr + H64, mem_row, n_ok,
                       ds_e, kv_emb_ptr, line_row, k_ok,
                       ds_h, kv_hid_ptr, line_row, k_ok,
                       HEAD_DIM, CDT, BLOCK_D)  # fmt: skip
    # Keys: d scores^T @ q; values: p^T @ g. Every block row r < k is written: exactly 0 where masked.
    _store_mixed_rows(d_qkv_ptr + H64, mem_row, n_ok, n_ok, tl.trans(ds_m), qkv_ptr, mem_row, n_ok, HEAD_DIM, CDT,
                      BLOCK_D)  # fmt: skip
    _store_mixed_rows(d_qkv_ptr + 2 * H64, mem_row, n_ok, n_ok, tl.trans(p_m), d_out_ptr, out_row, n_ok, HEAD_DIM, CDT,
                      BLOCK_D)  # fmt: skip
    _store_mixed_rows(d_kv_emb_ptr, blk_row, k_in, k_ok, tl.trans(ds_e), qkv_ptr, mem_row, n_ok, HEAD_DIM, CDT,
                      BLOCK_D)  # fmt: skip
    _store_mixed_rows(d_kv_emb_ptr + H64, blk_row, k_in, k_ok, tl.trans(p_e), d_out_ptr, out_row, n_ok, HEAD_DIM, CDT,
                      BLOCK_D)  # fmt: skip
    _store_mixed_rows(d_kv_hid_ptr, blk_row, k_in, k_ok, tl.trans(ds_h), qkv_ptr, mem_row, n_ok, HEAD_DIM, CDT,
                      BLOCK_D)  # fmt: skip
    _store_mixed_rows(d_kv_hid_ptr + H64, blk_row, k_in, k_ok, tl.trans(p_h), d_out_ptr, out_row, n_ok, HEAD_DIM, CDT,
                      BLOCK_D)  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------


def _check(qkv, kv_emb, kv_hid, elems, n_valid, t, block_size, num_heads):
    """Shapes and dtypes (values of elems / n_valid are not read back: that would synchronize)."""
    if qkv.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"block attention kernel: unsupported dtype {qkv.dtype}")
    if qkv.dim() != 3 or qkv.size(2) % 3:
        raise ValueError(f"block attention kernel: qkv must be (u, N, 3H), got {tuple(qkv.shape)}")
    u, N, H3 = qkv.shape
    H = H3 // 3
    if num_heads < 1 or H % num_heads:
        raise ValueError(f"block attention kernel: hidden size {H} is not divisible by num_heads={num_heads}")
    cfg = launch_config(N, block_size, H // num_heads)
    for name, x in (("kv_emb", kv_emb), ("kv_hid", kv_hid)):
        if x.dim() != 3 or x.size(2) != 2 * H or x.size(0) < block_size:
            raise ValueError(f"block attention kernel: {name} must be (k + T, B, 2H), got {tuple(x.shape)}")
        if x.dtype != qkv.dtype or x.device != qkv.device:
            raise TypeError(f"block attention kernel: {name} must have qkv's dtype and device")
        if not x.is_contiguous():
            raise ValueError(f"block attention kernel: {name} must be contiguous")
    if kv_emb.shape != kv_hid.shape:
        raise ValueError("block attention kernel: kv_emb and kv_hid must have the same shape")
    if t < -1 or t + block_size >= kv_emb.size(0):
        raise ValueError(f"block attention kernel: rows t + 1 .. t + k (t={t}, k={block_size}) outside the time line")
    if not qkv.is_contiguous():
        raise ValueError("block attention kernel: qkv must be contiguous")
    for name, x in (("elems", elems), ("n_valid", n_valid)):
        if x.shape != (u,) or x.dtype != torch.int64 or x.device != qkv.device:
            raise ValueError(f"block attention kernel: {name} must be an int64 ({u},) tensor on qkv's device")
    return u, N, H, cfg


def block_attention_forward(qkv, kv_emb, kv_hid, elems, n_valid, t: int, block_size: int, num_heads: int):
    """Attention of the N memory queries over their block, per (element, head).

    qkv (u, N, 3H): q | k | v of the memory rows (contiguous).
    kv_emb, kv_hid (k + T, B, 2H): keys | values of every row of the embedding / hidden time line (contiguous).
    elems (u,) int64: batch index b of each updating element. n_valid (u,) int64 in 1..k: rows of its block
    that exist.
    t: block row r (0..k-1) of element i is time-line row t + 1 + r, batch elems[i]; rows r < k - n_valid[i]
    are masked.
    Returns out (u, N, H) in qkv's dtype (heads concatenated) and probs (u, nh, N, N + 2k): float32 (float64
    for float64 input), 0 at masked keys; key order: N memory rows, k embedding rows, k hidden rows.
    Scale 1 / sqrt(dh), dh = H / nh. Raises ValueError when block_size > MAX_BLOCK_SIZE (32) or
    N > MAX_NUM_SLOTS (16).
    """
    u, N, H, cfg = _check(qkv, kv_emb, kv_hid, elems, n_valid, t, block_size, num_heads)
    k, B = block_size, kv_emb.size(1)
    out = torch.empty((u, N, H), dtype=qkv.dtype, device=qkv.device)
    probs = torch.empty((u, num_heads, N, N + 2 * k), dtype=compute_dtype(qkv.dtype), device=qkv.device)
    if u == 0:
        return out, probs
    _block_attention_fwd_kernel[(u * num_heads,)](
        qkv, kv_emb, kv_hid, elems, n_valid, out, probs,
        t, B, N, H, num_heads, H // num_heads, k,
        CDT=_tl_compute_dtype(qkv.dtype),
        BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], BLOCK_D=cfg["BLOCK_D"],
        num_warps=cfg["num_warps"], **COMPILE_OPTIONS,
    )  # fmt: skip
    return out, probs


def block_attention_backward(qkv, kv_emb, kv_hid, elems, n_valid, t, block_size, num_heads, probs, d_out):
    """Gradients of block_attention_forward.

    Inputs as block_attention_forward, plus probs (u, nh, N, N + 2k) from it and d_out (u, N, H).
    Returns d_qkv (u, N, 3H) (gradients of q, and of the memory rows' keys and values),
    d_kv_emb, d_kv_hid (u, k, 2H): gradients of each block row's key | value, oldest row first, 0 where
    masked. All in qkv's dtype.
    """
    u, N, H, cfg = _check(qkv, kv_emb, kv_hid, elems, n_valid, t, block_size, num_heads)
    k, B = block_size, kv_emb.size(1)
    if probs.shape != (u, num_heads, N, N + 2 * k) or probs.dtype != compute_dtype(qkv.dtype):
        raise ValueError("block attention kernel: probs must be block_attention_forward's")
    if d_out.shape != (u, N, H):
        raise ValueError(f"block attention kernel: d_out must be ({u}, {N}, {H}), got {tuple(d_out.shape)}")
    probs = probs.contiguous()
    d_out = d_out.to(qkv.dtype).contiguous()
    # Every element of the three outputs is written by exactly one program.
    d_qkv = torch.empty_like(qkv)
    d_kv_emb = torch.empty((u, k, 2 * H), dtype=qkv.dtype, device=qkv.device)
    d_kv_hid = torch.empty((u, k, 2 * H), dtype=qkv.dtype, device=qkv.device)
    if u == 0:
        return d_qkv, d_kv_emb, d_kv_hid
    _block_attention_bwd_kernel[(u * num_heads,)](
        qkv, kv_emb, kv_hid, elems, n_valid, probs, d_out, d_qkv, d_kv_emb, d_kv_hid,
        t, B, N, H, num_heads, H // num_heads, k,
        CDT=_tl_compute_dtype(qkv.dtype),
        BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], BLOCK_D=cfg["BLOCK_D"],
        num_warps=cfg["num_warps"], **COMPILE_OPTIONS,
    )  # fmt: skip
    return d_qkv, d_kv_emb, d_kv_hid


# The kernels and the order of their arguments, for ahead-of-time compilation (kernels/aot.py).
KERNELS = {
    "forward": _block_attention_fwd_kernel,
    "backward": _block_attention_bwd_kernel,
}
