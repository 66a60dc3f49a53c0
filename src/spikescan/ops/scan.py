"""Deprecated alias of :mod:`spikescan.ops.leaky` (the leaky integration moved there); removed in 0.3."""

import warnings

from .leaky import leaky_integrate  # noqa: F401

warnings.warn("spikescan.ops.scan is deprecated: import leaky_integrate from spikescan.ops (or spikescan.ops.leaky)",
              DeprecationWarning, stacklevel=2)

__all__ = ["leaky_integrate"]
