"""``NRNM``: the drop-in ``torch.nn.LSTM`` replacement with a non-local recurrent memory."""

from __future__ import annotations

import operator
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import checks
from .backends import check_backend_name, layer_function
from .params import BIAS_FIELDS, LSTM_FIELDS, LayerConfig, LayerWeights, init_weight_, layer_shapes
from .state import NRNMState

StateArg = Union[None, tuple[Tensor, Tensor], NRNMState]


class NRNM(nn.Module):
    r"""Non-local Recurrent Neural Memory: an LSTM whose cell is refined by a memory (docs/spec.md).

    Every ``stride`` steps the memory (``num_slots`` rows of size ``hidden_size``) is
    updated from the last ``block_size`` inputs and hidden states by multi-head
    self-attention and a gated recurrent update.

    Args:
        input_size: D, features of the input.
        hidden_size: H, features of the hidden state; divisible by ``num_heads``.
        num_layers: L, stacked layers as in ``nn.LSTM``.
        bias: LSTM-backbone biases ``bias_ih_l*`` / ``bias_hh_l*`` (the memory always has biases).
        batch_first: input and output are (B, T, *) instead of (T, B, *).
        dropout: dropout on the output of every layer but the last, in training.
        block_size: k, hidden states in one memory block.
        stride: s, steps between memory updates, 1 <= s <= k.
        num_slots: N, rows of the memory.
        num_heads: attention heads in the memory update.
        mlp_size: F, hidden features of the memory MLP (default H).
        backend: ``"auto"`` (fastest available for the input's device), ``"reference"``,
            ``"cpu"``, ``"cuda"`` or ``"triton"`` (the Triton attention: on CUDA the ``"cuda"``
            path, on CPU tensors its test under ``TRITON_INTERPRET=1``); see
            :mod:`nrnm_fast.backends`.
        device, dtype: where and how the parameters are created, as for ``nn.LSTM``.

    Shapes: ``forward(input, state=None, lengths=None)`` takes input (T, B, D) (or
    (B, T, D) with ``batch_first``) or a ``PackedSequence``; ``state`` is None,
    ``(h0, c0)`` each (L, B, H), or an :class:`NRNMState`; ``lengths`` (B,) marks the
    valid steps of a padded input. It returns ``(output, (h_n, c_n))`` like ``nn.LSTM``,
    or ``(output, NRNMState)`` when given an NRNMState; output is (T, B, H) (or
    batch-first, or packed like the input) and zero at padded steps.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        block_size: int = 8,
        stride: int = 4,
        num_slots: int = 2,
        num_heads: int = 4,
        mlp_size: Optional[int] = None,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.input_size = checks.positive_int("input_size", input_size)
        self.hidden_size = checks.positive_int("hidden_size", hidden_size)
        self.num_layers = checks.positive_int("num_layers", num_layers)
        self.bias = checks.boolean("bias", bias)
        self.batch_first = checks.boolean("batch_first", batch_first)
        self.dropout = checks.probability("dropout", dropout)
        self.block_size = checks.positive_int("block_size", block_size)
        self.stride = checks.positive_int("stride", stride)
        self.num_slots = checks.positive_int("num_slots", num_slots)
        self.num_heads = checks.positive_int("num_heads", num_heads)
        self.mlp_size = hidden_size if mlp_size is None else checks.positive_int("mlp_size", mlp_size)
        self.backend = check_backend_name(backend)
        if self.stride > self.block_size:
            raise ValueError(f"stride must be <= block_size = {block_size} (1 <= s <= k); got {stride}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size = {hidden_size} must be divisible by num_heads = {num_heads}")

        factory = {"device": device, "dtype": dtype}
        for l in range(self.num_layers):
            D = self.input_size if l == 0 else self.hidden_size
            for name, shape in layer_shapes(D, self.hidden_size, self.num_slots, self.mlp_size).items():
                if name in BIAS_FIELDS and not self.bias:
                    continue
                self.register_parameter(f"{name}_l{l}", nn.Parameter(torch.empty(shape, **factory)))
        self.reset_parameters()

    @property
    def config(self) -> LayerConfig:
        return LayerConfig(self.block_size, self.stride, self.num_heads)

    def reset_parameters(self) -> None:
        """Initialise every parameter as docs/spec.md's parameter table says."""
        for l in range(self.num_layers):
            D = self.input_size if l == 0 else self.hidden_size
            for name in LayerWeights._fields:
                p = getattr(self, f"{name}_l{l}", None)
                if p is not None:
                    init_weight_(name, p, D, self.hidden_size, self.mlp_size)

    def layer_weights(self, l: int) -> LayerWeights:
        """The parameters of layer ``l`` (``bias_ih``/``bias_hh`` are None when bias=False)."""
        names = [f"{name}_l{l}" for name in LayerWeights._fields]
        params = self._parameters
        try:
            # Module.__getattr__ takes ~2 us a name (23 a layer, every call); one lookup of all 23, ~1 us.
            return LayerWeights(*operator.itemgetter(*names)(params))
        except KeyError:  # not all registered parameters: a parametrization, an absent bias
            return LayerWeights(*(params[n] if n in params else getattr(self, n, None) for n in names))

    def flatten_parameters(self) -> None:
        """Does nothing: present so code written for ``nn.LSTM`` runs unchanged (NRNM has no flat weight buffer)."""

    def initial_state(self, batch_size: int, device=None, dtype=None) -> NRNMState:
        """The zero state for ``batch_size`` sequences (default: the parameters' device and dtype)."""
        B = checks.positive_int("batch_size", batch_size)
        ref = self.weight_ih_l0
        opts = {"device": ref.device if device is None else device, "dtype": ref.dtype if dtype is None else dtype}
        L, N, H, k = self.num_layers, self.num_slots, self.hidden_size, self.block_size
        return NRNMState(
            h=torch.zeros(L, B, H, **opts),
            c=torch.zeros(L, B, H, **opts),
            memory=torch.zeros(L, B, N, H, **opts),
            window=torch.zeros(L, B, k, H, **opts),
            ewindow=torch.zeros(L, B, k, H, **opts),
            steps=torch.zeros(B, dtype=torch.int64, device=opts["device"]),
        )

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, **memory_kwargs) -> "NRNM":
        """An NRNM whose backbone copies ``lstm``'s weights and whose ``weight_mc_l*`` are zero.

        Its output and (h, c) then equal ``lstm``'s (the LSTM limit of docs/spec.md).
        ``memory_kwargs`` are the memory's constructor arguments (block_size, stride, ...).
        """
        if not isinstance(lstm, nn.LSTM):
            raise TypeError(f"lstm must be a torch.nn.LSTM; got {type(lstm).__name__}")
        if lstm.bidirectional or lstm.proj_size:
            raise ValueError("lstm must be unidirectional with proj_size=0; NRNM has no equivalent of either")
        ref = lstm.weight_ih_l0
        model = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias, lstm.batch_first,
                    float(lstm.dropout), device=ref.device, dtype=ref.dtype, **memory_kwargs)
        with torch.no_grad():
            for l in range(lstm.num_layers):
                for name in LSTM_FIELDS:
                    if name in BIAS_FIELDS and not lstm.bias:
                        continue
                    getattr(model, f"{name}_l{l}").copy_(getattr(lstm, f"{name}_l{l}"))
                getattr(model, f"weight_mc_l{l}").zero_()
        return model

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return (s + f", block_size={self.block_size}, stride={self.stride}, num_slots={self.num_slots}, "
                f"num_heads={self.num_heads}, mlp_size={self.mlp_size}, backend={self.backend!r}")

    def forward(self, input: Union[Tensor, PackedSequence], state: StateArg = None, lengths=None):
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("lengths must be None when input is a PackedSequence (it carries its lengths)")
            self._check_input_tensor(input.data, "input.data", ndim=2)
            x, lengths = pad_packed_sequence(input)  # (T, B, D), in the caller's batch order
        elif isinstance(input, Tensor):
            self._check_input_tensor(input, "input", ndim=3)
            x = input.transpose(0, 1) if self.batch_first else input
        else:
            raise TypeError(f"input must be a Tensor or a PackedSequence; got {type(input).__name__}")
        T, B, _ = x.shape
        if T < 1 or B < 1:
            raise ValueError(f"input must have at least one step and one sequence; got T={T}, B={B}")
        lengths = checks.lengths_tensor(lengths, T, B, x.device)
        full_state = isinstance(state, NRNMState)
        state = self._state_from_arg(state, x)

        _, layer = layer_function(self.backend, x.device, x.dtype)
        finals = []
        out = x
        for l in range(self.num_layers):
            out, final = layer(out, lengths, state.layer(l), self.layer_weights(l), self.config)
            finals.append(final)
            if self.training and self.dropout > 0 and l < self.num_layers - 1:
                out = F.dropout(out, self.dropout, training=True)
        new_state = NRNMState.stack(finals)

        if packed:
            order = input.sorted_indices
            sorted_out = out if order is None else out.index_select(1, order)
            sorted_lengths = lengths.cpu() if order is None else lengths.cpu()[order.cpu()]
            data = pack_padded_sequence(sorted_out, sorted_lengths, enforce_sorted=True).data
            output = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        else:
            output = out.transpose(0, 1) if self.batch_first else out
        return output, (new_state if full_state else (new_state.h, new_state.c))

    def _check_input_tensor(self, x: Tensor, name: str, ndim: int) -> None:
        layout = "(T, B, D)" if ndim == 3 and not self.batch_first else "(B, T, D)" if ndim == 3 else "(sum(T), D)"
        if x.dim() != ndim:
            raise ValueError(f"{name} must be {ndim}-D {layout}; got {x.dim()}-D of shape {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{name} must have input_size = {self.input_size} features in its last dimension "
                             f"{layout}; got {x.shape[-1]}")
        ref = self.weight_ih_l0
        if x.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but the parameters have {ref.dtype}; "
                            f"convert one of them (e.g. model.to({x.dtype}))")
        if x.device != ref.device:
            raise ValueError(f"{name} is on {x.device} but the parameters are on {ref.device}; move one of them")

    def _state_from_arg(self, state: StateArg, x: Tensor) -> NRNMState:
        """The full NRNMState described by the ``state`` argument, checked against ``x`` (T, B, D)."""
        B = x.shape[1]
        L, N, H, k = self.num_layers, self.num_slots, self.hidden_size, self.block_size
        if state is None:
            return self.initial_state(B, device=x.device, dtype=x.dtype)
        if isinstance(state, NRNMState):
            return NRNMState(
                h=checks.float_tensor("state.h", state.h, (L, B, H), x, "(L, B, H)"),
                c=checks.float_tensor("state.c", state.c, (L, B, H), x, "(L, B, H)"),
                memory=checks.float_tensor("state.memory", state.memory, (L, B, N, H), x, "(L, B, N, H)"),
                window=checks.float_tensor("state.window", state.window, (L, B, k, H), x, "(L, B, k, H)"),
                ewindow=checks.float_tensor("state.ewindow", state.ewindow, (L, B, k, H), x, "(L, B, k, H)"),
                steps=checks.steps_tensor("state.steps", state.steps, B, x.device),
            )
        if isinstance(state, (tuple, list)) and len(state) == 2:
            h0 = checks.float_tensor("state[0] (h0)", state[0], (L, B, H), x, "(L, B, H)")
            c0 = checks.float_tensor("state[1] (c0)", state[1], (L, B, H), x, "(L, B, H)")
            return self.initial_state(B, device=x.device, dtype=x.dtype)._replace(h=h0, c=c0)
        raise TypeError(f"state must be None, a tuple (h0, c0) or an NRNMState; got {type(state).__name__}"
                        + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else ""))
