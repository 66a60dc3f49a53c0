"""Flax NNX modules over time-first arrays ``[T, B, *features]``: ``LIF``, ``PLIF``, ``SPSN``, ``LI``
and ``SNN`` (the temporal-parallelization paper's ``snn_wrapper``).

Why ``flax.nnx`` and not ``flax.linen``: the Flax documentation recommends NNX for new code
(Linen is kept for existing projects).  NNX modules are ordinary Python objects holding their
parameters, like ``torch.nn`` modules, so each module here mirrors its :mod:`spikescan.nn`
counterpart attribute for attribute (same constructor arguments, same decay parameterisation,
same order of operations), which is what makes the parity tests and the NIR bridge
(:mod:`spikescan.jax.export`) a one-to-one copy of parameters.

Each neuron takes the whole sequence; per-step layers (``nnx.Linear``, ``nnx.Conv``,
``nnx.Dropout``, ...) are applied to all ``T * B`` steps at once by :class:`SNN`, so the only
loop over time is the neuron's ``lax.scan``, and ``jax.jit`` (``nnx.jit``) compiles the whole
network into one XLA program -- the paper's "operator fusion through JIT".

Dtypes: parameters are float32; a module computes in its input's compute dtype (float32 for
half inputs) and returns its input's dtype, like the torch side.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from .. import defaults as D
from .. import surrogate as _surrogate
from .._checks import input_factor
from . import _checks as C
from .firing import gumbel_spike, sigmoid_bernoulli
from .lif import BACKENDS as LIF_BACKENDS
from .lif import lif
from .scan import BACKENDS as SCAN_BACKENDS
from .scan import leaky_integrate

__all__ = ["Decay", "SigmoidDecay", "TimeFirst", "LI", "LIF", "PLIF", "SPSN", "SNN", "Threshold", "snn_wrapper",
           "decay_from_tau"]

FIRING_MODES = ("sb", "gs")


def decay_from_tau(tau: float, dt: float, name: str = "tau") -> float:
    """``exp(-dt / tau)`` in float64, refused where it is exactly 0 or 1 (a unit mistake, as on the torch side)."""
    for value, what in ((tau, name), (dt, "dt")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{what} must be a positive finite number of seconds, got {value!r}")
    d = math.exp(-dt / tau)
    if not 0.0 < d < 1.0:
        raise ValueError(f"{name}={tau!r} with dt={dt!r} gives the decay exp(-dt/{name}) = {d!r}, exactly 0 or 1 in "
                         f"float64; a time constant in milliseconds instead of seconds?")
    return d


def _features(features) -> int:
    if isinstance(features, bool) or not isinstance(features, int) or features < 1:
        raise ValueError(f"features must be a positive int, got {features!r}")
    return features


class Decay(nnx.Module):
    """``exp(-dt/tau)``: a Python float when fixed, ``log(tau)`` per neuron (an ``nnx.Param``) when learned.

    ``beta=`` (keyword): the decay per step itself, as on the torch side (``tau`` ignored, it becomes
    ``-dt / log(beta)``): fixed, exactly ``beta``; learned, ``beta ** (tau0 / tau)`` (``tau0`` the initial
    ``exp(log_tau)``), the same function ``exp(-dt/tau)`` starting at exactly ``beta``."""

    def __init__(self, features: int, tau: float, dt: float, learn: bool = False, name: str = "tau", *,
                 beta: float | None = None):
        self.dt = float(dt)
        self.learn = bool(learn)
        self.beta = None  # with learn: the decay at log_tau0 (the formula starting at exactly beta)
        self.log_tau0 = None
        if beta is not None:
            decay_from_tau(1.0, dt)  # the dt check
            beta = C.check_beta(beta)
            tau = -self.dt / math.log(beta)
            self.value = beta
        else:
            self.value = decay_from_tau(tau, dt, name)
        self.tau = float(tau)
        if self.learn:
            self.log_tau = nnx.Param(jnp.full((features,), math.log(tau), jnp.float32))
            if beta is not None:
                self.beta = beta
                self.log_tau0 = float(self.log_tau[...][0])  # what the parameter holds, rounded

    def __call__(self):
        if self.learn:
            if self.beta is not None:
                return self.beta ** jnp.exp(self.log_tau0 - self.log_tau[...])
            return jnp.exp(-self.dt / jnp.exp(self.log_tau[...]))
        return self.value


class SigmoidDecay(nnx.Module):
    """``sigmoid(w)`` with one learned ``w`` per neuron (PLIF, Fang et al. 2021), ``w`` starting at
    ``logit(exp(-dt/tau))`` (``beta=``, keyword: at ``logit(beta)``, ``tau`` then ``-dt / log(beta)``)."""

    def __init__(self, features: int, tau: float, dt: float, name: str = "tau_mem", *, beta: float | None = None):
        self.dt = float(dt)
        if beta is not None:
            decay_from_tau(1.0, dt)  # the dt check
            d = C.check_beta(beta)
            tau = -self.dt / math.log(d)
        else:
            d = decay_from_tau(tau, dt, name)
        self.tau = float(tau)
        self.w = nnx.Param(jnp.full((features,), math.log(d / (1.0 - d)), jnp.float32))

    def __call__(self):
        return jax.nn.sigmoid(self.w[...])


class TimeFirst(nnx.Module):
    """Marker: the module takes the whole sequence ``[T, B, ...]`` (:class:`SNN` does not fold time into the batch)."""


def _check_input(x, features: int | None, who: str):
    x = C.as_array(x, "x")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{who}: x must be time-first [T, B, ...] with T >= 1, got shape {tuple(x.shape)}")
    if features is not None and x.shape[-1] != features:
        raise ValueError(f"{who}: x must have {features} features in its last dim, got shape {tuple(x.shape)}")
    return x


def _as(value, dtype):
    return value.astype(dtype) if hasattr(value, "astype") else value


class LI(TimeFirst):
    """Leaky integrator (:class:`spikescan.nn.LI`, same arguments and defaults): ``i[t] = a i[t-1] + x[t]``
    (``i = x`` when ``tau_syn`` is None, the default), ``u[t] = b u[t-1] + c i[t]`` with ``c = input_scale``
    (default 1) or ``1 - b`` (``"one_minus_decay"``), ``a = exp(-dt/tau_syn)``, ``b = exp(-dt/tau_mem)``;
    returns ``u``.  ``beta=`` / ``alpha=`` (keyword-only): ``b`` / ``a`` per step instead of ``tau_mem`` /
    ``tau_syn``, as on the torch side."""

    def __init__(self, features: int, tau_syn: float | None = C.default(D.TAU_SYN),
                 tau_mem: float = C.default(D.TAU_MEM),
                 dt: float = D.DT, learn_tau: bool = False, backend: str = "auto", *,
                 input_scale: str | float = D.INPUT_SCALE, beta: float | None = None, alpha: float | None = None):
        tau_mem, beta = C.resolve_decay(tau_mem, beta, "tau_mem", "beta")
        tau_syn, alpha = C.resolve_decay(tau_syn, alpha, "tau_syn", "alpha")
        self.features = _features(features)
        self.backend = C.choice(backend, "backend", SCAN_BACKENDS)
        self.input_scale = C.check_input_scale(input_scale)
        self.syn = Decay(features, tau_syn, dt, learn_tau, "tau_syn", beta=alpha) if tau_syn is not None else None
        self.mem = Decay(features, tau_mem, dt, learn_tau, "tau_mem", beta=beta)

    def __call__(self, x):
        x = _check_input(x, self.features, "LI")
        xc = x.astype(C.compute_dtype(x.dtype))
        current = xc if self.syn is None else leaky_integrate(xc, _as(self.syn(), xc.dtype), backend=self.backend)
        b = _as(self.mem(), xc.dtype)
        return leaky_integrate(current, b, scale=input_factor(self.input_scale, b), backend=self.backend).astype(x.dtype)


class LIF(TimeFirst):
    """Leaky integrate-and-fire with reset (:class:`spikescan.nn.LIF`, same arguments and defaults)::

        i[t]  = a i[t-1] + x[t]                      (skipped when tau_syn is None)
        v[t]  = b v'[t-1] + (1 - b) i[t]             (input_scale="one_minus_decay"; else input_scale * i[t])
        s[t]  = H(v[t] - threshold)                  surrogate derivative in backward
        v'[t] = v[t] (1 - s[t]) + v_reset s[t]       reset="zero"
        v'[t] = v[t] - threshold s[t]                reset="subtract"

    with :mod:`spikescan.defaults` (no synaptic stage, ``input_scale=1``, threshold 1, reset to 0 not
    detached, ``FastSigmoid(25)``): the temporal-parallelization paper's eq. 1-2 by default, the SPSN
    paper's LIF baseline with ``tau_syn=0.02, input_scale="one_minus_decay", detach_reset=True,
    surrogate=FastSigmoid(100)``.  ``backend`` goes to :func:`spikescan.jax.lif` (``"auto"``: its custom-VJP scan).
    ``beta=`` / ``alpha=`` (keyword-only): ``b`` / ``a`` per step instead of ``tau_mem`` / ``tau_syn``
    (not both for one stage; a learned decay starts at exactly ``beta``), as on the torch side.
    """

    def __init__(self, features: int, tau_syn: float | None = C.default(D.TAU_SYN),
                 tau_mem: float = C.default(D.TAU_MEM),
                 dt: float = D.DT, threshold: float = D.THRESHOLD, reset: str = D.RESET, v_reset: float = D.V_RESET,
                 surrogate=None, detach_reset: bool = D.DETACH_RESET, learn_tau: bool = False,
                 learn_threshold: bool = False, input_scale: str | float = D.INPUT_SCALE, backend: str = "auto", *,
                 beta: float | None = None, alpha: float | None = None):
        tau_mem, beta = C.resolve_decay(tau_mem, beta, "tau_mem", "beta")
        tau_syn, alpha = C.resolve_decay(tau_syn, alpha, "tau_syn", "alpha")
        self.features = _features(features)
        self.reset = C.choice(reset, "reset", ("zero", "subtract"))
        self.backend = C.choice(backend, "backend", LIF_BACKENDS)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
            raise ValueError(f"threshold must be a number > 0, got {threshold!r}")
        self.v_reset = float(v_reset)
        self.surrogate = _surrogate.get(surrogate)
        C.surrogate_spec(self.surrogate)  # a custom surrogate is refused here, not at the first call
        self.detach_reset = bool(detach_reset)
        self.input_scale = C.check_input_scale(input_scale)
        self.syn = Decay(features, tau_syn, dt, False, "tau_syn", beta=alpha) if tau_syn is not None else None
        self.mem = self._make_decay(features, tau_mem, dt, learn_tau, beta)
        if learn_threshold:
            self.threshold = nnx.Param(jnp.full((features,), float(threshold), jnp.float32))
        else:
            self.threshold = float(threshold)

    def _make_decay(self, features, tau_mem, dt, learn_tau, beta=None):
        return Decay(features, tau_mem, dt, learn_tau, "tau_mem", beta=beta)

    def _threshold(self, dtype):
        th = self.threshold
        return th[...].astype(dtype) if isinstance(th, nnx.Param) else th

    def input_current(self, x, b):
        """The current the neuron integrates, ``(1 - b) i`` or ``input_scale * i``, in ``x``'s dtype."""
        a = None if self.syn is None else _as(self.syn(), x.dtype)
        current = x if a is None else leaky_integrate(x, a, backend="sequential" if self.backend == "sequential"
                                                      else "auto")
        return current if self.input_scale == 1.0 else current * input_factor(self.input_scale, b)

    def __call__(self, x, v0=None, *, return_membrane: bool = False):
        """Spikes ``[T, B, ..., features]`` (and the pre-reset membrane with ``return_membrane``)."""
        x = _check_input(x, self.features, type(self).__name__)
        xc = x.astype(C.compute_dtype(x.dtype))
        b = _as(self.mem(), xc.dtype)
        out = lif(self.input_current(xc, b), b, self._threshold(xc.dtype), reset=self.reset, v_reset=self.v_reset,
                  surrogate=self.surrogate, v0=v0, detach_reset=self.detach_reset, backend=self.backend,
                  return_membrane=return_membrane)
        if return_membrane:
            return out[0].astype(x.dtype), out[1].astype(x.dtype)
        return out.astype(x.dtype)


