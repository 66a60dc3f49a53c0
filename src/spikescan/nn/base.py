"""Shared pieces of the module layer: input checks and the dtype rule, time-constant
parameterisation, and the spiking-neuron marker."""

from __future__ import annotations

import contextlib
import functools
import math

import torch
from torch import nn

from .._checks import (caller_checked, check_finite, check_float, check_has_data, check_module_tensors,
                       check_tensor, check_time_first, compute_dtype)
# the beta= / alpha= argument rules, shared with the JAX modules (re-exported for the neuron modules)
from .._checks import check_beta, default, is_default, resolve_decay  # noqa: F401


class StatefulModule(nn.Module):
    """A module over time-first sequences that carries a state from one call to the next.

    ``forward(x, state=None, *, return_state=False, ...)`` runs the whole sequence ``x``
    ``[T, B, *, features]`` from ``state`` (``None``: rest); :meth:`step` runs one time step
    (module docstring of :mod:`spikescan.nn.state`).
    """

    def step(self, x_t: torch.Tensor, state=None):
        """One time step ``x_t`` ``[B, *, features]`` from ``state``: ``(out_t, state)``.

        Exactly ``self(x_t[None], state, return_state=True)`` with the time axis dropped, so a
        loop of steps equals the sequence call bit for bit.
        """
        check_step_input(self, x_t, getattr(self, "features", None))
        out, new_state = self(x_t.unsqueeze(0), state, return_state=True)
        return out[0], new_state


class SpikingNeuron(StatefulModule):
    """Base class for modules whose output is a spike train ``[T, B, *features]``.

    :func:`spikescan.train.record_spikes` finds every instance in a model to collect the spikes
    that the spike-rate regulariser and the spike-count metrics need.
    """


def _one_step_hint(module: nn.Module) -> str:
    return (f"for one time step x_t [B, features] call {type(module).__name__}.step(x_t, state), which returns "
            f"(out_t, state) to pass to the next step; for one unbatched sequence use x.unsqueeze(1)")


def check_input(module: nn.Module, x, features: int | None = None) -> torch.Tensor:
    """The checks every module's ``forward`` makes once, returning ``x`` in the compute dtype.

    ``x`` is a floating time-first tensor ``[T, B, ..., features]`` (at least 3 dims: a 2-dim
    ``[B, N]`` is what snnTorch-style code passes for one step, and reading its batch axis as
    time would be a silent wrong answer) holding data (not meta) with ``features`` in its last
    dim; the module's parameters sit on ``x``'s device and are finite (one host sync for all of
    them, see :func:`spikescan._checks.check_module_tensors`).  The result is ``x`` in the
    compute dtype of the dtype rule (module docstring of :mod:`spikescan.nn`): float32 for
    float16/bfloat16, else ``x.dtype``.
    """
    check_time_first(x, "x", min_dim=2, always=True)
    if x.dim() == 2:
        raise ValueError(f"{type(module).__name__} takes a whole sequence x [T, B, ..., features] (3 or more dims), "
                         f"got shape {tuple(x.shape)}; {_one_step_hint(module)}")
    check_has_data(x, "x")
    if features is not None and x.shape[-1] != features:
        raise ValueError(f"x must have {features} features in its last dim, got shape {tuple(x.shape)}")
    check_finite(x, "x", always=True)  # the NaN/Inf scan, in debug mode only (the ops inside skip theirs)
    check_module_tensors(module, x)
    return x.to(compute_dtype(x.dtype))


def ops_trust_inputs():
    """Context for a module's op calls once :func:`check_input` (and the module's own checks)
    validated ``x`` and the parameters: the ops skip checking them again (``caller_checked``),
    so a forward validates each input once.  Under ``torch.compile`` a no-op (the ops' value
    checks are skipped there anyway, and the compiler traces a null context for free)."""
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return caller_checked()


def validates_once(forward):
    """Decorator of a module's ``forward``: its op calls run inside :func:`ops_trust_inputs`, so
    ``x`` and the parameters are validated once, by the module (:func:`check_input`, which checks
    regardless), not again by every op it calls."""

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        with ops_trust_inputs():
            return forward(self, *args, **kwargs)

    return wrapper


def check_step_params(module: nn.Module, x: torch.Tensor) -> None:
    """:func:`spikescan._checks.check_module_tensors` for a ``step``, skipped while no parameter
    changed since the last check: a real-time loop calls ``step`` thousands of times with the same
    weights, and the finiteness scan of a 1000 x 1000 recurrent matrix costs ~3 ms, 20x the step.
    "Changed" is any in-place update (an optimizer step bumps the tensor's version counter), a
    new storage, or another device."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    key = (x.device, *((t._version, t.data_ptr(), t.device) for t in tensors))
    if module.__dict__.get("_step_checked") == key:
        return
    check_module_tensors(module, x)
    module.__dict__["_step_checked"] = key


def check_step_input(module: nn.Module, x_t, features: int | None = None) -> torch.Tensor:
    """``x_t`` is one time step ``[B, ..., features]``: a floating tensor of at least 2 dims."""
    check_tensor(x_t, "x_t")
    check_float(x_t, "x_t")
    if x_t.dim() < 2:
        raise ValueError(f"{type(module).__name__}.step takes one time step x_t [B, ..., features] (2 or more dims), "
                         f"got shape {tuple(x_t.shape)}; for one unbatched sample use x_t.unsqueeze(0)")
    if features is not None and x_t.shape[-1] != features:
        raise ValueError(f"x_t must have {features} features in its last dim, got shape {tuple(x_t.shape)}")
    return x_t


def as_dtype(value, dtype: torch.dtype):
    """A parameter (tensor or Python float) in ``dtype``; floats stay floats (kernels specialise on them)."""
    return value.to(dtype) if isinstance(value, torch.Tensor) else value


def as_output(out, dtype: torch.dtype):
    """An output tensor, or a tuple of them, cast to the input's ``dtype`` (a no-op when it already is)."""
    if isinstance(out, tuple):
        return tuple(o.to(dtype) for o in out)
    return out.to(dtype)


