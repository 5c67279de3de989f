"""Reference NRNM layer: docs/spec.md transcribed step by step in plain PyTorch.

This is the definition every fast path is tested against, so it favours
obviousness over speed: one Python iteration per time step, the full
self-attention over every token of the memory block, and per-element masks
(``active`` for variable lengths, ``update`` for the elements whose global step
is a multiple of the stride, ``valid`` for the block rows that exist at the
start of a sequence).

Shapes: T time steps, B batch, D input features, H hidden, N memory slots,
k block size, nh heads, dh = H / nh.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .params import LAYER_NORM_EPS, LayerConfig, LayerWeights
from .state import LayerState


def memory_update(
    memory: Tensor, window: Tensor, ewindow: Tensor, steps: Tensor, w: LayerWeights, num_heads: int
) -> Tensor:
    """The new memory M' computed from a memory block (docs/spec.md, "Memory update").

    Args:
        memory: (B, N, H) current memory M.
        window: (B, k, H) last k hidden states, oldest first, the newest h' last.
        ewindow: (B, k, H) last k input embeddings, oldest first.
        steps: (B,) int64 global step tau of each element (>= 1); the block holds
            its last w = min(k, tau) rows.
        w: the layer's weights.
        num_heads: attention heads nh.

    Returns:
        (B, N, H) the updated memory M'.
    """
    B, N, H = memory.shape
    k = window.shape[1]
    dh = H // num_heads

    # valid[b, j]: row j of the block exists, i.e. j >= k - min(k, tau).
    n_valid = torch.clamp(steps, max=k)  # (B,)
    valid = torch.arange(k, device=steps.device)[None, :] >= (k - n_valid)[:, None]  # (B, k)

    Z = torch.cat([memory, ewindow, window], dim=1)  # (B, N + 2k, H)
    key_valid = torch.cat([valid.new_ones(B, N), valid, valid], dim=1)  # memory rows always exist

    Q, K, V = F.linear(Z, w.attn_in_weight, w.attn_in_bias).chunk(3, dim=-1)  # each (B, N + 2k, H)
    Q, K, V = (x.reshape(B, -1, num_heads, dh).transpose(1, 2) for x in (Q, K, V))  # (B, nh, N + 2k, dh)
    scores = Q @ K.transpose(-1, -2) / math.sqrt(dh)  # (B, nh, N + 2k, N + 2k)
    scores = scores.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    A = torch.softmax(scores, dim=-1) @ V  # (B, nh, N + 2k, dh)
    A = A.transpose(1, 2).reshape(B, -1, H)  # heads concatenated

    Y = F.layer_norm(Z + F.linear(A, w.attn_out_weight, w.attn_out_bias), (H,), w.norm1_weight, w.norm1_bias,
                     LAYER_NORM_EPS)
    mlp = F.linear(torch.relu(F.linear(Y, w.mlp1_weight, w.mlp1_bias)), w.mlp2_weight, w.mlp2_bias)
    Y = F.layer_norm(Y + mlp, (H,), w.norm2_weight, w.norm2_bias, LAYER_NORM_EPS)
    Mt = Y[:, :N]  # candidate memory (B, N, H)

    xh = (ewindow * valid[..., None]).sum(dim=1) / n_valid[:, None]  # (B, H) mean of the valid embeddings
    gates = torch.sigmoid(F.linear(xh[:, None, :], w.gate_x_weight) + F.linear(torch.tanh(memory), w.gate_m_weight)
                          + w.gate_bias)
    ig, fg = gates.chunk(2, dim=-1)  # each (B, N, H)
    return ig * torch.tanh(Mt) + fg * memory


def nrnm_layer(
    x: Tensor, lengths: Optional[Tensor], state: LayerState, w: LayerWeights, config: LayerConfig
) -> tuple[Tensor, LayerState]:
    """Run one NRNM layer over a sequence.

    Args:
        x: (T, B, D) input, time-major.
        lengths: (B,) int64 valid steps per element, each in 1..T, or None for all T.
            An element is inactive at t >= lengths[b]: its state is kept and its output is 0.
        state: the layer's state before the first step (see :class:`LayerState`).
        w: the layer's weights.
        config: block size, stride and heads.

    Returns:
        output (T, B, H): h' at every step (0 where inactive), and the state after
        each element's last valid step.
    """
    T, B, _ = x.shape
    s = config.stride
    h, c, M, window, ewindow, steps = state
    N, H = M.shape[1], M.shape[2]
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.int64, device=x.device)
    active = torch.arange(T, device=x.device)[:, None] < lengths.to(x.device)[None, :]  # (T, B)

    outputs = []
    for t in range(T):
        x_t = x[t]  # (B, D)
        act = active[t][:, None]  # (B, 1)
        m = M.reshape(B, N * H)

        a = F.linear(x_t, w.weight_ih, w.bias_ih) + F.linear(h, w.weight_hh, w.bias_hh)  # (B, 4H)
        i, f, g, o = a.chunk(4, dim=1)
        r = torch.sigmoid(F.linear(x_t, w.weight_xr) + F.linear(m, w.weight_mr) + w.bias_r)  # (B, N*H)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g) + F.linear(r * m, w.weight_mc)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)

        e_t = F.linear(x_t, w.input_proj_weight, w.input_proj_bias)  # (B, H) input embedding
        window_new = torch.cat([window[:, 1:], h_new[:, None]], dim=1)
        ewindow_new = torch.cat([ewindow[:, 1:], e_t[:, None]], dim=1)
        steps_new = steps + 1

        update = act[:, 0] & (steps_new % s == 0)  # (B,) elements that update their memory now
        if M.is_meta or bool(update.any()):  # meta tensors (shape inference) hold no values to test
            M_new = memory_update(M, window_new, ewindow_new, steps_new, w, config.num_heads)
            M = torch.where(update[:, None, None], M_new, M)

        h = torch.where(act, h_new, h)
        c = torch.where(act, c_new, c)
        window = torch.where(act[:, :, None], window_new, window)
        ewindow = torch.where(act[:, :, None], ewindow_new, ewindow)
        steps = torch.where(act[:, 0], steps_new, steps)
        outputs.append(torch.where(act, h_new, torch.zeros_like(h_new)))

    return torch.stack(outputs), LayerState(h, c, M, window, ewindow, steps)
