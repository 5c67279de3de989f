"""The fast paths' layer ops ``torch.ops.nrnm_fast.layer_forward`` / ``layer_backward``.

Importing this module loads the extension ``nrnm_fast._C`` (which registers the
ops' schemas and their CPU kernels, and CUDA kernels when built with CUDA) and
registers their fake kernels and autograd formula, so that ``torch.compile``
traces them and ``torch.library.opcheck`` can test them. :func:`cpu_layer` has the
signature of every backend (:func:`nrnm_fast.triton_attention.triton_layer` too).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _C  # noqa: F401  (registers the ops)
from .params import LayerConfig, LayerWeights
from .state import LayerState

_ops = torch.ops.nrnm_fast


def pack_weights(w: LayerWeights) -> list[Tensor]:
    """The op's 24 weight tensors (csrc/layer.h ``LayerWeights``) from one layer's parameters.

    The parameters themselves, but for the gates' bias b_ih + b_hh. (A stacked input weight
    would be one GEMM instead of three, but a fresh copy of 7 H x D floats every call: with its
    page faults, ~40% of a streamed step at H = 512.)
    """
    if w.bias_ih is None:
        lstm_bias = w.weight_ih.new_zeros(w.weight_ih.shape[0])
    else:
        lstm_bias = w.bias_ih + w.bias_hh
    return [
        w.weight_ih, w.weight_xr, w.input_proj_weight, lstm_bias, w.bias_r, w.input_proj_bias,
        w.weight_hh, w.weight_mr, w.weight_mc,
        w.attn_in_weight, w.attn_in_bias, w.attn_out_weight, w.attn_out_bias,
        w.norm1_weight, w.norm1_bias, w.mlp1_weight, w.mlp1_bias, w.mlp2_weight, w.mlp2_bias,
        w.norm2_weight, w.norm2_bias, w.gate_x_weight, w.gate_m_weight, w.gate_bias,
    ]


@torch.compiler.assume_constant_result
def _cpu_threads() -> int:
    # A compiled graph keeps the count it was traced with: the shard count changes speed, never results.
    return torch.get_num_threads()


def batch_shards(x: Tensor, triton_attention: bool) -> int:
    """How many batch shards the op runs in parallel (csrc/batch_shards.h): one per CPU thread.

    The op takes at most B of them; the count does not depend on B, so that a graph traced with a
    symbolic batch size (a ``torch.export.Dim``) holds no guard on it. One on CUDA, and with
    Triton's attention on CPU tensors (its interpreter runs in Python).
    """
    if x.device.type != "cpu" or triton_attention:
        return 1
    return max(1, _cpu_threads())


def run_layer(
    x: Tensor, lengths: Optional[Tensor], state: LayerState, w: LayerWeights, config: LayerConfig,
    triton_attention: bool,
) -> tuple[Tensor, LayerState]:
    """One layer with the C++ op; ``triton_attention`` runs the memory update's attention in Triton."""
    if torch._C._are_functorch_transforms_active():
        # torch.func.jvp ran the op on the primal values alone: the tangents came out zero.
        raise RuntimeError(
            "nrnm_fast: the fast backends do not support torch.func transforms (grad, vmap, jvp, jacrev, ...); "
            "use backend='reference' under them"
        )
    T, B, _ = x.shape
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.int64, device=x.device)
    weights = pack_weights(w)
    # Inference (no_grad, or nothing that needs a gradient) keeps none of what only the backward reads.
    for_backward = torch.is_grad_enabled() and any(t.requires_grad for t in (x, *state, *weights))
    args = (x, lengths.to(x.device), *state, weights, *config, triton_attention, for_backward,
            batch_shards(x, triton_attention))
    if for_backward or torch.compiler.is_compiling():
        out = _ops.layer_forward(*args)
    else:
        # Nothing to record: skip the autograd kernel, a Python wrapper of ~25 us a call.
        with torch._C._AutoDispatchBelowAutograd():
            out = _ops.layer_forward(*args)
    return out[0], LayerState(*out[1:7])


def cpu_layer(
    x: Tensor, lengths: Optional[Tensor], state: LayerState, w: LayerWeights, config: LayerConfig
) -> tuple[Tensor, LayerState]:
    """One layer with the C++ op and the device's own attention; see :func:`nrnm_fast.reference.nrnm_layer`."""
    return run_layer(x, lengths, state, w, config, triton_attention=False)