# exp(-r) in float64 is exactly 0 for r >= _EXP_ZERO and exactly 1 for r <= _EXP_ONE = 2**-54.
_EXP_ZERO = 745.1332191019412
_EXP_ONE = 2.0**-54


def decay_from_tau(tau: float, dt: float, name: str = "tau") -> float:
    """``exp(-dt / tau)``: the per-step decay of a leak with time constant ``tau`` (Euler, SPSN eq. 5).

    The decay must lie strictly inside (0, 1) in float64: a ``tau`` so small that it is exactly
    0 (``tau <~ dt / 745``), or so large that it is exactly 1 (``tau >~ dt * 1.8e16``), is
    almost certainly a unit mistake, and the learnable parameterisations (``log tau``, PLIF's
    ``logit(decay)``) could not represent it.
    """
    for value, what in ((tau, name), (dt, "dt")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{what} must be a positive finite number of seconds, got {value!r}")
    d = math.exp(-dt / tau)
    if not 0.0 < d < 1.0:
        effect = "0 (the state forgets everything each step)" if d == 0.0 else "1 (no leak at all)"
        raise ValueError(
            f"{name}={tau!r} with dt={dt!r} gives the decay exp(-dt/{name}) = {d!r}, which is exactly "
            f"{effect} in float64; use about {dt / _EXP_ZERO:.4g} < {name} < {dt / _EXP_ONE:.4g} seconds "
            f"for this dt (a time constant in milliseconds instead of seconds?)"
        )
    return d


class Decay(nn.Module):
    """A decay factor ``exp(-dt/tau)``, fixed or learnable per neuron.

    Learnable decays are stored as ``log(tau)`` per neuron so the decay stays in (0, 1) under any
    update; fixed ones are a plain float so that fast paths can specialise on a scalar.

    ``beta`` (keyword): the decay per step itself (``tau`` is ignored; it becomes
    ``-dt / log(beta)``).  A fixed decay is then exactly ``beta``; a learnable one is computed
    as ``beta ** (tau0 / tau)`` with ``tau0`` its initial ``exp(log_tau)`` -- the same function
    ``exp(-dt / tau)`` with the same gradient -- so that it starts at exactly ``beta`` in any
    dtype (``exp(-dt / exp(log tau))`` would round ``log tau`` first).
    """

    def __init__(self, features: int, tau: float, dt: float, learn: bool = False, name: str = "tau", *,
                 beta: float | None = None):
        super().__init__()
        self.dt = float(dt)
        self.learn = bool(learn)
        self._beta = None
        if beta is not None:
            decay_from_tau(1.0, dt)  # the dt check
            beta = check_beta(beta)
            tau = -self.dt / math.log(beta)
            self._value = beta
        else:
            self._value = decay_from_tau(tau, dt, name)
        self._tau = float(tau)
        if self.learn:
            self.log_tau = nn.Parameter(torch.full((features,), math.log(tau)))
            if beta is not None:
                self._beta = beta
                self._log_tau0 = float(self.log_tau.detach()[0])  # what the parameter holds, rounded

    def forward(self) -> torch.Tensor | float:
        if self.learn:
            if self._beta is not None:
                return self._beta ** torch.exp(self._log_tau0 - self.log_tau)
            return torch.exp(-self.dt / torch.exp(self.log_tau))
        return self._value

    def extra_repr(self) -> str:
        return f"tau={self._tau}, dt={self.dt}, learn={self.learn}"


class SigmoidDecay(nn.Module):
    """``decay = sigmoid(w)`` with one learnable ``w`` per neuron (PLIF, Fang et al. 2021).

    ``w`` starts at ``logit(exp(-dt/tau))`` (or ``logit(beta)``), finite because
    :func:`decay_from_tau` (:func:`check_beta`) keeps the decay strictly inside (0, 1); the
    decay starts at that value to the rounding of ``w`` in its dtype.
    """

    def __init__(self, features: int, tau: float, dt: float, name: str = "tau_mem", *, beta: float | None = None):
        super().__init__()
        d = decay_from_tau(tau, dt, name) if beta is None else check_beta(beta)
        self.w = nn.Parameter(torch.full((features,), math.log(d / (1.0 - d))))

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.w)
