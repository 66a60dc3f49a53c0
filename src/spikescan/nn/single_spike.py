"""FastSNN layers: :class:`SingleSpikeLIF` (at most one spike per neuron, no time loop) and
:class:`MaxMembraneReadout` (infinite-threshold readout, max membrane over time).

Taylor, King & Harper, "Accelerating spiking neural network training" (FastSNN); the
equations and the phi/g first-spike extraction are in :mod:`spikescan.ops.first_spike`.
Time constants are in seconds with step ``dt`` (``decay = exp(-dt/tau)``); the paper uses
``tau = 10 ms`` for hidden and ``20 ms`` for readout neurons, ``dt = 1 ms`` (2 ms on SHD).

State (:mod:`spikescan.nn.state`).  A single-spike neuron run in chunks must remember whether
it has fired, and -- for the gradient -- the two sums behind FastSNN's ``phi``: its state is
``(V~, count, phi)`` with ``count = sum_{m<=t} S~[m]`` and ``phi = phi(S~)[t]``.  A chunk
starting at step ``t0`` has ``phi[t0 + tau] = phi0 + (tau + 1) count0 + phi_chunk[tau]``, so its
spikes are ``g`` of that: the chunk's own op (any backend, the fused kernel included) gives
``g(phi_chunk)``; a neuron that fired before (``count0 >= 1``) stays silent, and the offsets'
gradient is added exactly where ``g`` passes one (``phi = 0``, or everywhere with
``straight_through``).  Spikes equal the whole sequence's bit for bit, gradients to rounding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import surrogate as surrogate_lib
from .._checks import check_input_scale, check_positive_int, compute_dtype
from ..ops._backend import backends
from ..ops.events import SpikeEvents
from ..ops.firing import heaviside
from ..ops.first_spike import DEFAULT_SURROGATE, g, max_membrane_readout, single_spike_lif, single_spike_lif_events
from ..ops.kernel_integrate import exponential_kernel, kernel_integrate
from ..ops.leaky import leaky_integrate, leaky_step
from .base import (Decay, SpikingNeuron, StatefulModule, as_dtype, as_output, check_input, check_step_input,
                   check_step_params, default, resolve_decay, validates_once)
from .state import MaxMembraneState, SingleSpikeState, check_state, last, legacy_return_membrane, pack, state_tensor
from .registry import register_neuron

__all__ = ["SingleSpikeLIF", "SingleSpikeKernelLIF", "MaxMembraneReadout"]


def _check_threshold(threshold) -> float:
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a finite number > 0, got {threshold!r}")
    return float(threshold)


def _input_scale(input_scale):
    """The ops' ``scale``: None for ``"one_minus_decay"`` (the ops form ``1 - decay``), else the number."""
    input_scale = check_input_scale(input_scale)
    return None if input_scale == "one_minus_decay" else input_scale


