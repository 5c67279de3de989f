"""Per-layer parameters of an NRNM layer: hyper-parameters, weight names, shapes, init (docs/spec.md).

Every implementation takes one layer's weights as a :class:`LayerWeights`; the
module stores them flat as ``<field>_l<layer>``, which gives the state_dict
names of SPEC.md (the first four coincide with ``torch.nn.LSTM``'s).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor


LAYER_NORM_EPS = 1e-5


class LayerConfig(NamedTuple):
    """Hyper-parameters of the memory that the weights' shapes do not carry."""

    block_size: int  # k: steps in one memory block
    stride: int  # s: steps between memory updates
    num_heads: int  # attention heads; head size H / num_heads


class LayerWeights(NamedTuple):
    """One layer's weights. Shapes use D (layer input), H (hidden), N (slots), F (MLP)."""

    weight_ih: Tensor  # (4H, D)   LSTM input weights, gates i, f, g, o
    weight_hh: Tensor  # (4H, H)   LSTM recurrent weights
    bias_ih: Optional[Tensor]  # (4H,) or None when bias=False
    bias_hh: Optional[Tensor]  # (4H,) or None when bias=False
    weight_xr: Tensor  # (N*H, D)  memory gate, input part
    weight_mr: Tensor  # (N*H, N*H) memory gate, memory part
    bias_r: Tensor  # (N*H,)
    weight_mc: Tensor  # (H, N*H)  memory term of the cell
    input_proj_weight: Tensor  # (H, D)  W_x: input embedding
    input_proj_bias: Tensor  # (H,)
    attn_in_weight: Tensor  # (3H, H)  rows q, k, v
    attn_in_bias: Tensor  # (3H,)
    attn_out_weight: Tensor  # (H, H)
    attn_out_bias: Tensor  # (H,)
    norm1_weight: Tensor  # (H,)
    norm1_bias: Tensor  # (H,)
    mlp1_weight: Tensor  # (F, H)
    mlp1_bias: Tensor  # (F,)
    mlp2_weight: Tensor  # (H, F)
    mlp2_bias: Tensor  # (H,)
    norm2_weight: Tensor  # (H,)
    norm2_bias: Tensor  # (H,)
    gate_x_weight: Tensor  # (2H, H)  rows: input gate, forget gate
    gate_m_weight: Tensor  # (2H, H)
    gate_bias: Tensor  # (2H,)


LSTM_FIELDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
BIAS_FIELDS = ("bias_ih", "bias_hh")


def layer_shapes(D: int, H: int, N: int, F: int) -> dict[str, tuple[int, ...]]:
    """Shape of every :class:`LayerWeights` field for one layer."""
    NH = N * H
    return {
        "weight_ih": (4 * H, D),
        "weight_hh": (4 * H, H),
        "bias_ih": (4 * H,),
        "bias_hh": (4 * H,),
        "weight_xr": (NH, D),
        "weight_mr": (NH, NH),
        "bias_r": (NH,),
        "weight_mc": (H, NH),
        "input_proj_weight": (H, D),
        "input_proj_bias": (H,),
        "attn_in_weight": (3 * H, H),
        "attn_in_bias": (3 * H,),
        "attn_out_weight": (H, H),
        "attn_out_bias": (H,),
        "norm1_weight": (H,),
        "norm1_bias": (H,),
        "mlp1_weight": (F, H),
        "mlp1_bias": (F,),
        "mlp2_weight": (H, F),
        "mlp2_bias": (H,),
        "norm2_weight": (H,),
        "norm2_bias": (H,),
        "gate_x_weight": (2 * H, H),
        "gate_m_weight": (2 * H, H),
        "gate_bias": (2 * H,),
    }


@torch.no_grad()
def init_weight_(name: str, tensor: Tensor, D: int, H: int, F: int) -> None:
    """Initialise the field ``name`` in place as SPEC.md's parameter table says."""
    if name == "gate_bias":
        tensor[:H].zero_()  # input gate starts half open
        tensor[H:].fill_(1.0)  # forget gate starts mostly keeping the memory
    elif name in ("norm1_weight", "norm2_weight"):
        tensor.fill_(1.0)
    elif name in ("bias_ih", "bias_hh"):
        tensor.uniform_(-1.0 / math.sqrt(H), 1.0 / math.sqrt(H))
    elif "bias" in name:
        tensor.zero_()
    elif name == "input_proj_weight":
        tensor.uniform_(-1.0 / math.sqrt(D), 1.0 / math.sqrt(D))
    elif name == "mlp2_weight":
        tensor.uniform_(-1.0 / math.sqrt(F), 1.0 / math.sqrt(F))
    else:
        tensor.uniform_(-1.0 / math.sqrt(H), 1.0 / math.sqrt(H))
