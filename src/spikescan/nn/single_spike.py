"""FastSNN layers: :class:`SingleSpikeLIF` (at most one spike per neuron, no time loop) and
:class:`MaxMembraneReadout` (infinite-threshold readout, max membrane over time).

Taylor, King & Harper, "Accelerating spiking neural network training" (FastSNN); the
equations and the phi/g first-spike extraction are in :mod:`spikescan.ops.first_spike`.
Time constants are in seconds with step ``dt`` (``decay = exp(-dt/tau)``); the paper uses
``tau = 10 ms`` for hidden and ``20 ms`` for readout neurons, ``dt = 1 ms`` (2 ms on SHD).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import surrogate as surrogate_lib
from .._checks import check_positive_int
from ..ops._backend import backends
from ..ops.events import SpikeEvents
from ..ops.first_spike import DEFAULT_SURROGATE, max_membrane_readout, single_spike_lif, single_spike_lif_events
from .base import Decay, SpikingNeuron, as_dtype, as_output, check_input
from .registry import register_neuron

__all__ = ["SingleSpikeLIF", "MaxMembraneReadout"]


def _input_scale(input_scale):
    if input_scale == "one_minus_decay":
        return None
    if isinstance(input_scale, bool) or not isinstance(input_scale, (int, float)) or not math.isfinite(input_scale):
        raise ValueError(f"input_scale must be 'one_minus_decay' or a finite float, got {input_scale!r}")
    return float(input_scale)


class SingleSpikeLIF(SpikingNeuron):
    """FastSNN neuron: LIF with an infinite refractory period, computed without a time loop.

    ``V~[t] = b V~[t-1] + (1 - b) x[t]`` (no reset, parallel scan), ``S~ = H(V~ - threshold)``
    with the surrogate ``(100 |.| + 1)^-2``, ``S = g(phi(S~))`` keeps each neuron's first spike.

    Args:
        features: size of the last input dim.
        tau, dt: membrane time constant and step in seconds, ``b = exp(-dt/tau)``.
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

    def __init__(self, features: int, tau: float = 0.01, dt: float = 1e-3, threshold: float = 1.0, *,
                 surrogate=None, input_scale="one_minus_decay", learn_tau: bool = False,
                 straight_through: bool = False, backend: str = "auto"):
        super().__init__()
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a finite number > 0, got {threshold!r}")
        self.features = check_positive_int(features, "features")
        self.mem = Decay(features, tau, dt, learn_tau, "tau")
        self.threshold = float(threshold)
        self.surrogate = DEFAULT_SURROGATE if surrogate is None else surrogate_lib.get(surrogate)
        self.input_scale = input_scale
        self._scale = _input_scale(input_scale)
        self.straight_through = bool(straight_through)
        self.backend = backend

    def forward(self, x, return_membrane: bool = False, *, input_layer: nn.Module | None = None):
        """Spikes ``[T, B, *, features]`` (at most one per neuron), and ``V~`` with ``return_membrane``.

        With ``input_layer`` (an :class:`~spikescan.nn.linear.EventLinear` whose ``out_features``
        are this layer's ``features``) the result is ``self(input_layer(x))``.  When ``x`` is
        :class:`~spikescan.ops.events.SpikeEvents` that the layer would run event-driven, on the
        CPU, with backend ``"auto"`` or ``"fused"`` and no membrane asked for, both run as one
        kernel each way (:func:`~spikescan.ops.first_spike.single_spike_lif_events`): the
        current ``W x + b`` ``[T, B, features]`` and its gradient are never stored.  Otherwise
        the two layers run one after the other.
        """
        if input_layer is not None:
            if getattr(input_layer, "out_features", None) != self.features:
                raise ValueError(f"input_layer must have out_features = {self.features} (this layer's features), "
                                 f"got {input_layer!r}")
            if self._fuses_with(input_layer, x, return_membrane):
                w = input_layer.weight
                return single_spike_lif_events(x, w, input_layer.bias, as_dtype(self.mem(), w.dtype), self.threshold,
                                               scale=self._scale, surrogate=self.surrogate,
                                               straight_through=self.straight_through)
            x = input_layer(x)
        xc = check_input(self, x, self.features)
        out = single_spike_lif(xc, as_dtype(self.mem(), xc.dtype), self.threshold, scale=self._scale,
                               surrogate=self.surrogate, straight_through=self.straight_through,
                               backend=self.backend, return_membrane=return_membrane)
        return as_output(out, x.dtype)

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


class MaxMembraneReadout(nn.Module):
    """FastSNN readout: leaky membrane with infinite threshold, ``max_t V[t]`` -> logits ``[B, *, features]``.

    ``V[t] = b V[t-1] + (1 - b) x[t]``; the paper feeds ``max_t V`` to softmax / cross-entropy.
    ``backend``: :func:`~spikescan.ops.first_spike.max_membrane_readout`'s (``"fused"``: one
    kernel each way).
    """

    def __init__(self, features: int, tau: float = 0.02, dt: float = 1e-3, *,
                 input_scale="one_minus_decay", learn_tau: bool = False, backend: str = "auto"):
        super().__init__()
        self.features = check_positive_int(features, "features")
        self.mem = Decay(features, tau, dt, learn_tau, "tau")
        self.input_scale = input_scale
        self._scale = _input_scale(input_scale)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = check_input(self, x, self.features)
        out = max_membrane_readout(xc, as_dtype(self.mem(), xc.dtype), scale=self._scale, backend=self.backend)
        return as_output(out, x.dtype)

    def extra_repr(self) -> str:
        return f"features={self.features}, input_scale={self.input_scale!r}"


@register_neuron("single-spike", backends=("auto", *backends("leaky_integrate")))
def _build_single_spike(features, *, tau_syn, tau_mem, dt, backend, num_steps, **kwargs):
    return SingleSpikeLIF(features, tau_mem, dt, backend=backend, **kwargs)
