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
time: :func:`max_membrane_readout` (paper eq. 18-19).

Backends (``backend=``, :data:`BACKENDS`; registered in :mod:`spikescan.ops._backend` as ops
``"single_spike_lif"`` and ``"max_membrane_readout"``):

``"fused"``        :mod:`spikescan.ops.single_spike.fused`: the whole layer in one time-fused
                   kernel each way (numba on the CPU, Triton on CUDA; ``torch.library`` custom
                   ops that ``torch.compile`` traces), the same spikes and membranes bit for bit
                   and the composed op's gradient.  Built-in surrogates only; float16/bfloat16
                   computed in float32; no double backward.
``"sequential"``,  the composed op above (:mod:`~spikescan.ops.single_spike.reference`), its
``"fft"``,         membrane by that :func:`spikescan.ops.leaky_integrate` backend; autograd
``"chunked"``      through every op (double backward works).
``"composed"``     the composed op with ``leaky_integrate``'s own ``"auto"``.
``"auto"``         ``"fused"`` on the CPU where the kernel runs (numba, a built-in surrogate),
                   else ``"composed"`` (the Triton kernel is not yet measured on a GPU).

The sequential loop :func:`~spikescan.ops.single_spike.reference.single_spike_reference` over
:func:`single_spike_step` (forward only) is the ground truth for the spikes.  Under
``torch.autocast`` the results have the autocast dtype.
"""

from __future__ import annotations

from torch import Tensor

from ... import surrogate as _surrogate
from ..._checks import as_param_tensor, check_finite, check_float, check_tensor, check_time_first
from .._backend import backends, fused_unsupported, register, register_auto, resolve
from .._params import output_dtype, param
from .fused import (max_membrane_fused, single_spike_events_fused, single_spike_events_linear_fused,
                    single_spike_events_linear_max_fused, single_spike_fused)
from .reference import (SingleSpikeParameters, SingleSpikeStep, first_spike, g, max_membrane_composed, phi,
                        single_spike_composed, single_spike_reference, single_spike_step)

__all__ = [
    "phi",
    "g",
    "first_spike",
    "single_spike_lif",
    "single_spike_lif_events",
    "max_membrane_readout",
    "single_spike_step",
    "SingleSpikeParameters",
    "SingleSpikeStep",
    "DEFAULT_SURROGATE",
    "BACKENDS",
]

DEFAULT_SURROGATE = _surrogate.FastSigmoid(slope=100.0)
"""FastSNN's surrogate ``(100 |V| + 1)^-2`` (paper eq. 20, beta = 100)."""


def _composed(leaky_backend: str):
    def run(x, decay, threshold, scale, v0, *, surrogate, straight_through, need_membrane=True):
        return single_spike_composed(x, decay, threshold, scale, v0, surrogate=surrogate,
                                     straight_through=straight_through, leaky_backend=leaky_backend)

    def run_readout(x, decay, scale, v0):
        return max_membrane_composed(x, decay, scale, v0, leaky_backend=leaky_backend)

    return run, run_readout


def _auto(x: Tensor, **context):
    # The fused kernel wins on the CPU at every T measured; on CUDA the Triton kernel is not yet
    # measured, so "auto" keeps the composed op there.
    return ("fused", "composed") if x.device.type == "cpu" else ("composed",)


register("single_spike_lif", "fused", unsupported=fused_unsupported,
         description="time-fused kernel, one pass each way (numba CPU / Triton CUDA)")(single_spike_fused)
register("max_membrane_readout", "fused", unsupported=fused_unsupported,
         description="time-fused kernel, one pass each way (numba CPU / Triton CUDA)")(max_membrane_fused)
