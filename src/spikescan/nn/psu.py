"""Parallel Spiking Unit modules: :class:`PSU`, :class:`IPSU`, :class:`RPSU` (Li et al., "Parallel
Spiking Unit for Efficient Training of Spiking Neural Networks").

Neuron layers over a time-first input current ``[T, B, *features]``; the equations, leak
options, backends and T×T memory are documented in :mod:`spikescan.ops.psu`.  ``tau`` is in
time steps (``k = 1/tau``; the authors use ``tau = 2``), not seconds.

IPSU and RPSU learn one T×T time-mixing matrix per layer, shared by all neurons, stored like
the weight of ``nn.Linear(T, T)`` (Kaiming-normal, ``mode="fan_out"``, ``nonlinearity="relu"``)
with a T-vector bias initialised to 0; only the lower triangle is used (causal mask), and the
strict upper triangle never receives gradient.  T is therefore fixed at construction.

The surrogate defaults to arctan with ``alpha = 2``; ``learn_alpha=True`` makes ``alpha`` a
parameter of the layer (as in the authors' code), through :func:`spikescan.ops.psu.atan_heaviside`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import surrogate as surrogate_lib
from .._checks import check_choice, check_positive_int
from ..ops import psu as psu_ops
from ..ops.firing import heaviside
from .base import SpikingNeuron, as_output, check_input
from .registry import register_neuron

__all__ = ["PSU", "IPSU", "RPSU"]


class _PSUBase(SpikingNeuron):
    def __init__(self, tau: float, threshold: float, leak: str, surrogate, learn_alpha: bool,
                 backend: str):
        super().__init__()
        psu_ops.leak_coefficients(tau, leak)  # validates tau and leak
        check_choice(backend, "backend", psu_ops.BACKENDS)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise TypeError(f"threshold must be a float, got {type(threshold).__name__}")
        if not (math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a finite number > 0, got {threshold!r}")
        self.tau = float(tau)
        self.threshold = float(threshold)
        self.leak = leak
        self.backend = backend
        self.learn_alpha = bool(learn_alpha)
        if self.learn_alpha:
            sur = surrogate_lib.ATan(2.0) if surrogate is None else surrogate_lib.get(surrogate)
            if sur.kind != "atan":
                raise ValueError(f"learn_alpha=True needs the arctan surrogate, got {sur.kind!r}")
            self.surrogate = None
            self.alpha = nn.Parameter(torch.tensor(float(sur.param)))
        else:
            self.surrogate = surrogate_lib.ATan(2.0) if surrogate is None else surrogate_lib.get(surrogate)

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` checked (with the layer's parameters) and in the compute dtype."""
        return check_input(self, x)

    def _membrane(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, return_membrane: bool = False):
        """Spikes ``[T, B, *features]`` (and the membrane ``V`` with ``return_membrane=True``), in ``x.dtype``."""
        v = self._membrane(self._check_x(x))
        u = v - self.threshold
        if self.learn_alpha:
            s = psu_ops.atan_heaviside(u, self.alpha.to(u.dtype))
        else:
            s = heaviside(u, self.surrogate)
        return as_output((s, v) if return_membrane else s, x.dtype)

    def extra_repr(self) -> str:
        sur = "atan(alpha learnable)" if self.learn_alpha else repr(self.surrogate)
        return (f"tau={self.tau}, threshold={self.threshold}, leak={self.leak!r}, surrogate={sur}, "
                f"backend={self.backend!r}")


class PSU(_PSUBase):
    """Parallel Spiking Unit: ``H = M1 x``, ``V = H + Vth R sigmoid(H)``, ``S = H(V - Vth)``.

    No learned parameters (except ``alpha`` with ``learn_alpha=True``); works for any T.
    """

    def __init__(self, tau: float = 2.0, threshold: float = 1.0, *, leak: str = "exact",
                 surrogate=None, learn_alpha: bool = False, backend: str = "auto"):
        super().__init__(tau, threshold, leak, surrogate, learn_alpha, backend)

    def _membrane(self, x):
        return psu_ops.psu_membrane(x, self.tau, self.threshold, leak=self.leak, backend=self.backend)


class _LearnedTimeMatrix(_PSUBase):
    def __init__(self, T: int, tau, threshold, leak, surrogate, learn_alpha, backend):
        super().__init__(tau, threshold, leak, surrogate, learn_alpha, backend)
        self.T = check_positive_int(T, "T (number of time steps)")
        self.weight = nn.Parameter(torch.empty(T, T))
        self.bias = nn.Parameter(torch.empty(T))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out, relu) weight, zero bias -- as the authors initialise ``Linear(T, T)``."""
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.bias)

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        xc = super()._check_x(x)
        if x.shape[0] != self.T:
            raise ValueError(
                f"{type(self).__name__} was built for T = {self.T} time steps (its T×T matrix), "
                f"but x has T = {x.shape[0]} (shape {tuple(x.shape)})"
            )
        return xc

    def masked_weight(self) -> torch.Tensor:
        """The causal matrix actually applied: ``A ⊙ L`` (lower triangle, diagonal included)."""
        return torch.tril(self.weight)

    def extra_repr(self) -> str:
        return f"T={self.T}, " + super().extra_repr()


class IPSU(_LearnedTimeMatrix):
    """Input-aware PSU: ``V = (A_I ⊙ L) x + b_I + R x``, ``S = H(V - Vth)``; ``A_I`` = ``self.weight``."""

    def __init__(self, T: int, tau: float = 2.0, threshold: float = 1.0, *, leak: str = "exact",
                 surrogate=None, learn_alpha: bool = False, backend: str = "auto"):
        super().__init__(T, tau, threshold, leak, surrogate, learn_alpha, backend)

    def _membrane(self, x):
        return psu_ops.ipsu_membrane(x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.tau,
                                     leak=self.leak, backend=self.backend)


class RPSU(_LearnedTimeMatrix):
    """Reset-aware PSU: ``V = M1 x + R sigmoid((A_R ⊙ L) x + b_R)``, ``S = H(V - Vth)``; ``A_R`` = ``self.weight``."""

    def __init__(self, T: int, tau: float = 2.0, threshold: float = 1.0, *, leak: str = "exact",
                 surrogate=None, learn_alpha: bool = False, backend: str = "auto"):
        super().__init__(T, tau, threshold, leak, surrogate, learn_alpha, backend)

    def _membrane(self, x):
        return psu_ops.rpsu_membrane(x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.tau,
                                     leak=self.leak, backend=self.backend)


def _psu_builder(kind: str):
    def build(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
        kwargs = dict(kwargs)
        tau = float(kwargs.pop("tau", tau_mem / dt))  # PSU time constants count steps
        if kind == "psu":
            return PSU(tau, backend=backend, **kwargs)
        if num_steps is None:
            raise ValueError(f"neuron {kind!r} learns a T×T matrix: num_steps (T) is required")
        return (IPSU if kind == "ipsu" else RPSU)(int(num_steps), tau, backend=backend, **kwargs)

    return build


for _kind in ("psu", "ipsu", "rpsu"):
    register_neuron(_kind, backends=psu_ops.BACKENDS)(_psu_builder(_kind))