class PLIF(LIF):
    """Parametric LIF (Fang et al., ICCV 2021; :class:`spikescan.nn.PLIF`): :class:`LIF` with a learned
    decay ``sigmoid(w)`` per neuron; ``beta=`` (keyword-only) starts it at ``beta`` (``w = logit(beta)``)."""

    def _make_decay(self, features, tau_mem, dt, learn_tau, beta=None):
        return SigmoidDecay(features, tau_mem, dt, "tau_mem", beta=beta)


class SPSN(TimeFirst):
    """Stochastic Parallelizable Spiking Neuron (:class:`spikescan.nn.SPSN`, SPSN eq. 5, 7, 13-19)::

        i[t] = a i[t-1] + x[t]                        (i = x when tau_syn is None)
        u[t] = b u[t-1] + (1 - b) i[t]
        s[t] ~ Bernoulli(sigmoid(u[t]))               firing="sb", backward p^2 (1 - p)
        s[t] = 1[logit_scale*u[t] + L[t] > 0]         firing="gs", L ~ Logistic, straight-through

    The integration has no reset, so ``backend="associative"`` computes it in parallel over
    time.  Randomness: ``__call__(x, key)`` with an explicit PRNG key, or, without one, the
    ``spikes`` stream of the ``rngs`` given at construction (``nnx.Rngs(spikes=seed)``; any
    ``nnx.Rngs`` falls back to its default stream), advanced at every call.  ``beta=`` / ``alpha=``
    (keyword-only): ``b`` / ``a`` per step instead of ``tau_mem`` / ``tau_syn``, as on the torch side.
    """

    def __init__(self, features: int, tau_syn: float | None = C.default(0.02), tau_mem: float = C.default(0.02),
                 dt: float = 1e-3, firing: str = "sb", learn_tau: bool = False, backend: str = "auto",
                 gs_tau: float = 1.0, logit_scale: float = 1.0, *, rngs: nnx.Rngs | None = None,
                 beta: float | None = None, alpha: float | None = None):
        tau_mem, beta = C.resolve_decay(tau_mem, beta, "tau_mem", "beta")
        tau_syn, alpha = C.resolve_decay(tau_syn, alpha, "tau_syn", "alpha")
        self.features = _features(features)
        self.firing = C.choice(firing, "firing", FIRING_MODES)
        self.backend = C.choice(backend, "backend", SCAN_BACKENDS)
        self.gs_tau = C.positive_float(gs_tau, "gs_tau")
        self.logit_scale = C.positive_float(logit_scale, "logit_scale")
        if rngs is not None and not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be a flax.nnx.Rngs or None, got {type(rngs).__name__}")
        self.rngs = rngs
        self.syn = Decay(features, tau_syn, dt, learn_tau, "tau_syn", beta=alpha) if tau_syn is not None else None
        self.mem = Decay(features, tau_mem, dt, learn_tau, "tau_mem", beta=beta)

    def membrane(self, x):
        """The membrane ``u`` before firing, in ``x``'s dtype."""
        x = _check_input(x, self.features, "SPSN")
        return self._membrane(x.astype(C.compute_dtype(x.dtype))).astype(x.dtype)

    def _membrane(self, xc):
        current = xc if self.syn is None else leaky_integrate(xc, _as(self.syn(), xc.dtype), backend=self.backend)
        b = _as(self.mem(), xc.dtype)
        return leaky_integrate(current, b, scale=1.0 - b, backend=self.backend)

    def __call__(self, x, key=None, *, noise=None):
        """Spikes ``[T, B, ..., features]``; ``noise`` (uniforms for "sb", Logistic samples for "gs")
        replaces the draw, as on the torch side."""
        x = _check_input(x, self.features, "SPSN")
        if noise is None and key is None:
            if self.rngs is None:
                raise ValueError("SPSN needs randomness: pass key=jax.random.key(...) or build it with "
                                 "rngs=nnx.Rngs(spikes=seed)")
            key = self.rngs.spikes()
        u = self._membrane(x.astype(C.compute_dtype(x.dtype)))
        if self.firing == "sb":
            s = sigmoid_bernoulli(u, key, noise=noise)
        else:
            s = gumbel_spike(u, key, tau=self.gs_tau, logit_scale=self.logit_scale, noise=noise)
        return s.astype(x.dtype)


