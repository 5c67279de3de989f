"""nrnm_fast: Non-local Recurrent Neural Memory (NRNM) as a drop-in replacement for ``torch.nn.LSTM``."""

from .backends import available_backends
from .module import NRNM
from .params import LayerConfig, LayerWeights
from .state import LayerState, NRNMState

__all__ = ["NRNM", "NRNMState", "LayerState", "LayerWeights", "LayerConfig", "available_backends"]
__version__ = "0.1.0"