class SingleSpikeLIF(SpikingNeuron):
    """FastSNN neuron: LIF with an infinite refractory period, computed without a time loop.

    ``V~[t] = b V~[t-1] + (1 - b) x[t]`` (no reset, parallel scan), ``S~ = H(V~ - threshold)``
    with the surrogate ``(100 |.| + 1)^-2``, ``S = g(phi(S~))`` keeps each neuron's first spike.

    Args:
        features: size of the last input dim.
        tau, dt: membrane time constant and step in seconds, ``b = exp(-dt/tau)``.
        beta: (keyword-only) the decay ``b`` per step directly, in (0, 1), instead of ``tau``
            (not both); a learned decay starts at exactly ``beta``.
        threshold: firing threshold (paper: 1).
        surrogate: default ``FastSigmoid(slope=100)``.
        input_scale: ``"one_minus_decay"`` (paper eq. 5) or a float (``1.0``: the authors' code).
        learn_tau: learn ``tau`` per neuron (the code trains its decay kernel; here it is
            parameterised by one time constant per neuron).
        straight_through: identity backward through ``g`` (see :func:`~spikescan.ops.first_spike.first_spike`).
        backend: :func:`~spikescan.ops.first_spike.single_spike_lif`'s: ``"fused"`` (one kernel
            each way, CPU or CUDA), or the composed op with that leaky-integration backend
            (``"sequential"``, ``"fft"``, ``"chunked"``); ``"auto"``: fused on the CPU.
    """

    def __init__(self, features: int, tau: float = default(0.01), dt: float = 1e-3, threshold: float = 1.0, *,
                 surrogate=None, input_scale="one_minus_decay", learn_tau: bool = False,
                 straight_through: bool = False, backend: str = "auto", beta: float | None = None):
        super().__init__()
        tau, beta = resolve_decay(tau, beta, "tau", "beta")
        self.features = check_positive_int(features, "features")
        self.mem = Decay(features, tau, dt, learn_tau, "tau", beta=beta)
        self.threshold = _check_threshold(threshold)
        self.surrogate = DEFAULT_SURROGATE if surrogate is None else surrogate_lib.get(surrogate)
        self.input_scale = input_scale
        self._scale = _input_scale(input_scale)
        self.straight_through = bool(straight_through)
        self.backend = backend

    @validates_once
    def forward(self, x, state: SingleSpikeState | None = None, *, return_state: bool = False,
                return_membrane: bool = False, input_layer: nn.Module | None = None,
                output_layer: nn.Module | None = None, readout: nn.Module | None = None):
        """Spikes ``[T, B, *, features]`` (at most one per neuron), or ``(s, [V~], [state])`` with
        the requested items: the no-reset membrane ``V~``, the
        :class:`~spikescan.nn.state.SingleSpikeState` after the last step (module docstring).
        ``forward(x, True)`` (``return_membrane`` positionally) is deprecated.

        With ``input_layer`` (an :class:`~spikescan.nn.linear.EventLinear` whose ``out_features``
        are this layer's ``features``) the result is ``self(input_layer(x))``.  When ``x`` is
        :class:`~spikescan.ops.events.SpikeEvents` that the layer would run event-driven, on the
        CPU, with backend ``"auto"`` or ``"fused"`` and no membrane asked for, both run as one
        kernel each way (:func:`~spikescan.ops.first_spike.single_spike_lif_events`): the
        current ``W x + b`` ``[T, B, features]`` and its gradient are never stored.  Otherwise
        the two layers run one after the other.

        With ``output_layer`` too (an :class:`~spikescan.nn.linear.EventLinear` whose
        ``in_features`` are this layer's ``features``; no state or membrane asked for) the result
        is the pair ``(s, output_layer(s))``.  Where the input layer fuses and ``output_layer``
        would run event-driven on these spikes (at most one per neuron: a density of at most
        ``1 / T``), the three run as one kernel each way (``single_spike_lif_events(...,
        out_weight=...)``): the spike gradient ``[T, B, features]`` is never stored either.

        With ``readout`` too (a :class:`MaxMembraneReadout` of ``output_layer``'s ``out_features``)
        the pair is ``(s, readout(output_layer(s)))``; fused as above, and with a readout without
        ``kernel_steps`` and backend ``"auto"`` or ``"fused"``, the readout joins the same
        autograd node (``single_spike_lif_events(...,
        readout_decay=...)``), whose backward carries the spike gradient from step to step.
        """
        if readout is not None and output_layer is None:
            raise ValueError("readout needs output_layer (the EventLinear that feeds it)")
        if output_layer is not None:
            return self._with_output_layer(x, state, return_state, return_membrane, input_layer, output_layer,
                                           readout)
        state, return_membrane = legacy_return_membrane(self, state, return_membrane)
        state = check_state(self, state, SingleSpikeState)
        stateful = state is not None or return_state
        if input_layer is not None:
            if getattr(input_layer, "out_features", None) != self.features:
                raise ValueError(f"input_layer must have out_features = {self.features} (this layer's features), "
                                 f"got {input_layer!r}")
            if not stateful and self._fuses_with(input_layer, x, return_membrane):
                w = input_layer.weight
                return single_spike_lif_events(x, w, input_layer.bias, as_dtype(self.mem(), w.dtype), self.threshold,
                                               scale=self._scale, surrogate=self.surrogate,
                                               straight_through=self.straight_through)
            x = input_layer(x)
        xc = check_input(self, x, self.features)
        if not stateful:
            out = single_spike_lif(xc, as_dtype(self.mem(), xc.dtype), self.threshold, scale=self._scale,
                                   surrogate=self.surrogate, straight_through=self.straight_through,
                                   backend=self.backend, return_membrane=return_membrane)
            return as_output(out, x.dtype)
        v0 = None if state is None else state_tensor(state.v, "state.v", xc)
        s, v = single_spike_lif(xc, as_dtype(self.mem(), xc.dtype), self.threshold, scale=self._scale, v0=v0,
                                surrogate=self.surrogate, straight_through=self.straight_through,
                                backend=self.backend, return_membrane=True)
        count0 = phi0 = None
        if state is not None:
            count0, phi0 = state_tensor(state.count, "state.count", xc), state_tensor(state.phi, "state.phi", xc)
            s = self._continue(s, count0, phi0)
        new = None
        if return_state:
            # the sums of phi over this chunk, with the surrogate gradient of every crossing
            count = heaviside(v - self.threshold, self.surrogate).cumsum(0)
            count_end, phi_end = count[-1], count.sum(0)
            if state is not None:
                count_end, phi_end = count0 + count_end, phi0 + xc.shape[0] * count0 + phi_end
            new = SingleSpikeState(last(v), count_end, phi_end)
        return pack(s, x.dtype, v if return_membrane else None, new)

    def step(self, x_t: torch.Tensor, state: SingleSpikeState | None = None):
        """One step ``x_t`` ``[B, *, features]``: ``(s_t, state)``, the sequence call's spikes,
        state and gradients by the module docstring's equations for one step::

            V~ = decay V~0 + scale x_t,   count = count0 + H(V~ - threshold),
            phi = phi0 + count,           s_t = g(phi)
        """
        check_step_input(self, x_t, self.features)
        state = check_state(self, state, SingleSpikeState)
        x = x_t.to(compute_dtype(x_t.dtype))
        check_step_params(self, x)
        seq = x.unsqueeze(0)
        decay = torch.as_tensor(as_dtype(self.mem(), x.dtype), dtype=x.dtype, device=x.device)
        scale = (1.0 - decay) if self._scale is None else self._scale  # formed as the op forms it
        zero = x.new_zeros(())
        v0, count0, phi0 = (zero, zero, zero) if state is None else (
            state_tensor(state.v, "state.v", seq), state_tensor(state.count, "state.count", seq),
            state_tensor(state.phi, "state.phi", seq))
        v = leaky_step(x, v0, decay, scale)
        count = count0 + heaviside(v - self.threshold, self.surrogate)
        phi = phi0 + count
        # straight-through: g's value, the identity's gradient (exact: phi is integer-valued)
        s = phi + (g(phi) - phi).detach() if self.straight_through else g(phi)
        return s.to(x_t.dtype), SingleSpikeState(v, count, phi)

    def _continue(self, s: torch.Tensor, count0: torch.Tensor, phi0: torch.Tensor) -> torch.Tensor:
        """The chunk's spikes ``g(phi0 + (tau + 1) count0 + phi_chunk)`` from its own
        ``s = g(phi_chunk)``: equal in value to ``s`` where the neuron has not fired before and 0
        where it has, with the gradient of the offset ``phi0 + (tau + 1) count0`` (0 in value
        before a neuron's first spike) added where ``g'`` is 1."""
        steps = torch.arange(1, s.shape[0] + 1, dtype=s.dtype, device=s.device).view(-1, *(1,) * (s.dim() - 1))
        offset = phi0 + steps * count0
        offset = offset - offset.detach()
        silent = (count0.detach() > 0).to(s.dtype)  # fired in an earlier chunk
        if self.straight_through:  # g's backward is the identity at every step
            return s - s.detach() * silent + offset
        # g'(phi) = 1 at phi = 0 (no crossing yet), 0 at every integer >= 1
        before_first = (s.detach().cumsum(0) == 0).to(s.dtype) * (1.0 - silent)
        return s * (1.0 - silent) + before_first * offset

    def _with_output_layer(self, x, state, return_state: bool, return_membrane, input_layer, output_layer,
                           readout=None):
        from .linear import EventLinear

        if state is not None or return_state or return_membrane:
            raise ValueError("output_layer runs without state or membrane outputs: call the layers one by one")
        if not isinstance(output_layer, EventLinear) or output_layer.in_features != self.features:
            raise ValueError(f"output_layer must be an EventLinear with in_features = {self.features} (this layer's "
                             f"features), got {output_layer!r}")
        if readout is not None and (not isinstance(readout, MaxMembraneReadout)
                                    or readout.features != output_layer.out_features):
            raise ValueError(f"readout must be a MaxMembraneReadout with features = {output_layer.out_features} "
                             f"(output_layer's out_features), got {readout!r}")
        if input_layer is not None and self._fuses_with(input_layer, x, False) and self._feeds_events(output_layer, x):
            w = input_layer.weight
            joins = readout is not None and readout.joins_fused()
            rkw = dict(readout_decay=as_dtype(readout.mem(), w.dtype), readout_scale=readout._scale) if joins else {}
            out = single_spike_lif_events(x, w, input_layer.bias, as_dtype(self.mem(), w.dtype), self.threshold,
                                          scale=self._scale, surrogate=self.surrogate,
                                          straight_through=self.straight_through,
                                          out_weight=output_layer.weight.to(w.dtype),
                                          out_bias=None if output_layer.bias is None else output_layer.bias.to(w.dtype),
                                          **rkw)
            return out if joins or readout is None else (out[0], readout(out[1]))
        s = self.forward(x, input_layer=input_layer)  # not self(...): this call's hooks are the caller's
        y = output_layer(s)
        return s, (y if readout is None else readout(y))

    @staticmethod
    def _feeds_events(output_layer: nn.Module, x) -> bool:
        """Whether ``output_layer`` would run this layer's spikes (density <= 1 / T) through the
        numba event kernel, as the fused op does."""
        if output_layer.mode == "dense" or output_layer.backend not in ("auto", "numba"):
            return False
        return output_layer.mode == "events" or 1.0 / max(x.shape[0], 1) <= output_layer.density_threshold

    def _fuses_with(self, input_layer: nn.Module, x, return_membrane: bool) -> bool:
        from ..ops import backends as op_backends
        from .linear import EventLinear

        return (isinstance(x, SpikeEvents) and isinstance(input_layer, EventLinear) and not return_membrane
                and self.backend in ("auto", "fused") and x.device.type == "cpu"
                and "fused" in op_backends("single_spike_lif", input_layer.weight, surrogate=self.surrogate)
                and input_layer.runs_events(x, kernel="numba"))

    def extra_repr(self) -> str:
        return (f"features={self.features}, threshold={self.threshold}, surrogate={self.surrogate}, "
                f"input_scale={self.input_scale!r}, straight_through={self.straight_through}")


