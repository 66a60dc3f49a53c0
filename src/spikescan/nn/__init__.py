"""``torch.nn`` modules over time-first sequences ``[T, B, *features]``."""

from .base import SpikingNeuron
from .container import TimeDistributed
from .leaky import LI, LIF, PLIF
from .spsn import SPSN

__all__ = ["LI", "LIF", "PLIF", "SPSN", "SpikingNeuron", "TimeDistributed"]
