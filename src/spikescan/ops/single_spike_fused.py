"""Deprecated: the fused FastSNN ops moved to :mod:`spikescan.ops.single_spike.fused`; removed in 0.3.

``single_spike_backend``, ``readout_backend`` and ``single_spike_events_backend`` are
``single_spike_fused``, ``max_membrane_fused`` and ``single_spike_events_fused`` there (custom ops
that ``torch.compile`` traces); whether the kernel runs an input is
``"fused" in spikescan.ops.backends("single_spike_lif", x, surrogate=...)``.
"""

import warnings

import torch

from ._backend import backends, kernels_unavailable
from .single_spike.fused import check_device  # noqa: F401
from .single_spike.fused import max_membrane_fused as readout_backend  # noqa: F401
from .single_spike.fused import single_spike_events_fused as single_spike_events_backend  # noqa: F401
from .single_spike.fused import single_spike_fused as single_spike_backend  # noqa: F401

warnings.warn("spikescan.ops.single_spike_fused is deprecated: use spikescan.ops.single_spike "
              "(backend='fused', or spikescan.ops.single_spike.fused for the custom ops)", DeprecationWarning,
              stacklevel=2)

__all__ = ["single_spike_backend", "readout_backend", "single_spike_events_backend", "supports_single_spike",
           "check_device", "is_available"]


def is_available(device) -> bool:
    """Whether the fused kernels can run on ``device``."""
    return kernels_unavailable(torch.device(device)) is None


def supports_single_spike(x, surrogate) -> bool:
    """Whether ``backend="auto"`` runs the fused kernel for ``x`` with ``surrogate`` (``None``: the readout)."""
    op, context = ("max_membrane_readout", {}) if surrogate is None else ("single_spike_lif", {"surrogate": surrogate})
    return x.device.type == "cpu" and "fused" in backends(op, x, **context)
