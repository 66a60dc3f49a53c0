"""The single-spike LIF step, its sequential loop, and the composed (loop-free) op.

Two references, each the equations of :mod:`spikescan.ops.single_spike` read a different way:

* :func:`single_spike_reference`: a Python loop over :func:`single_spike_step`, a LIF with an
  infinite refractory period after its first spike.  Forward only (no surrogate): it is the
  ground truth for the spikes and membranes.
* :func:`single_spike_composed` / :func:`max_membrane_composed`: FastSNN's own formulation
  (paper eq. 5 and Propositions 1-2), a leaky integration, a Heaviside with a surrogate and
  ``first_spike = g(phi(.))``; autograd through every op (double backward works).  The
  ``"sequential"``, ``"fft"``, ``"chunked"`` and ``"composed"`` backends, whose gradient the
  fused kernels compute.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ... import surrogate as _surrogate
from ..._checks import check_finite, check_time_first, debug_enabled
from ..firing import heaviside
from ..leaky import leaky_integrate

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def phi(spikes: Tensor) -> Tensor:
    """Proposition 1: ``phi(S)[t] = sum_{k<=t} sum_{m<=k} S[m]`` (double cumulative sum over dim 0)."""
    return spikes.cumsum(0).cumsum(0)


def g(z: Tensor) -> Tensor:
    """Proposition 2: ``g(z) = ReLU(z (1 - z) + 1) z``; ``g(0) = 0, g(1) = 1, g(n) = 0`` for integers ``n >= 2``."""
    return F.relu(z * (1.0 - z) + 1.0) * z


class _GStraightThrough(torch.autograd.Function):
    """``g`` in forward, identity in backward."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        return g(z)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:
        return grad_out


def first_spike(spikes: Tensor, *, straight_through: bool = False, check: bool | None = None) -> Tensor:
    """Keep only the first spike of each neuron: ``g(phi(spikes))`` over the time axis (dim 0).

    Args:
        spikes: binary (0/1) floating tensor ``[T, ...]``.  Non-binary values are not rejected
            (that would cost a full pass) unless ``check`` / debug mode is on.
        straight_through: ``g``'s backward becomes the identity (forward unchanged).
        check: also verify that ``spikes`` holds only 0 and 1 (default: debug mode only).

    Returns:
        a tensor like ``spikes`` with at most one 1 per neuron, at its first spike.
        float16/bfloat16 are computed in float32 (the double cumsum reaches ``T (T+1) / 2``).
    """
    check_time_first(spikes, "spikes")
    check_finite(spikes, "spikes", check)
    if check or (check is None and debug_enabled()):
        if not bool(((spikes == 0) | (spikes == 1)).all()):
            raise ValueError("spikes must hold only 0 and 1")
    dtype = spikes.dtype
    s = spikes.float() if dtype in _LOW_PRECISION else spikes
    z = phi(s)
    out = _GStraightThrough.apply(z) if straight_through else g(z)
    return out.to(dtype)


class SingleSpikeParameters(NamedTuple):
    """Parameters of a single-spike LIF neuron, each a float or a tensor broadcastable to the per-step shape.

    Attributes:
        decay: membrane decay per step in ``[0, 1]`` (``exp(-dt / tau)``; the paper's ``beta``).
        threshold: firing threshold (the paper: 1).
        scale: input factor (the paper: ``1 - decay``; the authors' code: 1).
    """

    decay: Tensor | float
    threshold: Tensor | float = 1.0
    scale: Tensor | float = 1.0


class SingleSpikeStep(NamedTuple):
    """What one step returns: the spike ``s[t]``, the membrane ``v[t]`` (never reset) and
    whether the neuron has fired by step ``t`` (the state the next step starts from, with ``v``)."""

    spike: Tensor
    membrane: Tensor
    fired: Tensor


def single_spike_step(x_t: Tensor, v: Tensor, fired: Tensor, p: SingleSpikeParameters) -> SingleSpikeStep:
    """One step of the single-spike LIF (no reset, an infinite refractory period)::

        v[t] = decay * v[t-1] + scale * x[t]
        s[t] = (v[t] >= threshold) and not fired[t-1]
        fired[t] = fired[t-1] or s[t]

    No validation and no surrogate: the forward the fused kernels must reproduce bit for bit
    (``decay * v`` and ``scale * x`` rounded, then their sum).
    """
    v = p.decay * v + p.scale * x_t
    s = (v >= p.threshold) & ~fired
    return SingleSpikeStep(s.to(x_t.dtype), v, fired | s)


def single_spike_reference(x: Tensor, decay: Tensor, threshold: Tensor, scale: Tensor,
                           v0: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(spikes, membrane)`` of :func:`single_spike_step` looped over time (forward only,
    parameters validated by the caller; ``v0=None`` means 0)."""
    p = SingleSpikeParameters(decay, threshold, scale)
    with torch.no_grad():
        v = torch.zeros_like(x[0]) if v0 is None else torch.as_tensor(v0, dtype=x.dtype).expand_as(x[0]).clone()
        fired = torch.zeros(x.shape[1:], dtype=torch.bool, device=x.device)
        spikes, membrane = [], []
        for x_t in x.unbind(0):
            s, v, fired = single_spike_step(x_t, v, fired, p)
            spikes.append(s)
            membrane.append(v)
        return torch.stack(spikes), torch.stack(membrane)


def single_spike_composed(x: Tensor, decay: Tensor, threshold: Tensor, scale: Tensor, v0: Tensor | None, *,
                          surrogate: _surrogate.Surrogate, straight_through: bool, need_membrane: bool = True,
                          leaky_backend: str = "auto") -> tuple[Tensor, Tensor]:
    """FastSNN's formulation, with the membrane by ``leaky_integrate(backend=leaky_backend)``::

        v = leaky_integrate(x, decay, scale, v0)          no reset
        s = first_spike(heaviside(v - threshold, surrogate))

    Arguments validated by :func:`spikescan.ops.single_spike.single_spike_lif` (``scale``
    already ``1 - decay`` where the paper's factor is meant); returns ``(s, v)`` in ``x.dtype``
    (``need_membrane`` is ignored: ``v`` is a graph node anyway).
    """
    v = leaky_integrate(x, decay, scale=scale, v0=v0, backend=leaky_backend)
    s = first_spike(heaviside(v - threshold, surrogate), straight_through=straight_through)
    return s, v


def max_membrane_composed(x: Tensor, decay: Tensor, scale: Tensor, v0: Tensor | None, *,
                          leaky_backend: str = "auto") -> Tensor:
    """``leaky_integrate(x, decay, scale, v0).amax(0)`` (the gradient is ``amax``'s)."""
    return leaky_integrate(x, decay, scale=scale, v0=v0, backend=leaky_backend).amax(dim=0)
