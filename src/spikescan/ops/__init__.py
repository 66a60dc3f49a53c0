"""Pure tensor functions with autograd (no ``nn.Module``), time-first ``[T, B, ...]``.

One folder per algorithm with kernels (``lif/``, ``leaky/``, ``spsn/``: the public function,
its sequential ``reference``, the ``fused`` custom ops and their ``numba_kernels`` /
``triton_kernels``), flat files for the ops without kernels.  Every op with several
implementations takes ``backend=``; ``backends(op)`` lists them, ``backends(op, x, ...)`` those
that can run ``x`` (``"auto"`` picks one).  The registry is :mod:`spikescan.ops._backend`.
"""

from ._backend import backends, describe
from .events import SpikeEvents, event_linear
from .firing import gumbel_spike, heaviside, sigmoid_bernoulli
from .single_spike import first_spike, max_membrane_readout, single_spike_lif, single_spike_lif_events
from .leaky import leaky_integrate
from .kernel_integrate import kernel_integrate
from .lif import LIFParameters, LIFStep, lif, lif_step
from .spsn import fused_spsn, spsn_step, spsn_uniforms
from . import psu  # the module: psu/ipsu/rpsu are spikescan.ops.psu.psu, .ipsu, .rpsu

__all__ = [
    "backends", "describe",
    "leaky_integrate", "kernel_integrate",
    "lif", "lif_step", "LIFParameters", "LIFStep",
    "heaviside", "sigmoid_bernoulli", "gumbel_spike",
    "spsn_step", "fused_spsn", "spsn_uniforms",
    "psu",
    "first_spike", "single_spike_lif", "single_spike_lif_events", "max_membrane_readout",
    "SpikeEvents", "event_linear",
]