for _name, _what in (("sequential", "the composed op, its membrane by a Python loop (double backward)"),
                     ("fft", "the composed op, its membrane by a causal FFT convolution"),
                     ("chunked", "the composed op, its membrane by chunked scans"),
                     ("composed", "the composed op, its membrane by leaky_integrate's 'auto'")):
    _run, _run_readout = _composed("auto" if _name == "composed" else _name)
    register("single_spike_lif", _name, description=_what)(_run)
    register("max_membrane_readout", _name, description=_what.replace("the composed op", "amax of the membrane"))(
        _run_readout)
register_auto("single_spike_lif", _auto)
register_auto("max_membrane_readout", _auto)

BACKENDS = ("auto", *backends("single_spike_lif"))


def _params(x: Tensor, decay, scale, v0):
    """``(decay, scale, v0)`` validated in the compute dtype; ``scale=None`` becomes ``1 - decay``,
    formed here so that autograd carries that dependence."""
    decay = param(decay, "decay", x, low=0.0, high=1.0)
    scale = 1.0 - decay if scale is None else param(scale, "scale", x)
    if v0 is not None:
        v0 = param(v0, "v0", x)
    return decay, scale, v0


def single_spike_lif(x: Tensor, decay, threshold=1.0, *, scale=None, v0=None, surrogate=None,
                     straight_through: bool = False, backend: str = "auto",
                     return_membrane: bool = False):
    """FastSNN single-spike LIF layer over the input current ``x`` ``[T, B, ...]`` (module docstring).

    ``V~ = leaky_integrate(x, decay, scale)`` (no reset), ``S~ = Heaviside(V~ - threshold)``
    with the surrogate, ``S = first_spike(S~)``.  Forward spikes equal those of a LIF that
    stops after its first spike (:func:`single_spike_step` looped over time).

    Args:
        x: input current, floating ``[T, ...]``.
        decay: ``beta = exp(-dt/tau)`` in [0, 1], float or tensor broadcastable to ``x.shape[1:]``.
        threshold: firing threshold (float or tensor), default 1.
        scale: input factor; ``None`` = ``1 - decay`` (the paper, eq. 5), ``1.0`` = the
            authors' code.
        v0: initial membrane ``V~[-1]`` (default 0).
        surrogate: default ``FastSigmoid(slope=100)`` (paper eq. 20).
        straight_through: see :func:`first_spike`.
        backend: ``"auto"`` (default), ``"fused"``, ``"sequential"``, ``"fft"``, ``"chunked"`` or
            ``"composed"`` (module docstring).  A named backend that cannot run the call is an error.
        return_membrane: also return the no-reset membrane ``V~`` (its gradient is used).

    float16/bfloat16 inputs are computed in float32 by ``"fused"``; the composed op rounds the
    membrane to the input dtype before the threshold, so their spikes can differ there.
    """
    check_time_first(x, "x")
    sur = DEFAULT_SURROGATE if surrogate is None else _surrogate.get(surrogate)
    impl = resolve("single_spike_lif", backend, x, surrogate=sur).fn  # before the data checks touch x's device
    check_finite(x, "x")
    decay, scale, v0 = _params(x, decay, scale, v0)
    threshold = param(threshold, "threshold", x)
    out_dtype = output_dtype(x)
    s, v = impl(x, decay, threshold, scale, v0, surrogate=sur, straight_through=bool(straight_through),
                need_membrane=bool(return_membrane))
    if out_dtype != x.dtype:
        s, v = s.to(out_dtype), v.to(out_dtype)
    return (s, v) if return_membrane else s


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
    impl = resolve("max_membrane_readout", backend, x).fn
    check_finite(x, "x")
    decay, scale, v0 = _params(x, decay, scale, v0)
    return impl(x, decay, scale, v0).to(output_dtype(x))


