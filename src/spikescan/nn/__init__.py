"""``torch.nn`` modules over time-first sequences ``[T, B, *features]``."""

from .base import SpikingNeuron
from .container import TimeDistributed
from .leaky import LI, LIF, PLIF, RLIF
from .psu import IPSU, PSU, RPSU
from .single_spike import MaxMembraneReadout, SingleSpikeLIF
from .spsn import SPSN

__all__ = ["IPSU", "LI", "LIF", "MaxMembraneReadout", "PLIF", "PSU", "RLIF", "RPSU", "SPSN", "SingleSpikeLIF",
           "SpikingNeuron", "TimeDistributed"]
