"""Recurrent state of an NRNM: the whole stack (:class:`NRNMState`) and one layer (:class:`LayerState`)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.utils._pytree as pytree
from torch import Tensor


class LayerState(NamedTuple):
    """State of one layer; B batch, H hidden, N slots, k block size.

    h (B, H), c (B, H), memory (B, N, H), window (B, k, H) last hidden states,
    ewindow (B, k, H) last input embeddings (both oldest first), steps (B,) int64
    steps consumed so far. The valid rows of the windows are the last min(k, steps).
    """

    h: Tensor
    c: Tensor
    memory: Tensor
    window: Tensor
    ewindow: Tensor
    steps: Tensor


class NRNMState(NamedTuple):
    """State of an L-layer NRNM, carried between calls for streaming / truncated BPTT.

    h (L, B, H), c (L, B, H), memory (L, B, N, H), window (L, B, k, H),
    ewindow (L, B, k, H), steps (B,) int64 (all layers consume the same steps).
    """

    h: Tensor
    c: Tensor
    memory: Tensor
    window: Tensor
    ewindow: Tensor
    steps: Tensor

    def detach(self) -> "NRNMState":
        """The same state cut from the autograd graph (truncated backpropagation through time)."""
        return NRNMState(*(t.detach() for t in self))

    def layer(self, l: int) -> LayerState:
        """The state of layer ``l``."""
        return LayerState(self.h[l], self.c[l], self.memory[l], self.window[l], self.ewindow[l], self.steps)

    @staticmethod
    def stack(layers: list[LayerState]) -> "NRNMState":
        """Stack per-layer states (which share ``steps``) into one NRNMState.

        One layer's tensors become views (L = 1) instead of copies: streaming a step at a time,
        five stacks were ~20 us of a ~400 us call.
        """
        if len(layers) == 1:
            s = layers[0]
            return NRNMState(*(t.unsqueeze(0) for t in s[:5]), s.steps)
        return NRNMState(
            *(torch.stack([getattr(s, f) for s in layers]) for f in ("h", "c", "memory", "window", "ewindow")),
            layers[-1].steps,
        )


# torch.export.save and AOTInductor packages name the class of every pytree node of a graph's inputs
# and outputs in their files, and a NamedTuple's only under a registered name: without it, a
# program taking or returning the state (a streamed step) cannot be saved or packaged.
pytree._register_namedtuple(NRNMState, serialized_type_name="nrnm_fast.NRNMState")
# torch.load (weights_only=True, its default) then unpickles a saved state, or a saved program's
# example inputs, only from allowed classes; NRNMState holds tensors and nothing else.
torch.serialization.add_safe_globals([NRNMState])
