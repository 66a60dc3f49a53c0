"""Shared pieces of the module layer: time-constant parameterisation and the spiking-neuron marker."""

from __future__ import annotations

import math

import torch
from torch import nn


class SpikingNeuron(nn.Module):
    """Marker base class for modules whose output is a spike train ``[T, B, *features]``.

    :func:`spikescan.train.record_spikes` finds every instance in a model to collect the spikes
    that the spike-rate regulariser and the spike-count metrics need.
    """


def decay_from_tau(tau: float, dt: float, name: str = "tau") -> float:
    """``exp(-dt / tau)``: the per-step decay of a leak with time constant ``tau`` (Euler, SPSN eq. 5)."""
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"{name} must be a positive finite number of seconds, got {tau!r}")
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number of seconds, got {dt!r}")
    return math.exp(-dt / tau)


class Decay(nn.Module):
    """A decay factor ``exp(-dt/tau)``, fixed or learnable per neuron.

    Learnable decays are stored as ``log(tau)`` per neuron so the decay stays in (0, 1) under any
    update; fixed ones are a plain float so that fast paths can specialise on a scalar.
    """

    def __init__(self, features: int, tau: float, dt: float, learn: bool = False, name: str = "tau"):
        super().__init__()
        self.dt = float(dt)
        self.learn = bool(learn)
        self._value = decay_from_tau(tau, dt, name)
        self._tau = float(tau)
        if self.learn:
            self.log_tau = nn.Parameter(torch.full((features,), math.log(tau)))

    def forward(self) -> torch.Tensor | float:
        if self.learn:
            return torch.exp(-self.dt / torch.exp(self.log_tau))
        return self._value

    def extra_repr(self) -> str:
        return f"tau={self._tau}, dt={self.dt}, learn={self.learn}"
