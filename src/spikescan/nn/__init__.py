"""``torch.nn`` modules over time-first sequences ``[T, B, *features]``.

Rules every module here follows (one shared implementation, :func:`spikescan.nn.base.check_input`):

- **dtype**: every output (spikes, membranes, readout logits) has the dtype of the input ``x``.
  Inside, a module computes in the ops' compute dtype: float32 for float16/bfloat16 input,
  otherwise ``x.dtype``; its parameters (stored in their own dtype, float32 by default) are
  cast to that dtype for the computation, and gradients reach ``x`` and the parameters in their
  own dtypes.  A half input therefore gives the float32 result rounded once, at the end.
- **input**: ``x`` is a floating ``[T, B, ...]`` tensor holding data (not meta), with the
  module's ``features`` in its last dim; an empty batch (``B = 0``) is valid and gives empty
  outputs and zero parameter gradients, on every backend.
- **parameters** are checked once per forward: on ``x``'s device (not meta) and finite, with
  one host sync for all of them; a message names the module and the parameter.
- **state**: every neuron module runs from an optional initial state and returns its final state
  (``forward(x, state=None, *, return_state=False, ...)``, a typed ``NamedTuple`` per neuron in
  :mod:`spikescan.nn.state`); ``module.step(x_t, state)`` runs one step ``[B, ..., features]``.
  A 2-dim input to a sequence call is an error pointing to ``step`` (it would otherwise read the
  batch axis as time).
- **construction**: ``features`` (and IPSU/RPSU's ``T``) is a positive int; a time constant in seconds
  whose decay ``exp(-dt/tau)`` is exactly 0 or 1 in float64 is refused, naming the usable range.
"""

from .base import SpikingNeuron, StatefulModule
from .container import TimeDistributed
from .leaky import LI, LIF, PLIF, RLIF
from .linear import EventLinear
from .psu import IPSU, PSU, RPSU
from .single_spike import MaxMembraneReadout, SingleSpikeKernelLIF, SingleSpikeLIF
from .spsn import SPSN
from .state import LIFState, LIState, MaxMembraneState, PSUState, RLIFState, SingleSpikeState, SPSNState

__all__ = ["EventLinear", "IPSU", "LI", "LIF", "MaxMembraneReadout", "PLIF", "PSU", "RLIF", "RPSU", "SPSN", "SingleSpikeKernelLIF", "SingleSpikeLIF",
           "SpikingNeuron", "StatefulModule", "TimeDistributed",
           "LIFState", "LIState", "MaxMembraneState", "PSUState", "RLIFState", "SingleSpikeState", "SPSNState"]