class Threshold(nnx.Module):
    """Per-step ``s = H(x - threshold)`` (forward only): NIR's ``Threshold`` node, the deterministic
    firing of an SPSN exported with ``spsn="threshold"``."""

    def __init__(self, threshold):
        self.threshold = nnx.Variable(jnp.asarray(threshold, jnp.float32))

    def __call__(self, x):
        return (x >= self.threshold[...].astype(x.dtype)).astype(x.dtype)


def _stochastic(layer) -> bool:
    return isinstance(layer, SPSN)


class SNN(nnx.Module):
    """A network of per-step layers and neurons over ``[T, B, ...]`` (the paper's ``snn_wrapper``).

    Layers that are :class:`TimeFirst` (the neurons, the readout) get the whole sequence; every
    other layer (``nnx.Linear``, ``nnx.Conv`` on ``[T, B, H, W, C]``, ``nnx.Dropout``, an
    activation) is a per-step layer, applied to the ``T * B`` steps folded into one batch.
    ``__call__(x, key=None)``: with a ``key``, each stochastic layer gets its own sub-key (the
    same key gives the same spikes); without one they draw from their ``rngs``.
    """

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("SNN needs at least one layer")
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise TypeError(f"layer {i} ({type(layer).__name__}) is not callable")
        self.layers = nnx.List(layers)

    def __call__(self, x, key=None):
        x = C.as_array(x, "x")
        if x.ndim < 2:
            raise ValueError(f"SNN: x must be time-first [T, B, ...], got shape {tuple(x.shape)}")
        stochastic = [i for i, layer in enumerate(self.layers) if _stochastic(layer)]
        keys = dict(zip(stochastic, jax.random.split(key, len(stochastic)))) if key is not None and stochastic else {}
        for i, layer in enumerate(self.layers):
            if isinstance(layer, TimeFirst):
                x = layer(x, keys[i]) if i in keys else layer(x)
            else:
                T, B = x.shape[:2]
                y = layer(x.reshape((T * B,) + x.shape[2:]))
                x = y.reshape((T, B) + y.shape[1:])
        return x


class _Jitted:
    """``snn_wrapper``'s result: ``network(x, key=None)`` runs one compiled XLA program."""

    def __init__(self, model: SNN):
        self.model = model
        graphdef, state = nnx.split(model)
        self._graphdef = graphdef

        def apply(state, x, key):
            m = nnx.merge(graphdef, state)
            y = m(x, key)
            return y, nnx.state(m)

        self._apply = jax.jit(apply)
        self._state = state

    def __call__(self, x, key=None):
        y, self._state = self._apply(self._state, x, key)
        nnx.update(self.model, self._state)
        return y


def snn_wrapper(layers, *, jit: bool = True):
    """The paper's ``snn_wrapper((Conv(...), LIF(...)), ...)``: a multi-step network from a stack of
    per-step layers and neurons, compiled by ``jax.jit`` (``jit=False``: the plain :class:`SNN`).

    The returned callable keeps the module as ``.model`` (for training with ``nnx.grad`` /
    ``nnx.Optimizer``, or for :func:`spikescan.jax.export.to_nir`).
    """
    model = layers if isinstance(layers, SNN) else SNN(*layers)
    return _Jitted(model) if jit else model
