"""FastSNN single-spike neurons: first-spike extraction without a time loop (Taylor, King &
Harper, "Accelerating spiking neural network training", FastSNN).

A LIF neuron that may spike at most once (infinite refractory period after its first spike)
needs no reset: until it fires, its membrane is the no-reset membrane, which is a linear
leaky integration computable for all steps at once (paper eq. 5)::

    V~[t] = decay V~[t-1] + scale I[t],   V~[-1] = v0,        scale = 1 - decay (paper)
    S~[t] = Heaviside(V~[t] - threshold)                       (may fire many times)
    S[t]  = first_spike(S~)[t] = g(phi(S~))[t]                 (only the first of them)

with (Propositions 1 and 2, time index from 0 here)::

    phi(S~)[t] = sum_{k<=t} sum_{m<=k} S~[m]  = sum_{m<=t} (t - m + 1) S~[m]
    g(z)       = ReLU(z (1 - z) + 1) z

``phi`` is 0 before the first spike, exactly 1 at it and >= 2 after; ``g`` maps 0 -> 0,
1 -> 1 and every integer >= 2 -> 0.  Both are vectorized (two cumulative sums and a few
elementwise ops), so the whole layer runs without a sequential loop.

Gradients (paper): ``g'(0) = 1``, ``g'(1) = 0`` and ``g' = 0`` for ``z >= 2``, so the gradient of
``S`` reaches ``S~`` only at steps *before* the first spike (through phi's adjoint, weighted by
``t - m + 1``).  ``straight_through=True`` keeps the exact forward but makes ``g``'s backward the
identity (the variant of the authors' later work), so every step of ``S~`` gets gradient.

Spike condition: ``V~ >= threshold`` (the :func:`spikescan.ops.firing.heaviside` convention;
the paper writes ``V > 1``, which differs only on a measure-zero set of inputs).

Relation to the paper and code: the paper has the ``(1 - decay)`` input factor and a fixed tau
(``scale=None``, the default); the authors' code has no input factor (``scale=1.0``) and
learns the decay kernel (see :class:`spikescan.nn.SingleSpikeLIF`, ``learn_decay=True``).
The paper's surrogate is ``(beta |V| + 1)^-2`` with ``beta = 100``: ``FastSigmoid(slope=100)``.
Readout neurons have an infinite threshold and the loss uses their maximum membrane over
time: :func:`max_membrane_readout`.

Backends (``backend=``, :data:`BACKENDS`): the composed op above, its membrane by any
:func:`spikescan.ops.leaky_integrate` backend (``"sequential"``, ``"fft"``,
``"chunked"``), or ``"fused"``: the whole layer in one time-fused kernel each way (numba on the
CPU, Triton on CUDA; :mod:`spikescan.ops.single_spike_fused`), the same spikes and membranes bit
for bit and the composed op's gradient.  ``"auto"`` is ``"fused"`` on the CPU with a built-in
surrogate, else the composed op (the Triton kernel is not yet measured on a GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import surrogate as _surrogate
from .._checks import (as_param_tensor, check_choice, check_finite, check_float, check_tensor, check_time_first,
                       compute_dtype, debug_enabled)

__all__ = [
    "phi",
    "g",
    "first_spike",
    "single_spike_lif",
    "single_spike_lif_events",
    "max_membrane_readout",
    "DEFAULT_SURROGATE",
    "BACKENDS",
]

DEFAULT_SURROGATE = _surrogate.FastSigmoid(slope=100.0)
"""FastSNN's surrogate ``(100 |V| + 1)^-2`` (paper eq. 20, beta = 100)."""

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def phi(spikes: Tensor) -> Tensor:
    """Proposition 1: ``phi(S)[t] = sum_{k<=t} sum_{m<=k} S[m]`` (double cumulative sum over dim 0)."""
    return spikes.cumsum(0).cumsum(0)


def g(z: Tensor) -> Tensor:
    """Proposition 2: ``g(z) = ReLU(z (1 - z) + 1) z``; ``g(0) = 0, g(1) = 1, g(n) = 0`` for integers ``n >= 2``."""
    return F.relu(z * (1.0 - z) + 1.0) * z


