"""Stochastic Parallelizable Spiking Neuron (SPSN) layer."""

from __future__ import annotations

import torch

from .._checks import check_choice, check_time_first
from ..ops.firing import gumbel_spike, sigmoid_bernoulli
from ..ops.scan import leaky_integrate
from .base import Decay, SpikingNeuron

FIRING_MODES = ("sb", "gs")


class SPSN(SpikingNeuron):
    """SPSN: a leaky integrator computed in parallel over time, then stochastic firing.

    Per neuron, with ``a = exp(-dt/tau_syn)`` and ``b = exp(-dt/tau_mem)`` (SPSN, Zhang et al.,
    eq. 5, 7, 13-15)::

        i[t] = a * i[t-1] + x[t]
        u[t] = b * u[t-1] + (1 - b) * i[t]
        s[t] ~ Bernoulli(sigmoid(u[t]))                      firing="sb"  (eq. 17-19)
        s[t] = 1[sigmoid((logit_scale*u[t] + L[t]) / gs_tau) > 1/2],  L ~ Logistic   firing="gs"

    There is no reset, so both integrations are linear recurrences computed by
    :func:`spikescan.ops.leaky_integrate` with the chosen ``backend`` (``"auto"`` picks by T,
    dtype and device).  ``firing="sb"`` backpropagates ``ds/du = p^2 (1 - p)`` (the authors'
    code); ``"gs"`` is the straight-through binary Gumbel-softmax, firing probability
    ``sigmoid(logit_scale * u)`` (``logit_scale=2`` reproduces the authors' code, 1 the paper).

    Input ``[T, B, *, features]``, output spikes of the same shape.  Set ``generator`` (a
    ``torch.Generator`` on the input's device) for reproducible spikes.
    """

    def __init__(self, features: int, tau_syn: float | None = 0.02, tau_mem: float = 0.02,
                 dt: float = 1e-3, firing: str = "sb", learn_tau: bool = False,
                 backend: str = "auto", gs_tau: float = 1.0, logit_scale: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        check_choice(firing, "firing", FIRING_MODES)
        if not features >= 1:
            raise ValueError(f"features must be >= 1, got {features}")
        self.features = int(features)
        self.firing = firing
        self.backend = backend
        self.gs_tau = float(gs_tau)
        self.logit_scale = float(logit_scale)
        self.generator = generator
        self.syn = Decay(features, tau_syn, dt, learn_tau, "tau_syn") if tau_syn is not None else None
        self.mem = Decay(features, tau_mem, dt, learn_tau, "tau_mem")

    def membrane(self, x: torch.Tensor) -> torch.Tensor:
        """The membrane potential ``u`` (before firing), ``[T, B, *, features]``."""
        check_time_first(x, "x", min_dim=2)
        if x.shape[-1] != self.features:
            raise ValueError(f"x must have {self.features} features in its last dim, got shape {tuple(x.shape)}")
        current = x if self.syn is None else leaky_integrate(x, self.syn(), backend=self.backend)
        b = self.mem()
        return leaky_integrate(current, b, scale=1.0 - b, backend=self.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.membrane(x)
        if self.firing == "sb":
            return sigmoid_bernoulli(u, generator=self.generator)
        return gumbel_spike(u, tau=self.gs_tau, generator=self.generator, logit_scale=self.logit_scale)

    def extra_repr(self) -> str:
        return f"features={self.features}, firing={self.firing!r}, backend={self.backend!r}"