class MaxMembraneReadout(StatefulModule):
    """FastSNN readout: leaky membrane with infinite threshold, ``max_t V[t]`` -> logits ``[B, *, features]``.

    ``V[t] = b V[t-1] + (1 - b) x[t]``; the paper feeds ``max_t V`` to softmax / cross-entropy.
    ``backend``: :func:`~spikescan.ops.first_spike.max_membrane_readout`'s (``"fused"``: one
    kernel each way).  ``beta=`` (keyword-only): the decay ``b`` per step instead of ``tau``.

    ``forward(x, state=None, *, return_state=False)``: with a
    :class:`~spikescan.nn.state.MaxMembraneState` ``(V, max V)`` the logits are the maximum over
    every step so far (those of the earlier chunks included), so a streamed sequence reads the
    whole sequence's logits after its last chunk; :meth:`step` gives the running logits.  A
    stateful call integrates with :func:`spikescan.ops.leaky_integrate` (the backend's scan)
    and takes ``amax``: the same numbers, and the gradient of ``amax`` -- split evenly among
    steps that tie for the maximum within a chunk, between the chunks by ``torch.maximum``.
    """

    def __init__(self, features: int, tau: float = default(0.02), dt: float = 1e-3, *,
                 input_scale="one_minus_decay", learn_tau: bool = False, backend: str = "auto",
                 beta: float | None = None, kernel_steps: int | None = None):
        super().__init__()
        tau, beta = resolve_decay(tau, beta, "tau", "beta")
        self.features = check_positive_int(features, "features")
        self.mem = Decay(features, tau, dt, learn_tau, "tau", beta=beta)
        self.input_scale = input_scale
        self._scale = _input_scale(input_scale)
        self.backend = backend
        self.kernel = None
        if kernel_steps is not None:
            if learn_tau:
                raise ValueError("kernel_steps and learn_tau exclude each other: the learned kernel replaces the decay")
            self.kernel = _learned_kernel(self.mem(), kernel_steps, self._scale, backend)

    @validates_once
    def forward(self, x: torch.Tensor, state: MaxMembraneState | None = None, *, return_state: bool = False):
        state = check_state(self, state, MaxMembraneState)
        xc = check_input(self, x, self.features)
        if self.kernel is not None:
            if state is not None or return_state:
                raise ValueError(f"{type(self).__name__} with a learned kernel has no streaming state (the kernel "
                                 "spans the whole window); call it on whole sequences")
            return as_output(_kernel_membrane(self, xc).amax(dim=0), x.dtype)
        decay = as_dtype(self.mem(), xc.dtype)
        if state is None and not return_state:
            return as_output(max_membrane_readout(xc, decay, scale=self._scale, backend=self.backend), x.dtype)
        scan = {"fused": "fused", "composed": "auto"}.get(self.backend, self.backend)
        v0 = None if state is None else state_tensor(state.v, "state.v", xc)
        decay, scale = self._leak(decay, xc)
        v = leaky_integrate(xc, decay, scale=scale, v0=v0, backend=scan)
        vmax = v.amax(dim=0)
        if state is not None:
            vmax = torch.maximum(state_tensor(state.vmax, "state.vmax", xc), vmax)
        return pack(vmax, x.dtype, state=MaxMembraneState(last(v), vmax) if return_state else None)

    def step(self, x_t: torch.Tensor, state: MaxMembraneState | None = None):
        """One step ``x_t`` ``[B, *, features]``: ``(logits so far, state)``, the stateful sequence call's numbers."""
        check_step_input(self, x_t, self.features)
        state = check_state(self, state, MaxMembraneState)
        x = x_t.to(compute_dtype(x_t.dtype))
        check_step_params(self, x)
        seq = x.unsqueeze(0)
        decay, scale = self._leak(as_dtype(self.mem(), x.dtype), x)
        v0 = x.new_zeros(()) if state is None else state_tensor(state.v, "state.v", seq)
        v = leaky_step(x, v0, decay, scale)
        vmax = v if state is None else torch.maximum(state_tensor(state.vmax, "state.vmax", seq), v)
        return vmax.to(x_t.dtype), MaxMembraneState(v, vmax)

    def joins_fused(self) -> bool:
        """Whether this readout can run inside ``single_spike_lif_events(..., readout_decay=...)``
        (``SingleSpikeLIF.forward(..., readout=self)``): no learned kernel, backend ``"auto"`` or
        ``"fused"`` (learned per-neuron decays that have come apart compose there)."""
        return self.kernel is None and self.backend in ("auto", "fused")

    def _leak(self, decay, x: torch.Tensor):
        """``(decay, scale)`` as tensors of ``x``'s dtype, ``scale = 1 - decay`` formed from the
        rounded decay as :func:`~spikescan.ops.first_spike.max_membrane_readout` forms it."""
        decay = torch.as_tensor(decay, dtype=x.dtype, device=x.device)
        return decay, (1.0 - decay) if self._scale is None else self._scale

    def extra_repr(self) -> str:
        kernel = "" if self.kernel is None else f", kernel_steps={self.kernel.shape[0]}"
        return f"features={self.features}, input_scale={self.input_scale!r}{kernel}"


