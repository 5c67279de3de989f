"""Pure-PyTorch reference of the block attention (kernels/block_attention.py), differentiable by autograd.

Written the obvious way: gather each element's block rows from the time lines, concatenate the memory
rows' keys / values with them, and run a full masked softmax per head.
"""

import math

import torch


def block_attention_ref(qkv, kv_emb, kv_hid, elems, n_valid, t: int, block_size: int, num_heads: int):
    """Same interface and meaning as ``block_attention_forward``.

    qkv (u, N, 3H); kv_emb, kv_hid (k + T, B, 2H); elems, n_valid (u,) int64; block row r of element i is
    time-line row t + 1 + r, batch elems[i], masked when r < k - n_valid[i].
    Returns out (u, N, H) in qkv's dtype and probs (u, nh, N, N + 2k) in float32 (float64 for float64),
    0 at masked keys. Computes in float32 (float64 for float64 inputs).
    """
    u, N, H3 = qkv.shape
    H, k, nh = H3 // 3, block_size, num_heads
    dh = H // nh
    cdt = torch.float64 if qkv.dtype == torch.float64 else torch.float32
    x = qkv.to(cdt)
    rows = torch.arange(t + 1, t + 1 + k, device=qkv.device)
    emb = kv_emb.to(cdt)[rows][:, elems].transpose(0, 1)  # (u, k, 2H)
    hid = kv_hid.to(cdt)[rows][:, elems].transpose(0, 1)
    q, km, vm = x.split(H, dim=-1)  # each (u, N, H)
    keys = torch.cat([km, emb[..., :H], hid[..., :H]], dim=1)  # (u, N + 2k, H)
    values = torch.cat([vm, emb[..., H:], hid[..., H:]], dim=1)

    def heads(z):  # (u, L, H) -> (u, nh, L, dh)
        return z.reshape(u, z.size(1), nh, dh).transpose(1, 2)

    scores = heads(q) @ heads(keys).transpose(-1, -2) / math.sqrt(dh)  # (u, nh, N, N + 2k)
    r = torch.arange(k, device=qkv.device)
    block_ok = r[None, :] >= (k - n_valid)[:, None]  # (u, k)
    key_ok = torch.cat([torch.ones(u, N, dtype=torch.bool, device=qkv.device), block_ok, block_ok], dim=1)
    scores = scores.masked_fill(~key_ok[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = (probs @ heads(values)).transpose(1, 2).reshape(u, N, H)
    return out.to(qkv.dtype), probs
