"""The layer with its memory update's attention in Triton: the ``"cuda"`` and ``"triton"`` backends.

The attention ops' schemas live in C++ (csrc/triton_attention.cpp), whose layer calls them
through the dispatcher once per memory update, so the time loop stays in C++. Importing this
module registers the Triton launchers of kernels/block_attention.py as the ops' CUDA kernels,
and as their CPU kernels, which run in Triton's interpreter (``TRITON_INTERPRET=1``): the whole
GPU layer but its element-wise step kernels is then exercised on CPU tensors.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import layer_ops
from .kernels import block_attention
from .params import LayerConfig, LayerWeights
from .state import LayerState

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


def triton_layer(
    x: Tensor, lengths: Optional[Tensor], state: LayerState, w: LayerWeights, config: LayerConfig
) -> tuple[Tensor, LayerState]:
    """One layer with the C++ op and the memory update's attention in Triton: the GPU path, and on CPU
    tensors under ``TRITON_INTERPRET=1`` its test. See :func:`nrnm_fast.reference.nrnm_layer`.

    Raises ValueError when the block or the memory exceeds the kernels' tiles (``launch_config``).
    """
    _, N, H = state.memory.shape
    block_attention.launch_config(N, config.block_size, H // config.num_heads)
    return layer_ops.run_layer(x, lengths, state, w, config, triton_attention=True)
