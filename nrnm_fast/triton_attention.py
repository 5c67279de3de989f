"""Kernels of the ops ``nrnm_fast::block_attention_forward`` / ``_backward`` from the Triton launchers.

The ops' schemas live in C++ (csrc/triton_attention.cpp), whose layer calls them through the
dispatcher once per memory update, so the time loop stays in C++. Importing this module
registers their CUDA kernels, and their CPU kernels, which run the Triton kernels in Triton's
interpreter (``TRITON_INTERPRET=1``): the whole GPU layer but the element-wise step kernels is
then exercised on CPU tensors.
"""

from __future__ import annotations

import torch

from . import layer_ops  # noqa: F401  (loads the extension that defines the ops' schemas)
from .kernels import block_attention

_lib = torch.library.Library("nrnm_fast", "IMPL")
for _device in ("CPU", "CUDA"):
    _lib.impl("block_attention_forward", block_attention.block_attention_forward, _device)
    _lib.impl("block_attention_backward", block_attention.block_attention_backward, _device)


@torch.library.register_fake("nrnm_fast::block_attention_forward")
def _forward_fake(qkv, kv_emb, kv_hid, elems, n_valid, t, block_size, num_heads):
    u, N, H = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    probs = qkv.new_empty(u, num_heads, N, N + 2 * block_size, dtype=block_attention.compute_dtype(qkv.dtype))
    return qkv.new_empty(u, N, H), probs


@torch.library.register_fake("nrnm_fast::block_attention_backward")
def _backward_fake(qkv, kv_emb, kv_hid, elems, n_valid, t, block_size, num_heads, probs, d_out):
    u, H = qkv.shape[0], qkv.shape[2] // 3
    return torch.empty_like(qkv), qkv.new_empty(u, block_size, 2 * H), qkv.new_empty(u, block_size, 2 * H)