def single_spike_lif_events(x, weight: Tensor, bias: Tensor | None, decay, threshold=1.0, *, scale=None, v0=None,
                            surrogate=None, straight_through: bool = False, return_membrane: bool = False,
                            out_weight: Tensor | None = None, out_bias: Tensor | None = None,
                            readout_decay=None, readout_scale=None):
    """The input layer and the single-spike neurons in one kernel each way:
    ``single_spike_lif(event_linear(x, weight, bias), decay, threshold, ...)`` without the current
    ``I = W x + b`` ``[T, B, O]`` or its gradient ever being stored; with ``out_weight`` also the
    linear layer the spikes feed, ``y = event_linear(s, out_weight, out_bias)``, without the spike
    gradient ``gy W2`` ``[T, B, O]`` ever being stored.

    Args:
        x: :class:`spikescan.ops.events.SpikeEvents` ``[T, B, C]`` on the CPU (data: no gradient);
            its values, if any, are cast to the weight's dtype.
        weight: ``[O, C]``; bias: ``[O]`` or None.  Both get gradients.
        decay, threshold, scale, v0, surrogate, straight_through: as for :func:`single_spike_lif`,
            broadcastable to the per-step shape ``[B, O]`` (scalars or per neuron ``[O]``).
        return_membrane: not supported (raises): the membrane is never stored.
        out_weight: ``[K, O]`` (the dtype and device of ``weight``), the weight of a linear layer
            fed by the spikes (FastSNN's readout input); out_bias: ``[K]`` or None.  Both get
            gradients.

        readout_decay: with ``out_weight``, the decay of a max-membrane readout of ``y``
            (:func:`max_membrane_readout`, FastSNN's output layer), broadcastable to ``[B, K]``;
            readout_scale: its input scale (None: ``1 - readout_decay``).  Both get gradients.

    Returns the spikes ``[T, B, O]`` in ``weight``'s dtype, with ``readout_decay`` the pair
    ``(s, logits)``, ``logits = max_membrane_readout(y, readout_decay, scale=readout_scale)``
    ``[B, K]``: with one readout decay (a scalar, or equal values) the neurons' reverse sweep
    carries ``gy[t] W2`` from step to step (``gy[t] W2 = decay (gy[t+1] W2) + (scale imp[t]) W2``,
    ``imp`` the readout's gradient at its maxima) instead of forming it from ``gy``, to rounding
    the same gradients; otherwise, or under ``torch.compile``, the composition.  Or with ``out_weight`` the pair
    ``(s, y)``, ``y`` ``[T, B, K]``: ``y`` and the gradients of ``out_weight`` and ``out_bias`` are
    ``event_linear``'s numba kernels on the spikes' events (equal to the composition's bit for
    bit); the neurons' reverse sweep forms the spike gradient ``gs[t] + gy[t] W2`` per neuron in a
    register instead of reading the composition's ``[T, B, O]`` GEMM result, a sum in another order
    (and phi's running sums in the compute dtype, not float64), so the gradients of ``weight``, ``bias`` and the neuron
    parameters then agree with the composition's to rounding (not bit for bit).  The same floating-point operations as
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
    float32 (without the composition's rounding of ``I`` to half).  CPU only (numba); a
    ``torch.library`` custom op with the CSR arrays as tensor inputs.
    """
    from ..events import SpikeEvents, check_layer_params

    if return_membrane:
        raise ValueError("single_spike_lif_events does not return the membrane (it is never stored); use "
                         "single_spike_lif(event_linear(x, weight, bias), ..., return_membrane=True)")
    if not isinstance(x, SpikeEvents):
        raise TypeError(f"x must be SpikeEvents, got {type(x).__name__}")
    if x.device.type != "cpu":
        raise ValueError(f"single_spike_lif_events runs on the CPU (numba); the events are on {x.device}")
    bias = check_layer_params(x, weight, bias)
    sur = DEFAULT_SURROGATE if surrogate is None else _surrogate.get(surrogate)
    reason = fused_unsupported(weight, surrogate=sur)
    if reason is not None:
        raise ValueError(f"single_spike_lif_events cannot run: {reason}")
    T, B, _ = x.shape
    O = weight.shape[0]
    like = weight.new_empty(()).expand(T, B, O)  # the current's shape and dtype, no data
    check_finite(weight, "weight")
    decay, scale, v0 = _params(like, decay, scale, v0)
    threshold = param(threshold, "threshold", like)
    if out_weight is None:
        if out_bias is not None:
            raise ValueError("out_bias needs out_weight (the linear layer the spikes feed)")
        if readout_decay is not None or readout_scale is not None:
            raise ValueError("readout_decay and readout_scale need out_weight (the linear layer the spikes feed)")
        return single_spike_events_fused(x, weight, bias, decay, threshold, scale, v0, surrogate=sur,
                                         straight_through=bool(straight_through))
    out_bias = _check_out_layer(out_weight, out_bias, weight)
    if readout_decay is not None:
        like_y = weight.new_empty(()).expand(T, B, out_weight.shape[0])
        readout_decay = param(readout_decay, "readout_decay", like_y, low=0.0, high=1.0)
        readout_scale = (1.0 - readout_decay if readout_scale is None
                         else param(readout_scale, "readout_scale", like_y))
        return single_spike_events_linear_max_fused(x, weight, bias, out_weight, out_bias, decay, threshold, scale,
                                                    v0, readout_decay, readout_scale, surrogate=sur,
                                                    straight_through=bool(straight_through))
    if readout_scale is not None:
        raise ValueError("readout_scale needs readout_decay (the max-membrane readout of y)")
    return single_spike_events_linear_fused(x, weight, bias, out_weight, out_bias, decay, threshold, scale, v0,
                                            surrogate=sur, straight_through=bool(straight_through))


