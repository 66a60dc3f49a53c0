"""Leaky integrate (LI, readout), leaky integrate-and-fire (LIF, PLIF) and recurrent LIF (RLIF) layers."""

from __future__ import annotations

import torch
from torch import nn

from .. import defaults as D
from .. import surrogate as surrogate_lib
from .._checks import (as_param_tensor, check_choice, check_finite, check_input_scale, check_positive_int, compute_dtype,
                       input_factor)
from ..ops.lif import LIFParameters, lif, lif_step
from ..ops._backend import backends
from ..ops.leaky import leaky_integrate, leaky_step
from .base import (Decay, SigmoidDecay, SpikingNeuron, StatefulModule, as_dtype, as_output, check_input,
                   check_step_input, check_step_params, default, resolve_decay, validates_once)
from .state import LIFState, LIState, RLIFState, check_state, last, legacy_state, pack, state_tensor
from .registry import register_neuron


class LI(StatefulModule):
    """Non-spiking leaky integrator, the readout of SPSN networks (SPSN, Zhang et al., eq. 5, 7).

    With ``a = exp(-dt/tau_syn)``, ``b = exp(-dt/tau_mem)``::

        i[t] = a i[t-1] + x[t]            (i = x when tau_syn is None, the default)
        u[t] = b u[t-1] + c i[t]          c = input_scale (default 1), or 1 - b with "one_minus_decay"

    With defaults (:mod:`spikescan.defaults`) ``LI(n)(x)`` is ``ops.leaky_integrate(x, b)``; the
    SPSN networks' readout is ``LI(n, tau_syn, tau_mem, input_scale="one_minus_decay")``.

    ``forward(x, state=None, *, return_state=False)`` returns the membrane ``u``
    ``[T, B, *, features]`` (and the :class:`~spikescan.nn.state.LIState` ``(i[T-1], u[T-1])``
    with ``return_state``), starting from ``state`` (``None``: ``i[-1] = u[-1] = 0``);
    :meth:`step` runs one step.  Chunks continue the whole sequence bit for bit on the
    ``"sequential"`` and ``"fused"`` backends (``"fft"`` / ``"chunked"``: to rounding).

    ``beta=`` / ``alpha=`` (keyword-only, snnTorch's names) give the decays ``b`` / ``a`` per
    step directly, in (0, 1), instead of ``tau_mem`` / ``tau_syn`` (giving both for one stage
    is an error); see :class:`LIF`.
    """

    def __init__(self, features: int, tau_syn: float | None = default(D.TAU_SYN),
                 tau_mem: float = default(D.TAU_MEM), dt: float = D.DT, learn_tau: bool = False,
                 backend: str = "auto", *, input_scale: str | float = D.INPUT_SCALE,
                 beta: float | None = None, alpha: float | None = None):
        super().__init__()
        tau_mem, beta = resolve_decay(tau_mem, beta, "tau_mem", "beta")
        tau_syn, alpha = resolve_decay(tau_syn, alpha, "tau_syn", "alpha")
        self.features = check_positive_int(features, "features")
        self.backend = backend
        self.syn = Decay(features, tau_syn, dt, learn_tau, "tau_syn", beta=alpha) if tau_syn is not None else None
        self.mem = Decay(features, tau_mem, dt, learn_tau, "tau_mem", beta=beta)
        self.input_scale = check_input_scale(input_scale)

    @validates_once
    def forward(self, x: torch.Tensor, state: LIState | None = None, *, return_state: bool = False):
        state = check_state(self, state, LIState)
        xc = check_input(self, x, self.features)
        i0, u0 = _initial_current(self, state, xc), None
        if state is not None:
            u0 = state_tensor(state.u, "state.u", xc)
        current = xc if self.syn is None else leaky_integrate(xc, as_dtype(self.syn(), xc.dtype), v0=i0,
                                                              backend=self.backend)
        b = as_dtype(self.mem(), xc.dtype)
        u = leaky_integrate(current, b, scale=input_factor(self.input_scale, b), v0=u0, backend=self.backend)
        new = LIState(None if self.syn is None else last(current), last(u)) if return_state else None
        return pack(u, x.dtype, state=new)

    def step(self, x_t: torch.Tensor, state: LIState | None = None):
        """One step ``x_t`` ``[B, *, features]``: ``(u_t, state)``, the sequence call's numbers
        (:func:`~spikescan.ops.leaky.leaky_step`, the loop every backend of the scan reproduces)."""
        x, seq, state = _step_setup(self, x_t, state, LIState)
        zero = x.new_zeros(())
        i = x
        if self.syn is not None:
            i0 = _initial_current(self, state, seq)
            i = leaky_step(x, zero if i0 is None else i0, as_dtype(self.syn(), x.dtype))
        b = as_dtype(self.mem(), x.dtype)
        u0 = zero if state is None else state_tensor(state.u, "state.u", seq)
        u = leaky_step(i, u0, b, input_factor(self.input_scale, b))
        return u.to(x_t.dtype), LIState(None if self.syn is None else i, u)


