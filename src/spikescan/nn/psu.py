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

State.  All three are causal (no output depends on a later input), but only PSU has a finite
state: its two operators are leaky recurrences, ``h[t] = decay h[t-1] + x[t]`` (``H = scale h``)
and ``q[t] = decay q[t-1] + sigmoid(H[t])`` (the reset term of step ``t`` is ``-decay q[t-1]``),
so ``forward(x, state, return_state=True)`` carries :class:`~spikescan.nn.state.PSUState`
``(h, q)`` and :meth:`PSU.step` runs one step.  IPSU and RPSU apply a learned T×T matrix
indexed by the *absolute* steps ``0 .. T-1``: step ``t`` reads every earlier input through row
``A[t, :t+1]``, so no state smaller than the whole input history exists; they refuse a state
(and ``step``) with an error saying so.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import surrogate as surrogate_lib
from .._checks import check_choice, check_positive_int, compute_dtype
from ..ops import psu as psu_ops
from ..ops.firing import heaviside
from ..ops.leaky import leaky_integrate, leaky_step
from ..ops._backend import backends as op_backends
from .base import (SpikingNeuron, check_beta, check_input, check_step_input, check_step_params, default, is_default,
                   validates_once)
from .state import PSUState, check_state, last, legacy_return_membrane, pack, state_tensor
from .registry import register_neuron

__all__ = ["PSU", "IPSU", "RPSU"]

_TAU = default(2.0)  # the authors' tau, marked so that an explicit tau together with beta= is an error


def tau_from_beta(beta, leak: str = "exact") -> float:
    """The ``tau`` (in steps) whose :func:`~spikescan.ops.psu.leak_coefficients` decay under
    ``leak`` is ``beta``: ``1 / (1 - beta)`` (``"exact"``, decay ``1 - 1/tau``) or ``1 / beta``
    (``"psu_code"``, decay ``1/tau``), or of it and its two neighbouring floats the one whose
    decay is nearest ``beta``.

    The ops take ``tau``, so the decay is ``1 - fl(1/tau)`` / ``fl(1/tau)``: exactly ``beta`` for
    most numbers, else one ulp off (not every double is a rounded reciprocal); with
    ``leak="exact"`` and ``beta < 0.5`` the decay ``1 - k`` (``k`` in (0.5, 1), exact by Sterbenz)
    is a multiple of 2**-53, within 2**-53 of ``beta``."""
    beta = check_beta(beta)
    psu_ops.leak_coefficients(2.0, leak)  # validates leak
    t0 = 1.0 / (1.0 - beta if leak == "exact" else beta)
    best, best_err = t0, math.inf
    for t in (t0, math.nextafter(t0, math.inf), math.nextafter(t0, 0.0)):
        if t >= 1.0 and math.isfinite(t):
            err = abs(psu_ops.leak_coefficients(t, leak)[0] - beta)
            if err < best_err:
                best, best_err = t, err
    return best


