"""Leaky integrate (LI, readout) and leaky integrate-and-fire (LIF, PLIF) layers."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import surrogate as surrogate_lib
from .._checks import check_choice, check_time_first
from ..ops.lif import lif
from ..ops.scan import leaky_integrate
from .base import Decay, SpikingNeuron, decay_from_tau


def _check_features(x: torch.Tensor, features: int) -> None:
    check_time_first(x, "x", min_dim=2)
    if x.shape[-1] != features:
        raise ValueError(f"x must have {features} features in its last dim, got shape {tuple(x.shape)}")


class LI(nn.Module):
    """Non-spiking leaky integrator, the readout of SPSN networks (SPSN, Zhang et al., eq. 5, 7).

    ``i[t] = a i[t-1] + x[t]``, ``u[t] = b u[t-1] + (1-b) i[t]``; returns the membrane ``u``
    ``[T, B, *, features]``.  ``tau_syn=None`` drops the current stage (``i = x``).
    """

    def __init__(self, features: int, tau_syn: float | None = 0.02, tau_mem: float = 0.02,
                 dt: float = 1e-3, learn_tau: bool = False, backend: str = "auto"):
        super().__init__()
        self.features = int(features)
        self.backend = backend
        self.syn = Decay(features, tau_syn, dt, learn_tau, "tau_syn") if tau_syn is not None else None
        self.mem = Decay(features, tau_mem, dt, learn_tau, "tau_mem")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.features)
        current = x if self.syn is None else leaky_integrate(x, self.syn(), backend=self.backend)
        b = self.mem()
        return leaky_integrate(current, b, scale=1.0 - b, backend=self.backend)


class LIF(SpikingNeuron):
    """Leaky integrate-and-fire with reset, exact (computed step by step or by a time-fused kernel).

    With ``a = exp(-dt/tau_syn)``, ``b = exp(-dt/tau_mem)`` (SPSN eq. 5-6 with a reset)::

        i[t] = a i[t-1] + x[t]                      (skipped when tau_syn is None)
        v[t] = b v'[t-1] + (1 - b) i[t]
        s[t] = H(v[t] - threshold)                   surrogate gradient in backward
        v'[t] = v[t] (1 - s[t]) + v_reset s[t]       reset="zero"   (SPSN LIF baseline)
        v'[t] = v[t] - threshold s[t]                reset="subtract"

    ``input_scale="one_minus_decay"`` applies the ``(1 - b)`` factor above; ``1.0`` feeds the
    current unscaled (snnTorch/Norse convention).  Defaults follow the SPSN paper's LIF
    baseline: hard reset to 0, surrogate ``1/(100|v - th| + 1)^2``, reset spike detached.
    """

    def __init__(self, features: int, tau_syn: float | None = 0.02, tau_mem: float = 0.02,
                 dt: float = 1e-3, threshold: float = 1.0, reset: str = "zero", v_reset: float = 0.0,
                 surrogate=None, detach_reset: bool = True, learn_tau: bool = False,
                 learn_threshold: bool = False, input_scale: str | float = "one_minus_decay",
                 backend: str = "auto"):
        super().__init__()
        check_choice(reset, "reset", ("zero", "subtract"))
        if not (threshold > 0):
            raise ValueError(f"threshold must be > 0, got {threshold}")
        self.features = int(features)
        self.reset = reset
        self.v_reset = float(v_reset)
        self.surrogate = surrogate_lib.get(surrogate if surrogate is not None else surrogate_lib.FastSigmoid(100.0))
        self.detach_reset = bool(detach_reset)
        self.backend = backend
        self.input_scale = input_scale
        self.syn = Decay(features, tau_syn, dt, False, "tau_syn") if tau_syn is not None else None
        self.mem = self._make_decay(features, tau_mem, dt, learn_tau)
        if learn_threshold:
            self.threshold = nn.Parameter(torch.full((features,), float(threshold)))
        else:
            self.threshold = float(threshold)

    def _make_decay(self, features, tau_mem, dt, learn_tau):
        return Decay(features, tau_mem, dt, learn_tau, "tau_mem")

    def _input(self, x: torch.Tensor, b) -> torch.Tensor:
        current = x if self.syn is None else leaky_integrate(x, self.syn(), backend="auto")
        if self.input_scale == "one_minus_decay":
            return current * (1.0 - b)
        return current * float(self.input_scale)

    def forward(self, x: torch.Tensor, v0: torch.Tensor | None = None) -> torch.Tensor:
        _check_features(x, self.features)
        b = self.mem()
        return lif(self._input(x, b), b, self.threshold, reset=self.reset, v_reset=self.v_reset,
                   surrogate=self.surrogate, v0=v0, detach_reset=self.detach_reset,
                   backend=self.backend)

    def extra_repr(self) -> str:
        return (f"features={self.features}, reset={self.reset!r}, surrogate={self.surrogate}, "
                f"backend={self.backend!r}")


class _SigmoidDecay(nn.Module):
    """``decay = sigmoid(w)`` with one learnable ``w`` per neuron (PLIF, Fang et al. 2021)."""

    def __init__(self, features: int, tau: float, dt: float):
        super().__init__()
        d = decay_from_tau(tau, dt, "tau_mem")
        self.w = nn.Parameter(torch.full((features,), math.log(d / (1.0 - d))))

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.w)


class PLIF(LIF):
    """Parametric LIF: :class:`LIF` whose membrane decay ``sigmoid(w)`` is learned per neuron.

    Fang et al., "Incorporating learnable membrane time constant to enhance learning of spiking
    neural networks", ICCV 2021.  Same equations as :class:`LIF` with ``b = sigmoid(w)``.
    """

    def _make_decay(self, features, tau_mem, dt, learn_tau):
        return _SigmoidDecay(features, tau_mem, dt)