@torch.library.register_fake("nrnm_fast::layer_forward")
def _layer_forward_fake(x, lengths, h0, c0, memory0, window0, ewindow0, steps0, weights, block_size, stride,
                        num_heads, triton_attention, for_backward, batch_shards):
    T, B, _ = x.shape
    N, H = memory0.shape[1], memory0.shape[2]
    # csrc/schedule.h Schedule::saved_update_rows: never 1, so a symbolic T makes no guard on it
    k, update_rows = block_size, (T + stride - 1) // stride + 1
    new = x.new_empty
    F = weights[15].shape[0]  # mlp1_weight's rows
    if for_backward:
        cells, gates, r = new(T, B, H), new(T, B, 4 * H), new(T, B, N * H)
        # kept's rows: csrc/memory_update.h KeptUpdate::width(H, F), attn | y1_in | hid | y2_in | gates
        kept, memories = new(update_rows, B, N, 5 * H + F), new(update_rows, B, N, H)
    else:
        cells, gates, r, kept, memories = new(0), new(0), new(0), new(0), new(0)
    return (new(T, B, H), new(B, H), new(B, H), new(B, N, H), new(B, k, H), new(B, k, H), steps0.new_empty(B),
            new(k + T, B, H), new(k + T, B, H), cells, gates, r, kept, memories)


@torch.library.register_fake("nrnm_fast::layer_backward")
def _layer_backward_fake(grad_output, grad_h, grad_c, grad_memory, grad_window, grad_ewindow, x, lengths, h0, c0,
                         steps0, h_line, e_line, cells, gates, r, kept, memories, weights, block_size, stride,
                         num_heads, triton_attention, input_grad, batch_shards):
    B, N, H = memories.shape[1], memories.shape[2], memories.shape[3]
    k = block_size
    grad_x = torch.empty_like(x) if input_grad else x.new_empty(0)
    return (grad_x, torch.empty_like(h0), torch.empty_like(c0), h0.new_empty(B, N, H),
            h0.new_empty(B, k, H), h0.new_empty(B, k, H), [torch.empty_like(w) for w in weights])


def _setup_context(ctx, inputs, output):
    (x, lengths, h0, c0, _memory0, _window0, _ewindow0, steps0, weights, block_size, stride, num_heads, triton,
     for_backward, shards) = inputs
    if not for_backward:
        raise RuntimeError("nrnm_fast.layer_forward: call it with for_backward=True when a gradient is needed")
    ctx.config = (block_size, stride, num_heads, triton, shards)  # the saved tensors' layout depends on shards
    # Outputs without a gradient (the saved tensors always, often the final state) come to the
    # backward as None, not as zeros of their shape: at T128-B64-H512 those zeros were 128 MB.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, lengths, h0, c0, steps0, *output[7:], *weights)


def _backward(ctx, grad_output, grad_h, grad_c, grad_memory, grad_window, grad_ewindow, *_unused):
    x, lengths, h0, c0, steps0, h_line, e_line, cells, gates, r, kept, memories, *weights = ctx.saved_tensors
    B, N, H = memories.shape[1], memories.shape[2], memories.shape[3]
    k = ctx.config[0]

    def zeros_if_none(g, *shape):
        return g if g is not None else x.new_zeros(shape)

    T = x.shape[0]
    block_size, stride, num_heads, triton, shards = ctx.config
    input_grad = ctx.needs_input_grad[0]  # the first layer's input usually needs none: its GEMM is skipped
    grads = _ops.layer_backward(
        zeros_if_none(grad_output, T, B, H), zeros_if_none(grad_h, B, H), zeros_if_none(grad_c, B, H),
        zeros_if_none(grad_memory, B, N, H), zeros_if_none(grad_window, B, k, H),
        zeros_if_none(grad_ewindow, B, k, H), x, lengths, h0, c0, steps0, h_line, e_line, cells, gates, r, kept,
        memories, weights, block_size, stride, num_heads, triton, input_grad, shards)
    grad_x, grad_h0, grad_c0, grad_memory0, grad_window0, grad_ewindow0, grad_weights = grads
    return (grad_x if input_grad else None, None, grad_h0, grad_c0, grad_memory0, grad_window0, grad_ewindow0, None,
            list(grad_weights), None, None, None, None, None, None)


torch.library.register_autograd("nrnm_fast::layer_forward", _backward, setup_context=_setup_context)


def _backward_of_backward(ctx, *_grads):
    # Without a formula of its own, autograd treated layer_backward as a constant (with only a
    # warning): a gradient penalty through create_graph=True came out silently wrong.
    raise RuntimeError(
        "nrnm_fast: the fast backends' backward is not differentiable (double backward, e.g. a gradient "
        "penalty through create_graph=True); use backend='reference' for second derivatives"
    )


torch.library.register_autograd("nrnm_fast::layer_backward", _backward_of_backward)