def _resolve_tau(tau, beta, leak):
    """``tau`` from the constructor's ``tau`` / ``beta`` (not both)."""
    if beta is None:
        return tau
    if not is_default(tau):
        raise ValueError(f"give either beta= (the decay per step) or tau= (a time constant in steps), "
                         f"not both: got beta={beta!r} and tau={tau!r}")
    return tau_from_beta(beta, leak)


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

    @validates_once
    def forward(self, x: torch.Tensor, state=None, *, return_state: bool = False, return_membrane: bool = False):
        """Spikes ``[T, B, *features]``, or ``(s, [V], [state])`` with the requested items (the
        membrane ``V``, the state after the last step; PSU only), ``s`` and ``V`` in ``x.dtype``.

        ``forward(x, True)`` (``return_membrane`` positionally) is deprecated: pass it by keyword.
        """
        state, return_membrane = legacy_return_membrane(self, state, return_membrane)
        xc = self._check_x(x)
        new = None
        if state is not None or return_state:
            v, new = self._membrane_from(xc, state)
            new = new if return_state else None
        else:
            v = self._membrane(xc)
        return pack(self._fire(v), x.dtype, v if return_membrane else None, new)

    def _fire(self, v: torch.Tensor) -> torch.Tensor:
        u = v - self.threshold
        if self.learn_alpha:
            return psu_ops.atan_heaviside(u, self.alpha.to(u.dtype))
        return heaviside(u, self.surrogate)

    def _membrane_from(self, x: torch.Tensor, state):
        """``(V, state after the last step)`` from ``state``: PSU only (module docstring)."""
        raise ValueError(
            f"{type(self).__name__} carries no state: its learned T×T matrix mixes the absolute steps 0 .. T-1, so "
            f"step t reads every earlier input through row t (there is no state smaller than the whole input "
            f"history) -- run the whole T = {self.T}-step sequence in one call, without state/return_state/step(); "
            f"PSU (fixed leak and reset operators) streams")

    def step(self, x_t: torch.Tensor, state=None):
        """One time step ``x_t`` ``[B, ...]`` from ``state``: ``(spikes_t, state)`` (PSU only)."""
        self._membrane_from(None, state)  # the error of IPSU / RPSU

    def extra_repr(self) -> str:
        sur = "atan(alpha learnable)" if self.learn_alpha else repr(self.surrogate)
        return (f"tau={self.tau}, threshold={self.threshold}, leak={self.leak!r}, surrogate={sur}, "
                f"backend={self.backend!r}")


class PSU(_PSUBase):
    """Parallel Spiking Unit: ``H = M1 x``, ``V = H + Vth R sigmoid(H)``, ``S = H(V - Vth)``.

    No learned parameters (except ``alpha`` with ``learn_alpha=True``); works for any T.
    ``beta=`` (keyword-only): the decay per step instead of ``tau`` (see :func:`tau_from_beta`).
    """

    def __init__(self, tau: float = _TAU, threshold: float = 1.0, *, leak: str = "exact",
                 surrogate=None, learn_alpha: bool = False, backend: str = "auto", beta: float | None = None):
        super().__init__(_resolve_tau(tau, beta, leak), threshold, leak, surrogate, learn_alpha, backend)

    def _membrane(self, x):
        return psu_ops.psu_membrane(x, self.tau, self.threshold, leak=self.leak, backend=self.backend)

    def _membrane_from(self, x: torch.Tensor, state):
        """``V = H + Vth (-decay q[t-1])`` with ``H = scale h`` from the state ``(h, q)``: the
        equations of :func:`spikescan.ops.psu.psu_membrane` as two leaky recurrences, which is
        what lets a chunk start where the previous one ended."""
        state = check_state(self, state, PSUState)
        if self.backend in ("matrix", "chunked"):
            raise ValueError(f"PSU with backend={self.backend!r} applies its leak as a "
                             f"{'T×T matmul' if self.backend == 'matrix' else 'chunked parallel scan'}, which takes "
                             f"no initial state and is not exact across chunks; use backend='sequential' or 'auto' "
                             f"(which run the recurrences when a state is carried or asked for)")
        decay, scale = psu_ops.leak_coefficients(self.tau, self.leak)
        # the one-pass fused kernel does the loop's arithmetic, so chunks continue bit for bit
        scan = "fused" if self.backend == "auto" and "fused" in op_backends("leaky_integrate", x) else "sequential"
        h0 = q0 = None
        if state is not None:
            h0, q0 = state_tensor(state.h, "state.h", x), state_tensor(state.q, "state.q", x)
        h = leaky_integrate(x, decay, v0=h0, backend=scan)
        big_h = scale * h
        q = leaky_integrate(torch.sigmoid(big_h), decay, v0=q0, backend=scan)
        q_before = torch.cat([(torch.zeros_like(q[:1]) if q0 is None else q0.expand(q.shape[1:]).unsqueeze(0)), q[:-1]])
        v = big_h + self.threshold * (-decay * q_before)
        return v, PSUState(last(h), last(q))

    def step(self, x_t: torch.Tensor, state: PSUState | None = None):
        """One time step ``x_t`` ``[B, ...]`` from ``state``: ``(spikes_t, state)``.

        :func:`~spikescan.ops.leaky.leaky_step` for both recurrences -- the operations of the
        stateful sequence call, so a loop of steps gives its spikes bit for bit.
        """
        check_step_input(self, x_t)
        state = check_state(self, state, PSUState)
        if self.backend in ("matrix", "chunked"):
            self._membrane_from(None, state)  # the error: no state with this backend
        x = x_t.to(compute_dtype(x_t.dtype))
        check_step_params(self, x)
        seq = x.unsqueeze(0)
        decay, scale = psu_ops.leak_coefficients(self.tau, self.leak)
        zero = x.new_zeros(())
        h0 = zero if state is None else state_tensor(state.h, "state.h", seq)
        q0 = zero if state is None else state_tensor(state.q, "state.q", seq)
        h = leaky_step(x, h0, decay)
        big_h = scale * h
        q = leaky_step(torch.sigmoid(big_h), q0, decay)
        v = big_h + self.threshold * (-decay * q0)
        return self._fire(v).to(x_t.dtype), PSUState(h, q)


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
    """Input-aware PSU: ``V = (A_I ⊙ L) x + b_I + R x``, ``S = H(V - Vth)``; ``A_I`` = ``self.weight``.
    ``beta=`` (keyword-only): the decay per step instead of ``tau`` (see :func:`tau_from_beta`)."""

    def __init__(self, T: int, tau: float = _TAU, threshold: float = 1.0, *, leak: str = "exact",
                 surrogate=None, learn_alpha: bool = False, backend: str = "auto", beta: float | None = None):
        super().__init__(T, _resolve_tau(tau, beta, leak), threshold, leak, surrogate, learn_alpha, backend)

    def _membrane(self, x):
        return psu_ops.ipsu_membrane(x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.tau,
                                     leak=self.leak, backend=self.backend)