def _step_setup(module, x_t, state, cls):
    """``(x, x[None], state)``: one step's checked input in the compute dtype, as a one-step
    sequence for the state checks, and the checked state."""
    check_step_input(module, x_t, module.features)
    state = check_state(module, state, cls)
    x = x_t.to(compute_dtype(x_t.dtype))
    check_step_params(module, x)
    return x, x.unsqueeze(0), state


def _initial_current(module, state, x):
    """The validated ``state.i`` of a layer with a synaptic stage (``None``: zero)."""
    if state is None or state.i is None:
        return None
    if module.syn is None:
        raise ValueError(f"state.i must be None: this {type(module).__name__} has no synaptic stage (tau_syn=None)")
    return state_tensor(state.i, "state.i", x)


# Backends of the LIF modules; the same names are valid for ``leaky_integrate`` (the current).
LIF_BACKENDS = ("auto", *backends("lif"))


class LIF(SpikingNeuron):
    """Leaky integrate-and-fire with reset, exact (computed step by step or by a time-fused kernel).

    With ``a = exp(-dt/tau_syn)``, ``b = exp(-dt/tau_mem)`` (SPSN eq. 5-6 with a reset)::

        i[t] = a i[t-1] + x[t]                      (skipped when tau_syn is None, the default)
        v[t] = b v'[t-1] + c i[t]                   c = input_scale (default 1), or 1 - b
        s[t] = H(v[t] - threshold)                   surrogate gradient in backward
        v'[t] = v[t] (1 - s[t]) + v_reset s[t]       reset="zero"   (SPSN LIF baseline)
        v'[t] = v[t] - threshold s[t]                reset="subtract"

    Defaults (:mod:`spikescan.defaults`, shared with :func:`spikescan.ops.lif.lif` and the JAX
    side): no synaptic stage, ``tau_mem`` 20 ms at ``dt`` 1 ms, the current unscaled
    (``input_scale=1.0``), threshold 1, reset to 0 with the reset's spike not detached,
    surrogate ``FastSigmoid(25)``; so ``LIF(n)(x)`` is ``ops.lif(x, exp(-1/20))``.  The SPSN
    paper's LIF baseline is ``LIF(n, tau_syn=0.02, input_scale="one_minus_decay",
    detach_reset=True, surrogate=FastSigmoid(100))`` (what ``spikescan train`` builds).

    ``backend`` is passed to :func:`spikescan.ops.lif.lif` (and to the current's
    :func:`spikescan.ops.leaky_integrate`): ``"auto"`` runs the time-fused kernel where it can
    (CPU with numba, CUDA with Triton, a built-in surrogate), ``"fused"`` insists on it,
    ``"sequential"`` is the Python-loop reference (needed for double backward or a custom
    surrogate).

    ``forward(x, state=None, *, return_state=False, return_membrane=False)`` returns the spikes
    ``s`` ``[T, B, *, features]``, or ``(s, [v], [state])`` with the requested items: ``v`` the
    pre-reset membrane, ``state`` the :class:`~spikescan.nn.state.LIFState` ``(i[T-1], v'[T-1])``
    to continue from (``state=None``: ``i[-1] = v'[-1] = 0``).  Chunks fed with the carried
    state give the whole sequence's spikes bit for bit and its gradients; :meth:`step` runs one
    step.  ``forward(x, v0)`` (an initial membrane ``v'[-1]``) is deprecated: pass
    ``state=LIFState(i=None, v=v0)``.

    Decays per step instead of time constants (snnTorch's names, keyword-only): ``beta=`` is
    ``b`` and ``alpha=`` is ``a``, each a number in (0, 1) replacing ``tau_mem`` / ``tau_syn``
    (giving both for one stage is a ``ValueError``).  A fixed decay is then exactly that number;
    ``learn_tau=True`` starts the learned decay at exactly ``beta`` (its time constant is
    ``-dt / log(beta)``).  ``LIF(n, beta=0.9, reset="subtract")``
    is snnTorch's ``Leaky(beta=0.9, reset_mechanism="subtract", reset_delay=False)``; the
    README's migration table maps every peer's arguments.
    """

    def __init__(self, features: int, tau_syn: float | None = default(D.TAU_SYN),
                 tau_mem: float = default(D.TAU_MEM), dt: float = D.DT, threshold: float = D.THRESHOLD,
                 reset: str = D.RESET, v_reset: float = D.V_RESET, surrogate=None,
                 detach_reset: bool = D.DETACH_RESET, learn_tau: bool = False, learn_threshold: bool = False,
                 input_scale: str | float = D.INPUT_SCALE,
                 backend: str = "auto", *, beta: float | None = None, alpha: float | None = None):
        super().__init__()
        tau_mem, beta = resolve_decay(tau_mem, beta, "tau_mem", "beta")
        tau_syn, alpha = resolve_decay(tau_syn, alpha, "tau_syn", "alpha")
        check_choice(reset, "reset", ("zero", "subtract"))
        check_choice(backend, "backend", LIF_BACKENDS)
        try:  # a [features] tensor would make the comparison below a RuntimeError
            if isinstance(threshold, (str, bool)):
                raise TypeError
            threshold = float(threshold)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"threshold must be one number > 0 (per neuron: learn_threshold=True, or assign a "
                             f"[features] tensor to .threshold), got {threshold!r}") from None
        if not (threshold > 0):
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        self.features = check_positive_int(features, "features")
        self.reset = reset
        self.v_reset = float(v_reset)
        self.surrogate = surrogate_lib.get(surrogate)
        self.detach_reset = bool(detach_reset)
        self.backend = backend
        self.input_scale = check_input_scale(input_scale)
        self.syn = Decay(features, tau_syn, dt, False, "tau_syn", beta=alpha) if tau_syn is not None else None
        self.mem = self._make_decay(features, tau_mem, dt, learn_tau, beta)
        if learn_threshold:
            self.threshold = nn.Parameter(torch.full((features,), float(threshold)))
        else:
            self.threshold = float(threshold)

    def _make_decay(self, features, tau_mem, dt, learn_tau, beta=None):
        return Decay(features, tau_mem, dt, learn_tau, "tau_mem", beta=beta)

    def _threshold(self, x: torch.Tensor):
        """The threshold in ``x``'s dtype; a learned (tensor) one checked ``> 0`` here, once per call
        (the op inside trusts the module: it would otherwise check it again)."""
        if isinstance(self.threshold, torch.Tensor):
            return as_param_tensor(self.threshold, "threshold", x, low=0.0, low_inclusive=False,
                                   always=True).to(x.dtype)
        return self.threshold

    def _current(self, x: torch.Tensor, i0) -> torch.Tensor:
        """The synaptic current ``i`` from ``i[-1] = i0`` (``x`` itself without a synaptic stage)."""
        if self.syn is None:
            return x
        return leaky_integrate(x, as_dtype(self.syn(), x.dtype), v0=i0, backend=self.backend)

    def _input(self, x: torch.Tensor, b) -> torch.Tensor:
        """The membrane's input from rest: ``_scaled(_current(x, None), b)`` (the JAX parity tests use it)."""
        return self._scaled(self._current(x, None), b)

    def _scaled(self, current: torch.Tensor, b) -> torch.Tensor:
        """The membrane's input ``(1 - b) i`` (or ``input_scale * i``), in ``x``'s (compute) dtype."""
        if self.input_scale == 1.0:  # no pass over [T, B, N] for a unit scale
            return current
        return current * input_factor(self.input_scale, b)

    @validates_once
    def forward(self, x: torch.Tensor, state: LIFState | None = None, *, return_state: bool = False,
                return_membrane: bool = False, v0=None):
        state, v_label = legacy_state(self, state, v0, LIFState)
        xc = check_input(self, x, self.features)
        b = as_dtype(self.mem(), xc.dtype)
        i0 = _initial_current(self, state, xc)
        v_init = None if state is None else state_tensor(state.v, v_label, xc)
        current = self._current(xc, i0)
        out = lif(self._scaled(current, b), b, self._threshold(xc), reset=self.reset,
                  v_reset=self.v_reset, surrogate=self.surrogate, v0=v_init, detach_reset=self.detach_reset,
                  backend=self.backend, return_membrane=return_membrane, return_state=return_state)
        if not (return_membrane or return_state):
            return as_output(out, x.dtype)
        new = LIFState(None if self.syn is None else last(current), out[-1]) if return_state else None
        return pack(out[0], x.dtype, out[1] if return_membrane else None, new)

    def step(self, x_t: torch.Tensor, state: LIFState | None = None):
        """One step ``x_t`` ``[B, *, features]``: ``(s_t, state)``.

        :func:`~spikescan.ops.lif.lif_step` on the current of
        :func:`~spikescan.ops.leaky.leaky_step`: the operations the fused kernels reproduce bit
        for bit, so a loop of steps gives the sequence call's spikes on every backend, without
        its per-call dispatch (autograd works through it, as through the sequential loop).
        """
        x, seq, state = _step_setup(self, x_t, state, LIFState)
        zero = x.new_zeros(())
        i = x
        if self.syn is not None:
            i0 = _initial_current(self, state, seq)
            i = leaky_step(x, zero if i0 is None else i0, as_dtype(self.syn(), x.dtype))
        b = as_dtype(self.mem(), x.dtype)
        v0 = zero if state is None else state_tensor(state.v, "state.v", seq)
        p = LIFParameters(b, as_dtype(self.threshold, x.dtype), self.v_reset, self.reset, self.surrogate,
                          self.detach_reset)
        s, _, v = lif_step(self._scaled(i, b), v0, p)
        return s.to(x_t.dtype), LIFState(None if self.syn is None else i, v)

    def extra_repr(self) -> str:
        return (f"features={self.features}, reset={self.reset!r}, surrogate={self.surrogate}, "
                f"backend={self.backend!r}")


