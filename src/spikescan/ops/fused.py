"""Deprecated: the fused kernels moved into their ops' packages; removed in 0.3.

``lif_fused`` is :func:`spikescan.ops.lif.lif_fused`, ``leaky_integrate_fused`` is
``leaky_integrate(..., backend="fused")``, ``fused_spsn`` / ``spsn_uniforms`` live in
:mod:`spikescan.ops.spsn`, and whether the kernels can run is ``spikescan.ops.backends(op, x)``.
"""

import warnings

import torch

from ._backend import kernels_unavailable
from .leaky import leaky_integrate
from .lif import lif_fused  # noqa: F401

warnings.warn("spikescan.ops.fused is deprecated: use backend='fused' of spikescan.ops.lif / leaky_integrate, "
              "and spikescan.ops.spsn for fused_spsn", DeprecationWarning, stacklevel=2)

__all__ = ["lif_fused", "leaky_integrate_fused", "fused_spsn", "spsn_uniforms", "is_available"]


def is_available(device="cpu") -> bool:
    """Whether the fused kernels can run on ``device``."""
    return kernels_unavailable(torch.device(device)) is None


def leaky_integrate_fused(x, decay, *, scale=1.0, v0=None, chunk_size=None, check=None):
    """``leaky_integrate(..., backend="fused")``."""
    return leaky_integrate(x, decay, scale=scale, v0=v0, backend="fused", check=check)


def __getattr__(name):
    if name in ("fused_spsn", "spsn_uniforms"):
        from . import spsn

        return getattr(spsn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
