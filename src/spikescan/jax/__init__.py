"""spikescan on JAX: the temporal-parallelization paper's ``snn_jax`` side (optional extra ``spikescan[jax]``).

Pure functions over time-first arrays ``[T, B, ...]`` with the equations and argument names of
:mod:`spikescan.ops` -- :func:`leaky_integrate` (``lax.scan`` and ``lax.associative_scan``),
:func:`lif` (exact LIF with reset, surrogate gradients), :func:`heaviside`,
:func:`sigmoid_bernoulli`, :func:`gumbel_spike` (explicit PRNG keys), :func:`li` -- and Flax NNX
modules mirroring :mod:`spikescan.nn` (``LIF``, ``PLIF``, ``SPSN``, ``LI``, ``SNN`` /
``snn_wrapper``) in :mod:`spikescan.jax.nn`, importable from here too.  NIR export through the
torch side's graph: :mod:`spikescan.jax.export`.
"""

from __future__ import annotations

import importlib.util

_HINT = 'the JAX side needs jax, jaxlib and flax: pip install "spikescan[jax]"'


def available() -> bool:
    """Whether jax and flax can be imported (no import is made)."""
    return all(importlib.util.find_spec(m) is not None for m in ("jax", "flax"))


if importlib.util.find_spec("jax") is None:
    raise ImportError(_HINT)

from .firing import gumbel_spike, heaviside, sigmoid_bernoulli, surrogate_grad  # noqa: E402
from .lif import lif  # noqa: E402
from .scan import leaky_integrate, li  # noqa: E402

_MODULES = ("Decay", "SigmoidDecay", "TimeFirst", "LI", "LIF", "PLIF", "SPSN", "SNN", "snn_wrapper")

__all__ = ["available", "gumbel_spike", "heaviside", "leaky_integrate", "li", "lif", "sigmoid_bernoulli",
           "surrogate_grad", *_MODULES]


def __getattr__(name: str):
    # the modules need flax; the pure functions above need only jax
    if name in _MODULES:
        if importlib.util.find_spec("flax") is None:
            raise ImportError(_HINT)
        from . import nn

        return getattr(nn, name)
    raise AttributeError(f"module 'spikescan.jax' has no attribute {name!r}")