class PLIF(LIF):
    """Parametric LIF: :class:`LIF` whose membrane decay ``sigmoid(w)`` is learned per neuron.

    Fang et al., "Incorporating learnable membrane time constant to enhance learning of spiking
    neural networks", ICCV 2021.  Same equations as :class:`LIF` with ``b = sigmoid(w)``;
    ``w`` starts at ``logit(exp(-dt/tau_mem))``, or ``logit(beta)`` with ``beta=`` (the initial
    decay, keyword-only; SpikingJelly's ``ParametricLIFNode(init_tau)`` is ``beta = 1 - 1/init_tau``).
    """

    def _make_decay(self, features, tau_mem, dt, learn_tau, beta=None):
        return SigmoidDecay(features, tau_mem, dt, "tau_mem", beta=beta)


class RLIF(LIF):
    """Recurrent LIF: :class:`LIF` whose spikes of step ``t-1`` feed back into the current of step ``t``.

    With ``a = exp(-dt/tau_syn)``, ``b = exp(-dt/tau_mem)``, a learned recurrent matrix
    ``W_rec`` (``features x features``, :attr:`recurrent`, an ``nn.Linear`` without bias by
    default) and ``s[-1] = 0``::

        i[t]  = a i[t-1] + x[t] + W_rec s[t-1]        (i[t] = x[t] + W_rec s[t-1] when tau_syn is None)
        v[t]  = b v'[t-1] + (1 - b) i[t]              (or input_scale * i[t])
        s[t]  = H(v[t] - threshold)                   surrogate gradient in backward
        v'[t] = v[t] (1 - s[t]) + v_reset s[t]        reset="zero"
        v'[t] = v[t] - threshold s[t]                 reset="subtract"

    This is the recurrent spiking network of the SHD benchmark (Cramer, Stradmann, Schemmel &
    Zenke, "The Heidelberg spiking data sets...", IEEE TNNLS 2020: current-based LIF with
    recurrent synapses into the synaptic current), the recurrent baseline the SPSN paper
    compares against (its 83.2 % on SHD); the SPSN paper's conclusion notes that recurrence
    makes a neuron sequential again.  Hence this module runs a Python loop over ``T`` (the
    feedback ``W_rec s[t-1]`` needs the spikes of the previous step), with autograd through the
    loop: BPTT through the membrane, the resets and, via the surrogate, the recurrent spikes.
    With ``W_rec = 0`` it computes exactly :class:`LIF`.

    Same arguments as :class:`LIF` (``beta=`` / ``alpha=`` included) except ``backend`` (always
    the loop), plus ``recurrent_bias``.  ``forward(x, state=None, *, return_state=False, return_membrane=False)``
    as :class:`LIF`'s, with the :class:`~spikescan.nn.state.RLIFState` ``(i, v', s)``: the
    last spikes are part of the state, since they feed the next step.  ``v0=`` (the initial
    membrane) is deprecated: ``state=RLIFState(i=None, v=v0, s=None)``.
    """

    def __init__(self, features: int, tau_syn: float | None = default(D.TAU_SYN),
                 tau_mem: float = default(D.TAU_MEM), dt: float = D.DT, threshold: float = D.THRESHOLD,
                 reset: str = D.RESET, v_reset: float = D.V_RESET, surrogate=None,
                 detach_reset: bool = D.DETACH_RESET, learn_tau: bool = False, learn_threshold: bool = False,
                 input_scale: str | float = D.INPUT_SCALE,
                 recurrent_bias: bool = False, *, beta: float | None = None, alpha: float | None = None):
        super().__init__(features, tau_syn, tau_mem, dt, threshold, reset, v_reset, surrogate, detach_reset,
                         learn_tau, learn_threshold, input_scale, backend="sequential", beta=beta, alpha=alpha)
        self.recurrent = nn.Linear(self.features, self.features, bias=bool(recurrent_bias))

    def forward(self, x: torch.Tensor, state: RLIFState | None = None, *, return_state: bool = False,
                return_membrane: bool = False, v0=None):
        state, v_label = legacy_state(self, state, v0, RLIFState)
        x_in = x
        x = check_input(self, x, self.features)
        check_finite(x, "x")  # NaN/Inf scan in debug mode (no op below does it for this loop)
        threshold = as_param_tensor(self.threshold, "threshold", x, low=0.0, low_inclusive=False).to(x.dtype)
        v_post = x.new_zeros(()) if state is None else state_tensor(state.v, v_label, x)
        s = x.new_zeros(x.shape[1:])
        if state is not None and state.s is not None:
            s = state_tensor(state.s, "state.s", x).expand(x.shape[1:])
        i = _initial_current(self, state, x)
        spikes, membrane = [], []
        const = self._constants(x, threshold)
        for x_t in x.unbind(0):  # unbind: T indexing ops would make BPTT quadratic in T
            s, v, v_post, i = self._advance(x_t, i, v_post, s, *const)
            spikes.append(s)
            membrane.append(v)
        new = RLIFState(None if self.syn is None else i, v_post, s) if return_state else None
        return pack(torch.stack(spikes), x_in.dtype, torch.stack(membrane) if return_membrane else None, new)

    def _constants(self, x: torch.Tensor, threshold):
        """What every step uses: ``(a, scale, W_rec, bias, LIFParameters)`` in ``x``'s dtype."""
        dt = x.dtype
        b = as_dtype(self.mem(), dt)
        a = None if self.syn is None else as_dtype(self.syn(), dt)
        scale = input_factor(self.input_scale, b)
        w = self.recurrent.weight.to(dt)
        bias = None if self.recurrent.bias is None else self.recurrent.bias.to(dt)
        return a, scale, w, bias, LIFParameters(b, threshold, self.v_reset, self.reset, self.surrogate,
                                                self.detach_reset)

    @staticmethod
    def _advance(x_t, i, v_post, s, a, scale, w, bias, p):
        """One step of the class docstring's equations: ``(s, v, v', i)`` (``i=None``: no current yet)."""
        drive = x_t + nn.functional.linear(s, w, bias)
        i = drive if a is None or i is None else a * i + drive
        s, v, v_post = lif_step(i * scale, v_post, p)
        return s, v, v_post, i

    def step(self, x_t: torch.Tensor, state: RLIFState | None = None):
        """One step ``x_t`` ``[B, *, features]``: ``(s_t, state)``, the loop body of :meth:`forward`."""
        x, seq, state = _step_setup(self, x_t, state, RLIFState)
        threshold = as_dtype(self.threshold, x.dtype)
        v0 = x.new_zeros(()) if state is None else state_tensor(state.v, "state.v", seq)
        s = x.new_zeros(x.shape)
        if state is not None and state.s is not None:
            s = state_tensor(state.s, "state.s", seq).expand(x.shape)
        s, _, v, i = self._advance(x, _initial_current(self, state, seq), v0, s, *self._constants(x, threshold))
        return s.to(x_t.dtype), RLIFState(None if self.syn is None else i, v, s)

    def extra_repr(self) -> str:
        return (f"features={self.features}, reset={self.reset!r}, surrogate={self.surrogate}, "
                f"recurrent_bias={self.recurrent.bias is not None}")


_EXACT_WHY = "the exact LIF's reset is not linear: no fft/chunked form"


@register_neuron("lif", backends=LIF_BACKENDS, why=_EXACT_WHY)
def _build_lif(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
    return LIF(features, tau_syn, tau_mem, dt, backend=backend, **kwargs)


@register_neuron("plif", backends=LIF_BACKENDS, why=_EXACT_WHY)
def _build_plif(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
    return PLIF(features, tau_syn, tau_mem, dt, backend=backend, **kwargs)


@register_neuron("rlif", backends=("auto", "sequential"), why="the recurrent LIF is a loop over time")
def _build_rlif(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
    return RLIF(features, tau_syn, tau_mem, dt, **kwargs)
