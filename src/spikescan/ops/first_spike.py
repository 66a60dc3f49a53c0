"""FastSNN's single-spike neurons under their first name: :mod:`spikescan.ops.single_spike`.

The ops (``single_spike_lif``, ``single_spike_lif_events``, ``max_membrane_readout``), the
first-spike extraction (``phi``, ``g``, ``first_spike``), the equations and the backends live in
:mod:`spikescan.ops.single_spike`; this module re-exports them (no deprecation: it is the name
the tests, ``nn`` and user code import).
"""

from .single_spike import (BACKENDS, DEFAULT_SURROGATE, _single_spike_lif_sequential, first_spike, g,
                           max_membrane_readout, phi, single_spike_lif, single_spike_lif_events)

__all__ = [
    "phi",
    "g",
    "first_spike",
    "single_spike_lif",
    "single_spike_lif_events",
    "max_membrane_readout",
    "DEFAULT_SURROGATE",
    "BACKENDS",
]