class RPSU(_LearnedTimeMatrix):
    """Reset-aware PSU: ``V = M1 x + R sigmoid((A_R ⊙ L) x + b_R)``, ``S = H(V - Vth)``; ``A_R`` = ``self.weight``.
    ``beta=`` (keyword-only): the decay per step instead of ``tau`` (see :func:`tau_from_beta`)."""

    def __init__(self, T: int, tau: float = _TAU, threshold: float = 1.0, *, leak: str = "exact",
                 surrogate=None, learn_alpha: bool = False, backend: str = "auto", beta: float | None = None):
        super().__init__(T, _resolve_tau(tau, beta, leak), threshold, leak, surrogate, learn_alpha, backend)

    def _membrane(self, x):
        return psu_ops.rpsu_membrane(x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.tau,
                                     leak=self.leak, backend=self.backend)


def _psu_builder(kind: str):
    def build(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
        kwargs = dict(kwargs)
        explicit_tau = "tau" in kwargs
        tau = float(kwargs.pop("tau", tau_mem / dt))  # PSU time constants count steps
        if "beta" in kwargs and is_default(tau_mem) and not explicit_tau:
            tau = default(tau)  # beta= replaces the (defaulted) time constant; tau= with beta= stays an error
        if kind == "psu":
            return PSU(tau, backend=backend, **kwargs)
        if num_steps is None:
            raise ValueError(f"neuron {kind!r} learns a T×T matrix: num_steps (T) is required")
        return (IPSU if kind == "ipsu" else RPSU)(int(num_steps), tau, backend=backend, **kwargs)

    return build


for _kind in ("psu", "ipsu", "rpsu"):
    register_neuron(_kind, backends=psu_ops.BACKENDS)(_psu_builder(_kind))