class _GStraightThrough(torch.autograd.Function):
    """``g`` in forward, identity in backward."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        return g(z)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:
        return grad_out


def first_spike(spikes: Tensor, *, straight_through: bool = False, check: bool | None = None) -> Tensor:
    """Keep only the first spike of each neuron: ``g(phi(spikes))`` over the time axis (dim 0).

    Args:
        spikes: binary (0/1) floating tensor ``[T, ...]``.  Non-binary values are not rejected
            (that would cost a full pass) unless ``check`` / debug mode is on.
        straight_through: ``g``'s backward becomes the identity (forward unchanged).
        check: also verify that ``spikes`` holds only 0 and 1 (default: debug mode only).

    Returns:
        a tensor like ``spikes`` with at most one 1 per neuron, at its first spike.
        float16/bfloat16 are computed in float32 (the double cumsum reaches ``T (T+1) / 2``).
    """
    check_time_first(spikes, "spikes")
    check_finite(spikes, "spikes", check)
    if check or (check is None and debug_enabled()):
        if not bool(((spikes == 0) | (spikes == 1)).all()):
            raise ValueError("spikes must hold only 0 and 1")
    dtype = spikes.dtype
    s = spikes.float() if dtype in _LOW_PRECISION else spikes
    z = phi(s)
    out = _GStraightThrough.apply(z) if straight_through else g(z)
    return out.to(dtype)


def _integrate(x: Tensor, decay, scale, v0, backend: str) -> Tensor:
    """No-reset membrane ``u[t] = decay u[t-1] + scale x[t]`` (``scale=None``: ``1 - decay``)."""
    from .leaky import leaky_integrate

    if scale is None:
        scale = 1.0 - decay
    return leaky_integrate(x, decay, scale=scale, v0=v0, backend=backend)


def _check_decay(decay, x: Tensor) -> Tensor:
    return as_param_tensor(decay, "decay", x, low=0.0, high=1.0)


# backend -> how single_spike_lif and max_membrane_readout compute: "fused" the time-fused kernel
# (ops/single_spike_fused.py: numba on the CPU, Triton on CUDA), the others the composed op with
# that leaky-integration backend; "auto" is the fused kernel on the CPU with a built-in
# surrogate, else the composed op with leaky_integrate's own "auto".
BACKENDS = ("auto", "fused", "sequential", "fft", "chunked")


def _fused_ok(x: Tensor, sur) -> bool:
    from .single_spike_fused import supports_single_spike

    return supports_single_spike(x, sur)


def single_spike_lif(x: Tensor, decay, threshold=1.0, *, scale=None, v0=None, surrogate=None,
                     straight_through: bool = False, backend: str = "auto",
                     return_membrane: bool = False):
    """FastSNN single-spike LIF layer over the input current ``x`` ``[T, B, ...]``.

    ``V~ = leaky_integrate(x, decay, scale)`` (no reset), ``S~ = Heaviside(V~ - threshold)``
    with the surrogate, ``S = first_spike(S~)``.  Forward spikes equal those of a LIF that
    stops after its first spike (:func:`_single_spike_lif_sequential`).

    Args:
        x: input current, floating ``[T, ...]``.
        decay: ``beta = exp(-dt/tau)`` in [0, 1], float or tensor broadcastable to ``x.shape[1:]``.
        threshold: firing threshold (float or tensor), default 1.
        scale: input factor; ``None`` = ``1 - decay`` (the paper, eq. 5), ``1.0`` = the
            authors' code.
        v0: initial membrane ``V~[-1]`` (default 0).
        surrogate: default ``FastSigmoid(slope=100)`` (paper eq. 20).
        straight_through: see :func:`first_spike`.
        backend: ``"fused"``: one time-fused kernel forward and one backward (CPU: numba,
            CUDA: Triton; built-in surrogates; no double backward), the same spikes and
            membranes and the composed op's gradient (:mod:`spikescan.ops.single_spike_fused`).
            ``"sequential"``, ``"fft"``, ``"chunked"``: the composed op above, its membrane by
            that :func:`spikescan.ops.leaky_integrate` backend.  ``"auto"``: ``"fused"``
            on the CPU with a built-in surrogate, else the composed op with
            ``leaky_integrate``'s ``"auto"``.
        return_membrane: also return the no-reset membrane ``V~`` (its gradient is used).

    float16/bfloat16 inputs are computed in float32 by ``"fused"``; the composed op rounds the
    membrane to the input dtype before the threshold, so their spikes can differ there.
    """
    check_time_first(x, "x")
    check_choice(backend, "backend", BACKENDS)
    sur = DEFAULT_SURROGATE if surrogate is None else _surrogate.get(surrogate)
    if backend == "fused":
        from .single_spike_fused import check_device

        check_device(x)  # before the parameter checks touch x's device
    check_finite(x, "x")
    if backend == "fused" or (backend == "auto" and _fused_ok(x, sur)):
        return _single_spike_fused(x, decay, threshold, scale, v0, sur, straight_through, return_membrane)
    decay = _check_decay(decay, x)
    if scale is not None:
        scale = as_param_tensor(scale, "scale", x)
    thr = as_param_tensor(threshold, "threshold", x)
    from .firing import heaviside

    v = _integrate(x, decay, scale, v0, backend)
    s = first_spike(heaviside(v - thr, sur), straight_through=straight_through)
    return (s, v) if return_membrane else s


def _fused_params(x: Tensor, decay, scale, v0):
    """``(decay, scale, v0)`` validated in the compute dtype; ``scale=None`` becomes ``1 - decay``,
    formed here as the composed op does, so autograd carries that dependence."""
    compute = compute_dtype(x.dtype)
    decay = as_param_tensor(decay, "decay", x, low=0.0, high=1.0, dtype=compute)
    scale = 1.0 - decay if scale is None else as_param_tensor(scale, "scale", x, dtype=compute)
    if v0 is not None:
        v0 = as_param_tensor(v0, "v0", x, dtype=compute)
    return decay, scale, v0


def _single_spike_fused(x, decay, threshold, scale, v0, sur, straight_through, return_membrane):
    """Validate the parameters in the compute dtype and run the fused kernel."""
    from .single_spike_fused import single_spike_backend

    decay, scale, v0 = _fused_params(x, decay, scale, v0)
    thr = as_param_tensor(threshold, "threshold", x, dtype=compute_dtype(x.dtype))
    s, v = single_spike_backend(x, decay, thr, scale, v0, surrogate=sur, straight_through=bool(straight_through),
                                need_membrane=bool(return_membrane))
    return (s, v) if return_membrane else s


def single_spike_lif_events(x, weight: Tensor, bias: Tensor | None, decay, threshold=1.0, *, scale=None, v0=None,
                            surrogate=None, straight_through: bool = False, return_membrane: bool = False) -> Tensor:
    """The input layer and the single-spike neurons in one kernel each way:
    ``single_spike_lif(event_linear(x, weight, bias), decay, threshold, ...)`` without the current
    ``I = W x + b`` ``[T, B, O]`` or its gradient ever being stored.

    Args:
        x: :class:`spikescan.ops.events.SpikeEvents` ``[T, B, C]`` on the CPU (data: no gradient);
            its values, if any, are cast to the weight's dtype.
        weight: ``[O, C]``; bias: ``[O]`` or None.  Both get gradients.
        decay, threshold, scale, v0, surrogate, straight_through: as for :func:`single_spike_lif`,
            broadcastable to the per-step shape ``[B, O]`` (scalars or per neuron ``[O]``).
        return_membrane: not supported (raises): the membrane is never stored.

    Returns the spikes ``[T, B, O]`` in ``weight``'s dtype.  The same floating-point operations as
    the composition with the numba backends, in the same order: the current of step ``t``,
    sample ``b`` is the bias plus the weight columns of the row's events added in CSR order (as
    ``event_linear``'s numba forward), and the neurons are ``single_spike_lif``'s fused kernel,
    so the spikes equal the composition's bit for bit, and so do the gradients of ``weight``,
    ``decay``, ``threshold``, ``scale`` and ``v0`` (``gI`` is the same, and is summed in
    ``event_linear``'s order for the weight, per neuron in reverse time and then over samples
    by ``torch`` for the neuron parameters, as the composition does).  The bias gradient is
    summed in another order (each neuron's ``gI`` over time in reverse, in the compute dtype,
    then over the samples in float64), so it agrees to rounding.  Results do not depend on the
    number of threads.  Float32 and float64 kernels; half-precision weights are computed in
    float32 (without the composition's rounding of ``I`` to half).  CPU only (numba).
    """
    from .events import SpikeEvents, check_layer_params

    if return_membrane:
        raise ValueError("single_spike_lif_events does not return the membrane (it is never stored); use "
                         "single_spike_lif(event_linear(x, weight, bias), ..., return_membrane=True)")
    if not isinstance(x, SpikeEvents):
        raise TypeError(f"x must be SpikeEvents, got {type(x).__name__}")
    if x.device.type != "cpu":
        raise ValueError(f"single_spike_lif_events runs on the CPU (numba); the events are on {x.device}")
    bias = check_layer_params(x, weight, bias)
    sur = DEFAULT_SURROGATE if surrogate is None else _surrogate.get(surrogate)
    T, B, _ = x.shape
    like = weight.new_empty(()).expand(T, B, weight.shape[0])  # the current's shape and dtype, no data
    check_finite(weight, "weight")
    decay, scale, v0 = _fused_params(like, decay, scale, v0)
    thr = as_param_tensor(threshold, "threshold", like, dtype=compute_dtype(weight.dtype))
    from .single_spike_fused import single_spike_events_backend

    return single_spike_events_backend(x, weight, bias, decay, thr, scale, v0, surrogate=sur,
                                       straight_through=bool(straight_through))


def max_membrane_readout(x: Tensor, decay, *, scale=None, v0=None, backend: str = "auto") -> Tensor:
    """Readout with an infinite threshold: ``max_t V[t]`` of the leaky membrane ``[T, B, C] -> [B, C]``.

    ``V = leaky_integrate(x, decay, scale)`` (``scale=None``: ``1 - decay``, as the hidden
    layer); FastSNN feeds these maxima to softmax / cross-entropy (their eq. 18-19).  The
    gradient is ``torch.amax``'s: it reaches the steps where ``V`` equals its maximum, split
    evenly among them when several do.

    ``backend``: as for :func:`single_spike_lif`; ``"fused"`` integrates and reduces in one kernel
    pass (the CPU kernel recomputes the membrane in its backward), the others compose
    ``leaky_integrate`` with that backend and ``amax``.
    """
    check_time_first(x, "x")
    check_choice(backend, "backend", BACKENDS)
    if backend == "fused":
        from .single_spike_fused import check_device

        check_device(x)
    check_finite(x, "x")
    if backend == "fused" or (backend == "auto" and _fused_ok(x, None)):
        from .single_spike_fused import readout_backend

        decay, scale, v0 = _fused_params(x, decay, scale, v0)
        return readout_backend(x, decay, scale, v0)
    decay = _check_decay(decay, x)
    if scale is not None:
        scale = as_param_tensor(scale, "scale", x)
    return _integrate(x, decay, scale, v0, backend).amax(dim=0)


def _single_spike_lif_sequential(x: Tensor, decay, threshold=1.0, *, scale=None, v0=None) -> tuple[Tensor, Tensor]:
    """Reference: a LIF neuron with an infinite refractory period after its first spike.

    Python loop: ``v[t] = decay v[t-1] + scale x[t]``; the neuron spikes at the first ``t`` with
    ``v[t] >= threshold`` and never again.  Returns ``(spikes, membrane)``, forward only (no
    surrogate: it is the ground truth for the spikes).
    """
    check_tensor(x, "x")
    check_float(x, "x")
    decay = _check_decay(decay, x)
    scale = 1.0 - decay if scale is None else as_param_tensor(scale, "scale", x)
    thr = as_param_tensor(threshold, "threshold", x)
    with torch.no_grad():
        v = torch.zeros_like(x[0]) if v0 is None else torch.as_tensor(v0, dtype=x.dtype).expand_as(x[0]).clone()
        fired = torch.zeros(x.shape[1:], dtype=torch.bool, device=x.device)
        spikes, membrane = [], []
        for x_t in x.unbind(0):
            v = decay * v + scale * x_t
            s = (v >= thr) & ~fired
            fired = fired | s
            spikes.append(s.to(x.dtype))
            membrane.append(v)
        return torch.stack(spikes), torch.stack(membrane)
