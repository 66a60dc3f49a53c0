"""Leaky integrate (LI, readout), leaky integrate-and-fire (LIF, PLIF) and recurrent LIF (RLIF) layers."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import surrogate as surrogate_lib
from .._checks import as_param_tensor, check_choice, check_finite, check_positive_int
from ..ops.lif import LIFParameters, lif, lif_step
from ..ops._backend import backends
from ..ops.leaky import leaky_integrate
from .base import Decay, SigmoidDecay, SpikingNeuron, as_dtype, as_output, check_input
from .registry import register_neuron


class LI(nn.Module):
    """Non-spiking leaky integrator, the readout of SPSN networks (SPSN, Zhang et al., eq. 5, 7).

    ``i[t] = a i[t-1] + x[t]``, ``u[t] = b u[t-1] + (1-b) i[t]``; returns the membrane ``u``
    ``[T, B, *, features]``.  ``tau_syn=None`` drops the current stage (``i = x``).
    """

    def __init__(self, features: int, tau_syn: float | None = 0.02, tau_mem: float = 0.02,
                 dt: float = 1e-3, learn_tau: bool = False, backend: str = "auto"):
        super().__init__()
        self.features = check_positive_int(features, "features")
        self.backend = backend
        self.syn = Decay(features, tau_syn, dt, learn_tau, "tau_syn") if tau_syn is not None else None
        self.mem = Decay(features, tau_mem, dt, learn_tau, "tau_mem")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = check_input(self, x, self.features)
        current = xc if self.syn is None else leaky_integrate(xc, as_dtype(self.syn(), xc.dtype),
                                                              backend=self.backend)
        b = as_dtype(self.mem(), xc.dtype)
        return as_output(leaky_integrate(current, b, scale=1.0 - b, backend=self.backend), x.dtype)


# Backends of the LIF modules; the same names are valid for ``leaky_integrate`` (the current).
LIF_BACKENDS = ("auto", *backends("lif"))


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

    ``backend`` is passed to :func:`spikescan.ops.lif.lif` (and to the current's
    :func:`spikescan.ops.leaky_integrate`): ``"auto"`` runs the time-fused kernel where it can
    (CPU with numba, CUDA with Triton, a built-in surrogate), ``"fused"`` insists on it,
    ``"sequential"`` is the Python-loop reference (needed for double backward or a custom
    surrogate).  ``forward(x, v0)`` takes an optional initial membrane ``v'[-1]``.
    """

    def __init__(self, features: int, tau_syn: float | None = 0.02, tau_mem: float = 0.02,
                 dt: float = 1e-3, threshold: float = 1.0, reset: str = "zero", v_reset: float = 0.0,
                 surrogate=None, detach_reset: bool = True, learn_tau: bool = False,
                 learn_threshold: bool = False, input_scale: str | float = "one_minus_decay",
                 backend: str = "auto"):
        super().__init__()
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
        self.surrogate = surrogate_lib.get(surrogate if surrogate is not None else surrogate_lib.FastSigmoid(100.0))
        self.detach_reset = bool(detach_reset)
        self.backend = backend
        if not (input_scale == "one_minus_decay" or (isinstance(input_scale, (int, float))
                                                     and not isinstance(input_scale, bool)
                                                     and math.isfinite(input_scale))):
            raise ValueError(f"input_scale must be 'one_minus_decay' or a finite number, got {input_scale!r}")
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
        """The scaled current ``(1 - b) i`` (or ``input_scale * i``), in ``x``'s (compute) dtype."""
        a = None if self.syn is None else as_dtype(self.syn(), x.dtype)
        current = x if a is None else leaky_integrate(x, a, backend=self.backend)
        if self.input_scale == "one_minus_decay":
            return current * (1.0 - b)
        scale = float(self.input_scale)
        return current if scale == 1.0 else current * scale  # no pass over [T, B, N] for a unit scale

    def forward(self, x: torch.Tensor, v0: torch.Tensor | None = None) -> torch.Tensor:
        xc = check_input(self, x, self.features)
        b = as_dtype(self.mem(), xc.dtype)
        s = lif(self._input(xc, b), b, as_dtype(self.threshold, xc.dtype), reset=self.reset,
                v_reset=self.v_reset, surrogate=self.surrogate, v0=v0, detach_reset=self.detach_reset,
                backend=self.backend)
        return as_output(s, x.dtype)

    def extra_repr(self) -> str:
        return (f"features={self.features}, reset={self.reset!r}, surrogate={self.surrogate}, "
                f"backend={self.backend!r}")


class PLIF(LIF):
    """Parametric LIF: :class:`LIF` whose membrane decay ``sigmoid(w)`` is learned per neuron.

    Fang et al., "Incorporating learnable membrane time constant to enhance learning of spiking
    neural networks", ICCV 2021.  Same equations as :class:`LIF` with ``b = sigmoid(w)``.
    """

    def _make_decay(self, features, tau_mem, dt, learn_tau):
        return SigmoidDecay(features, tau_mem, dt, "tau_mem")


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

    Same arguments as :class:`LIF` except ``backend`` (always the loop), plus
    ``recurrent_bias``.  ``forward(x, v0=None, return_membrane=False)``: ``v0`` the initial
    membrane ``v'[-1]``; with ``return_membrane`` also the pre-reset membrane ``v``.
    """

    def __init__(self, features: int, tau_syn: float | None = 0.02, tau_mem: float = 0.02,
                 dt: float = 1e-3, threshold: float = 1.0, reset: str = "zero", v_reset: float = 0.0,
                 surrogate=None, detach_reset: bool = True, learn_tau: bool = False,
                 learn_threshold: bool = False, input_scale: str | float = "one_minus_decay",
                 recurrent_bias: bool = False):
        super().__init__(features, tau_syn, tau_mem, dt, threshold, reset, v_reset, surrogate, detach_reset,
                         learn_tau, learn_threshold, input_scale, backend="sequential")
        self.recurrent = nn.Linear(self.features, self.features, bias=bool(recurrent_bias))

    def forward(self, x: torch.Tensor, v0: torch.Tensor | None = None, return_membrane: bool = False):
        x_in = x
        x = check_input(self, x, self.features)
        check_finite(x, "x")  # NaN/Inf scan in debug mode (no op below does it for this loop)
        dt = x.dtype
        b = as_dtype(self.mem(), dt)
        a = None if self.syn is None else as_dtype(self.syn(), dt)
        scale = (1.0 - b) if self.input_scale == "one_minus_decay" else float(self.input_scale)
        threshold = as_param_tensor(self.threshold, "threshold", x, low=0.0, low_inclusive=False).to(dt)
        v_post = x.new_zeros(()) if v0 is None else as_param_tensor(v0, "v0", x).to(dt)
        w = self.recurrent.weight.to(dt)
        bias = None if self.recurrent.bias is None else self.recurrent.bias.to(dt)
        s = x.new_zeros(x.shape[1:])
        i = None
        spikes, membrane = [], []
        p = LIFParameters(b, threshold, self.v_reset, self.reset, self.surrogate, self.detach_reset)
        for x_t in x.unbind(0):  # unbind: T indexing ops would make BPTT quadratic in T
            drive = x_t + nn.functional.linear(s, w, bias)
            i = drive if a is None or i is None else a * i + drive
            s, v, v_post = lif_step(i * scale, v_post, p)
            spikes.append(s)
            membrane.append(v)
        out = torch.stack(spikes)
        return as_output((out, torch.stack(membrane)) if return_membrane else out, x_in.dtype)

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