def _check_out_layer(out_weight, out_bias, weight: Tensor) -> Tensor:
    """Validate the linear layer ``[K, O]`` / ``[K]`` fed by the spikes of neurons with input weight
    ``weight`` ``[O, C]``; returns the bias (zeros for None)."""
    O = weight.shape[0]
    if not isinstance(out_weight, Tensor) or out_weight.dim() != 2 or out_weight.shape[1] != O:
        got = tuple(out_weight.shape) if isinstance(out_weight, Tensor) else type(out_weight).__name__
        raise ValueError(f"out_weight must be a tensor [K, {O}] (its input features are the {O} neurons), got {got}")
    if out_weight.dtype != weight.dtype or out_weight.device != weight.device:
        raise ValueError(f"out_weight must have weight's dtype and device ({weight.dtype}, {weight.device}), got "
                         f"{out_weight.dtype}, {out_weight.device}")
    check_finite(out_weight, "out_weight")
    if out_bias is None:
        return out_weight.new_zeros(out_weight.shape[0])
    if not isinstance(out_bias, Tensor) or out_bias.shape != (out_weight.shape[0],) \
            or out_bias.dtype != out_weight.dtype or out_bias.device != out_weight.device:
        raise ValueError(f"out_bias must be None or a tensor of shape ({out_weight.shape[0]},) with out_weight's "
                         f"dtype and device")
    check_finite(out_bias, "out_bias")
    return out_bias


def _single_spike_lif_sequential(x: Tensor, decay, threshold=1.0, *, scale=None, v0=None) -> tuple[Tensor, Tensor]:
    """Reference: a LIF neuron with an infinite refractory period after its first spike.

    Python loop over :func:`single_spike_step`: ``v[t] = decay v[t-1] + scale x[t]``; the neuron
    spikes at the first ``t`` with ``v[t] >= threshold`` and never again.  Returns ``(spikes,
    membrane)``, forward only (no surrogate: it is the ground truth for the spikes).
    """
    check_tensor(x, "x")
    check_float(x, "x")
    decay = as_param_tensor(decay, "decay", x, low=0.0, high=1.0)
    scale = 1.0 - decay if scale is None else as_param_tensor(scale, "scale", x)
    thr = as_param_tensor(threshold, "threshold", x)
    return single_spike_reference(x, decay, thr, scale, v0)