def _learned_kernel(decay: float, kernel_steps, scale, backend: str) -> nn.Parameter:
    """``scale * decay^j``, ``j < kernel_steps``, as a trainable parameter (``scale`` None: ``1 - decay``)."""
    kernel_steps = check_positive_int(kernel_steps, "kernel_steps")
    if backend != "auto" and backend not in backends("kernel_integrate"):
        raise ValueError(f"with a learned kernel backend must be 'auto' or one of "
                         f"{list(backends('kernel_integrate'))} (kernel_integrate's), got {backend!r}")
    return nn.Parameter(exponential_kernel(decay, kernel_steps, (1.0 - decay) if scale is None else scale,
                                           dtype=torch.get_default_dtype()))


def _kernel_membrane(module, xc: torch.Tensor) -> torch.Tensor:
    if xc.shape[0] > module.kernel.shape[0]:
        raise ValueError(f"x has T = {xc.shape[0]} steps but {type(module).__name__}'s kernel covers "
                         f"{module.kernel.shape[0]} (kernel_steps): it was built for sequences of at most that length")
    return kernel_integrate(xc, module.kernel, backend=module.backend)  # it casts the kernel to xc's dtype


class SingleSpikeKernelLIF(SpikingNeuron):
    """FastSNN's single-spike neuron as the authors' code computes it: a learned membrane kernel.

    ``V~[t] = sum_j k[j] x[t - j]`` (:func:`~spikescan.ops.kernel_integrate`), ``S~ = H(V~ -
    threshold)`` with the surrogate, ``S = g(phi(S~))`` (the first spike, Propositions 1-2).
    The kernel ``k`` (one per layer, ``kernel_steps`` lags) starts at ``scale * beta^j``, where
    this is :class:`SingleSpikeLIF` (up to the order of the float sums), and is trained: webstorms/FastSNN's
    ``LinearFastLIFNeurons`` computes the membrane with a ``conv2d`` whose kernel is an
    ``nn.Parameter`` in the optimiser (its ``phi`` kernel is one too, but ``g'`` is 0 wherever
    ``phi`` could move it, so it keeps its ones; here ``phi`` is the fixed double cumsum).  No
    streaming state: the kernel spans the whole window of ``kernel_steps`` steps.

    Args:
        features: size of the last input dim.
        kernel_steps: the kernel's lags, at least the sequences' T (the authors: T).
        tau, dt, beta: the initial kernel's decay ``beta = exp(-dt/tau)`` (or ``beta`` directly).
        threshold, surrogate, input_scale, straight_through: as :class:`SingleSpikeLIF`.
        learn_kernel: train the kernel (default, the authors' code); False keeps ``scale beta^j``.
        backend: :func:`~spikescan.ops.kernel_integrate`'s (``"auto"``, ``"toeplitz"``, ``"fft"``,
            ``"sequential"``).
    """

    def __init__(self, features: int, kernel_steps: int, tau: float = default(0.01), dt: float = 1e-3,
                 threshold: float = 1.0, *, surrogate=None, input_scale="one_minus_decay", learn_kernel: bool = True,
                 straight_through: bool = False, backend: str = "auto", beta: float | None = None):
        super().__init__()
        tau, beta = resolve_decay(tau, beta, "tau", "beta")
        self.features = check_positive_int(features, "features")
        decay = Decay(features, tau, dt, False, "tau", beta=beta)()
        self.threshold = _check_threshold(threshold)
        self.surrogate = DEFAULT_SURROGATE if surrogate is None else surrogate_lib.get(surrogate)
        self.input_scale = input_scale
        self.straight_through = bool(straight_through)
        self.backend = backend
        self.kernel = _learned_kernel(decay, kernel_steps, _input_scale(input_scale), backend)
        self.kernel.requires_grad_(bool(learn_kernel))

    @validates_once
    def forward(self, x, state=None, *, return_state: bool = False, return_membrane: bool = False):
        """Spikes ``[T, B, *, features]`` (at most one per neuron), or ``(s, V~)`` with ``return_membrane``."""
        if state is not None or return_state:
            raise ValueError(f"{type(self).__name__} has no streaming state (its kernel spans the whole window); "
                             "call it on whole sequences")
        xc = check_input(self, x, self.features)
        v = _kernel_membrane(self, xc)
        # the first spike of the given membrane: single_spike_lif with decay 0 and input factor 1
        # integrates nothing (V~ = 0 * V~ + 1 * v = v exactly) and runs the fused kernel of
        # g(phi(H(V~ - threshold))) with its exact surrogate gradient
        s = single_spike_lif(v, 0.0, self.threshold, scale=1.0, surrogate=self.surrogate,
                             straight_through=self.straight_through)
        if return_membrane:
            return as_output(s, x.dtype), as_output(v, x.dtype)
        return as_output(s, x.dtype)

    def extra_repr(self) -> str:
        return (f"features={self.features}, kernel_steps={self.kernel.shape[0]}, threshold={self.threshold}, "
                f"surrogate={self.surrogate}, input_scale={self.input_scale!r}, "
                f"learn_kernel={self.kernel.requires_grad}")


@register_neuron("single-spike", backends=("auto", *backends("leaky_integrate")))
def _build_single_spike(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
    return SingleSpikeLIF(features, tau_mem, dt, backend=backend, **kwargs)


@register_neuron("single-spike-kernel", backends=("auto", *backends("kernel_integrate")))
def _build_single_spike_kernel(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
    if num_steps is None and "kernel_steps" not in kwargs:
        raise ValueError("neuron 'single-spike-kernel' needs num_steps (its kernel's length)")
    kwargs.setdefault("kernel_steps", num_steps)
    return SingleSpikeKernelLIF(features, tau=tau_mem, dt=dt, backend=backend, **kwargs)
