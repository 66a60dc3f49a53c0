"""The time-fused FastSNN ops as ``torch.library`` custom ops: one kernel pass forward, one in reverse time backward.

The composed single-spike LIF (a leaky integration, a Heaviside with a surrogate, two cumulative
sums and ``g``) makes about ten passes over ``[T, N]`` tensors each way, plus the autograd graph.
The fused kernels compute the same function in one pass each way (equations in
``numba_kernels``' docstring): the forward reads ``x`` and writes the spikes, the backward reads
``x`` (and the incoming gradients) and writes ``grad_x``.  The forward equals the composed op
bit for bit (spikes and membranes); the backward is the gradient autograd gives the composed op
(phi's adjoint masked before the first spike, or not with ``straight_through``), computed with
the same roundings where the composed op's are known, so it agrees to rounding.

Four pairs of custom ops, each with fake (meta) kernels and a registered autograd formula, so
``torch.compile`` traces through them without a graph break and ``torch.library.opcheck``
checks them:

* ``spikescan::single_spike_fused_forward`` / ``..._backward``: the dense single-spike LIF.
* ``spikescan::max_membrane_fused_forward`` / ``..._backward``: the max-membrane readout, the same
  membrane with an infinite threshold reduced to its maximum over time (and the number of steps
  that reach it); the backward sends the gradient to those steps, split evenly among ties as
  ``torch.amax``'s backward does.
* ``spikescan::single_spike_events_fused_forward`` / ``..._backward``: the events-fed layer
  ``single_spike_lif(event_linear(x, W, b), ...)`` in one kernel each way, the CSR arrays of the
  events (``crow``, ``channels``, ``values``) entering as tensors.  CPU only (numba).
* ``spikescan::single_spike_events_linear_fused_forward`` / ``..._backward``: that layer and the
  linear layer its spikes feed, ``y = W2 s + b2`` (FastSNN's readout input): the backward forms
  the spike gradient ``gs + gy W2`` in registers inside the reverse sweep instead of reading a
  ``[T, B, O]`` GEMM result.  CPU only (numba).

Their implementation is the ``numba_kernels`` (CPU) or ``triton_kernels`` (CUDA) module of this
package, which share one host signature (:class:`SingleSpikeKernelConfig` for the constants).
What the forward keeps for the backward, per (t, neuron): on the CPU the input (the caller's own
tensor when it is contiguous float32/float64), the first-spike times and a membrane checkpoint
every 32 steps (the backward recomputes each segment); on CUDA the membrane of every step.  The
backward ops are not themselves differentiable (no double backward; the composed backends
support it).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .._backend import kernel_module, kernels_unavailable, stores_states
from .._kernels import _common as KC
from .._kernels._host import check_neuron_count, eager_function, grad_rows, kernel_dtype, needs_grad, per_neuron

__all__ = ["SingleSpikeKernelConfig", "single_spike_fused", "max_membrane_fused", "single_spike_events_fused",
           "single_spike_events_linear_fused", "single_spike_events_linear_max_fused", "check_device"]

_PACKAGE = __package__


class SingleSpikeKernelConfig(NamedTuple):
    """Constants of the single-spike backward kernels (the forward kernels need none).

    Attributes:
        surrogate_code: ``_kernels._common.SURROGATE_CODES[surrogate.kind]``.
        surrogate_param: the surrogate's ``param`` (slope, alpha or width).
        straight_through: ``g``'s backward is the identity (every step passes the spike gradient).
    """

    surrogate_code: int = 0
    surrogate_param: float = 100.0
    straight_through: bool = False


def check_device(x) -> None:
    """Raise unless a fused kernel runs on ``x``'s device (CPU: numba; CUDA: Triton)."""
    reason = kernels_unavailable(x.device)
    if reason is not None:
        raise ValueError(reason)


def _check_saved(kept: Tensor, op: str) -> None:
    """The backward needs the membranes or checkpoints a forward with ``need_grad=False`` did not keep."""
    if kept.shape[0] == 0:
        raise RuntimeError(f"spikescan::{op} ran with need_grad=False, so it kept nothing for a backward; "
                           f"call it with need_grad=True when a gradient will be needed")


# --------------------------------------------------------------------------------------------
# the dense single-spike LIF
# --------------------------------------------------------------------------------------------




def _single_spike_fused_forward_impl(x: Tensor, decay: Tensor, scale: Tensor, threshold: Tensor, v0: Tensor,
                               surrogate_code: int, surrogate_param: float, straight_through: bool, store_v: bool,
                               need_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(s, v, first, checkpoints)`` over ``x`` ``[T, N]`` with ``[N]`` parameters; ``first`` is
    each neuron's first-spike step (int32, ``T`` for none).  The surrogate constants are the
    backward's, carried here so that the registered autograd formula sees them."""
    config = SingleSpikeKernelConfig(surrogate_code, surrogate_param, straight_through)
    return kernel_module(_PACKAGE, x.device).forward(x=x, decay=decay, scale=scale, threshold=threshold, v0=v0,
                                                     config=config, store_v=store_v, need_grad=need_grad)


single_spike_fused_forward = torch.library.custom_op(
    "spikescan::single_spike_fused_forward", _single_spike_fused_forward_impl, mutates_args=())


@single_spike_fused_forward.register_fake
def _(x, decay, scale, threshold, v0, surrogate_code, surrogate_param, straight_through, store_v, need_grad):
    T, N = x.shape
    keep_v = store_v or (need_grad and stores_states(x.device))
    ck_rows = -(-T // KC.SEGMENT) if need_grad and not stores_states(x.device) else 0
    return (x.new_empty(T, N), x.new_empty(T if keep_v else 0, N), x.new_empty(N, dtype=torch.int32),
            x.new_empty(ck_rows, N))


def _single_spike_fused_backward_impl(x: Tensor, v: Tensor, checkpoints: Tensor, first: Tensor, grad_s: Tensor,
                                grad_v: Tensor | None, decay: Tensor, scale: Tensor, threshold: Tensor, v0: Tensor,
                                surrogate_code: int, surrogate_param: float, straight_through: bool,
                                param_grads: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(grad_x [T, N], grad_decay, grad_scale, grad_threshold, grad_v0 [N])``."""
    T, N = x.shape
    kdtype = x.dtype
    config = SingleSpikeKernelConfig(surrogate_code, surrogate_param, straight_through)
    return kernel_module(_PACKAGE, x.device).backward(
        x=x, v=v, checkpoints=checkpoints, first=first, grad_s=grad_rows(grad_s, T, N, kdtype),
        grad_v=None if grad_v is None else grad_rows(grad_v, T, N, kdtype), decay=decay, scale=scale,
        threshold=threshold, v0=v0, config=config, param_grads=param_grads)


single_spike_fused_backward = torch.library.custom_op(
    "spikescan::single_spike_fused_backward", _single_spike_fused_backward_impl, mutates_args=())


@single_spike_fused_backward.register_fake
def _(x, v, checkpoints, first, grad_s, grad_v, decay, scale, threshold, v0, surrogate_code, surrogate_param,
      straight_through, param_grads):
    T, N = x.shape
    return (x.new_empty(T, N), *(x.new_empty(N) for _ in range(4)))


def _single_spike_setup_context(ctx, inputs, output):
    x, decay, scale, threshold, v0, code, param, straight, store_v, need_grad = inputs
    s, v, first, checkpoints = output
    keep_v = v if stores_states(x.device) else v.new_empty(0, v.shape[1])
    ctx.save_for_backward(x, keep_v, checkpoints, first, decay, scale, threshold, v0)
    ctx.config = (code, param, straight)


def _single_spike_backward(ctx, g_s, g_v, g_first, g_ck, backward_op=single_spike_fused_backward):
    x, v, checkpoints, first, decay, scale, threshold, v0 = ctx.saved_tensors
    _check_saved(v if stores_states(x.device) else checkpoints, "single_spike_fused_forward")
    N = x.shape[1]
    gs = x.new_zeros(1, N) if g_s is None else g_s
    gv = None if g_v is None or g_v.numel() == 0 else g_v
    grads = backward_op(x, v, checkpoints, first, gs, gv, decay, scale, threshold, v0, *ctx.config,
                        any(ctx.needs_input_grad[1:4]))
    return (*grads, None, None, None, None, None)


single_spike_fused_forward.register_autograd(_single_spike_backward, setup_context=_single_spike_setup_context)
_SingleSpikeFusedForwardEager = eager_function(
    "single_spike_fused_forward", _single_spike_fused_forward_impl, _single_spike_setup_context,
    lambda ctx, *grads: _single_spike_backward(ctx, *grads, backward_op=_single_spike_fused_backward_impl))


def single_spike_fused(x: Tensor, decay: Tensor, threshold: Tensor, scale: Tensor, v0: Tensor | None, *,
                       surrogate, straight_through: bool, need_membrane: bool = True) -> tuple[Tensor, Tensor]:
    """The ``"fused"`` backend of :func:`spikescan.ops.single_spike.single_spike_lif` (arguments
    validated there, ``scale`` a tensor: ``1 - decay`` already formed where the paper's factor is
    meant, so autograd carries that dependence).

    Returns ``(s, v)`` in ``x.dtype``; ``v`` is empty unless ``need_membrane``.  Half inputs are
    computed in float32.  Parameters broadcast to ``x.shape[1:]`` enter the kernels as per-neuron
    vectors; autograd sums their gradients back to their own shapes.
    """
    T, rest = x.shape[0], x.shape[1:]
    N = math.prod(rest)
    check_neuron_count(N)
    code, sparam = KC.surrogate_constants(surrogate.kind, surrogate.param)
    kdtype = kernel_dtype(x.dtype)
    xf = x.to(kdtype).reshape(T, N).contiguous()
    d, c, th = (per_neuron(p, rest, kdtype) for p in (decay, scale, threshold))
    v0v = xf.new_zeros(N) if v0 is None else per_neuron(v0, rest, kdtype)
    op = single_spike_fused_forward if torch.compiler.is_compiling() else _SingleSpikeFusedForwardEager.apply
    s, v, first, _ = op(xf, d, c, th, v0v, code, sparam, bool(straight_through), bool(need_membrane),
                        needs_grad(x, decay, scale, threshold, v0))
    out = x.dtype
    v = v.view(x.shape).to(out) if need_membrane else v.new_empty(0, dtype=out)
    return _with_events(s.view(x.shape).to(out), first), v


def _spike_events(first: Tensor, T: int, B: int, O: int, dtype: torch.dtype):
    """The events of the spikes ``s[first[m], m]`` (``m = b O + o``, ``first[m] = T``: none) as
    ``SpikeEvents`` ``[T, B, O]``, a row's channels rising, as :meth:`SpikeEvents.from_dense`
    orders them (one counting sort: ``event_numba.events_of_first_spikes``; CPU)."""
    from .._kernels.event_numba import events_of_first_spikes
    from ..events import SpikeEvents

    first = first.contiguous()
    n = int((first < T).sum())
    crow = torch.zeros(T * B + 1, dtype=torch.int64)
    channels = torch.empty(n, dtype=torch.int64)
    events_of_first_spikes(first.numpy(), T, B, O, crow.numpy(), channels.numpy())
    return SpikeEvents(crow, channels, (T, B, O), dtype=dtype, check=False)


def _with_events(s: Tensor, first: Tensor) -> Tensor:
    """``s`` ``[T, B, O]`` with its events recorded (:func:`~spikescan.ops.events.attach_events`):
    the spike of neuron ``m = b O + o`` is at step ``first[m]`` (``T``: none), so a following
    event-driven layer finds them without reading the ``T x B x O`` tensor.  The rows are
    ``t B + b`` and, within a row, the channels rise, as :meth:`SpikeEvents.from_dense` orders
    them (so the layer sums them in the same order).  Eager CPU 3-d outputs only."""
    from ..events import attach_events

    if s.dim() != 3 or s.device.type != "cpu" or torch.compiler.is_compiling():
        return s
    return attach_events(s, _spike_events(first, *s.shape, s.dtype))


# --------------------------------------------------------------------------------------------
# the max-membrane readout
# --------------------------------------------------------------------------------------------


def _max_membrane_fused_forward_impl(x: Tensor, decay: Tensor, scale: Tensor, v0: Tensor,
                               need_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(maximum, count, v, checkpoints)``: ``max_t v[t]`` of each neuron of ``x`` ``[T, N]``,
    the number of steps reaching it, and what the backward reads (``v`` on CUDA, checkpoints on
    the CPU; ``[0, N]`` when not needed)."""
    return kernel_module(_PACKAGE, x.device).readout_forward(x=x, decay=decay, scale=scale, v0=v0,
                                                             need_grad=need_grad)


max_membrane_fused_forward = torch.library.custom_op(
    "spikescan::max_membrane_fused_forward", _max_membrane_fused_forward_impl, mutates_args=())


@max_membrane_fused_forward.register_fake
def _(x, decay, scale, v0, need_grad):
    T, N = x.shape
    v_rows = T if need_grad and stores_states(x.device) else 0
    ck_rows = -(-T // KC.SEGMENT) if need_grad and not stores_states(x.device) else 0
    return x.new_empty(N), x.new_empty(N), x.new_empty(v_rows, N), x.new_empty(ck_rows, N)


def _max_membrane_fused_backward_impl(x: Tensor, v: Tensor, checkpoints: Tensor, grad_max: Tensor, decay: Tensor,
                                scale: Tensor, v0: Tensor, maximum: Tensor, count: Tensor,
                                param_grads: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(grad_x [T, N], grad_decay, grad_scale, grad_v0 [N])``."""
    return kernel_module(_PACKAGE, x.device).readout_backward(
        x=x, v=v, checkpoints=checkpoints, grad_max=grad_max.to(x.dtype).contiguous(), decay=decay, scale=scale,
        v0=v0, maximum=maximum, count=count, param_grads=param_grads)


max_membrane_fused_backward = torch.library.custom_op(
    "spikescan::max_membrane_fused_backward", _max_membrane_fused_backward_impl, mutates_args=())


@max_membrane_fused_backward.register_fake
def _(x, v, checkpoints, grad_max, decay, scale, v0, maximum, count, param_grads):
    T, N = x.shape
    return (x.new_empty(T, N), *(x.new_empty(N) for _ in range(3)))


def _max_membrane_setup_context(ctx, inputs, output):
    x, decay, scale, v0, need_grad = inputs
    maximum, count, v, checkpoints = output
    ctx.save_for_backward(x, v, checkpoints, decay, scale, v0, maximum, count)


def _max_membrane_backward(ctx, g_max, g_count, g_v, g_ck, backward_op=max_membrane_fused_backward):
    x, v, checkpoints, decay, scale, v0, maximum, count = ctx.saved_tensors
    _check_saved(v if stores_states(x.device) else checkpoints, "max_membrane_fused_forward")
    gm = x.new_zeros(x.shape[1]) if g_max is None else g_max
    grads = backward_op(x, v, checkpoints, gm, decay, scale, v0, maximum, count, any(ctx.needs_input_grad[1:3]))
    return (*grads, None)


max_membrane_fused_forward.register_autograd(_max_membrane_backward, setup_context=_max_membrane_setup_context)
_MaxMembraneFusedForwardEager = eager_function(
    "max_membrane_fused_forward", _max_membrane_fused_forward_impl, _max_membrane_setup_context,
    lambda ctx, *grads: _max_membrane_backward(ctx, *grads, backward_op=_max_membrane_fused_backward_impl))


def max_membrane_fused(x: Tensor, decay: Tensor, scale: Tensor, v0: Tensor | None) -> Tensor:
    """The ``"fused"`` backend of :func:`spikescan.ops.single_spike.max_membrane_readout`
    (arguments validated there, as for :func:`single_spike_fused`); returns ``x.shape[1:]`` in
    ``x.dtype``."""
    T, rest = x.shape[0], x.shape[1:]
    N = math.prod(rest)
    check_neuron_count(N)
    kdtype = kernel_dtype(x.dtype)
    xf = x.to(kdtype).reshape(T, N).contiguous()
    d, c = per_neuron(decay, rest, kdtype), per_neuron(scale, rest, kdtype)
    v0v = xf.new_zeros(N) if v0 is None else per_neuron(v0, rest, kdtype)
    op = max_membrane_fused_forward if torch.compiler.is_compiling() else _MaxMembraneFusedForwardEager.apply
    mx, _, _, _ = op(xf, d, c, v0v, needs_grad(x, decay, scale, v0))
    return mx.view(rest).to(x.dtype)


# --------------------------------------------------------------------------------------------
# the single-spike LIF fed by events (input layer fused into the kernel)
# --------------------------------------------------------------------------------------------
#
# single_spike_lif(event_linear(x, W, b), ...) writes the current I = W x + b ([T, B, O]) in the
# forward and reads it again in the neuron's backward, which writes gI for event_linear's
# backward to read: four passes over a [T, B, O] tensor besides the spikes.  The fused op builds
# I step by step from the events inside the neuron kernel and in the backward sends gI straight
# on (numba_kernels.py, last section).  The events are data, not differentiable: their CSR
# arrays are plain tensor inputs of the ops.


def _single_spike_events_fused_forward_impl(crow: Tensor, channels: Tensor, values: Tensor, weight: Tensor, bias: Tensor,
                                      decay: Tensor, scale: Tensor, threshold: Tensor, v0: Tensor, steps: int,
                                      batch: int, surrogate_code: int, surrogate_param: float,
                                      straight_through: bool, need_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(s [T, B * O], checkpoints, first)`` of the single-spike neurons fed by ``W x + b``, ``x``
    the events ``(crow, channels, values)`` of ``[T, B, C]`` (``values`` empty: all 1)."""
    from . import numba_kernels as K  # CPU only

    return K.events_forward(crow=crow, channels=channels, values=values, weight=weight, bias=bias, decay=decay,
                            scale=scale, threshold=threshold, v0=v0, steps=steps, batch=batch, need_grad=need_grad)


single_spike_events_fused_forward = torch.library.custom_op(
    "spikescan::single_spike_events_fused_forward", _single_spike_events_fused_forward_impl, mutates_args=())


@single_spike_events_fused_forward.register_fake
def _(crow, channels, values, weight, bias, decay, scale, threshold, v0, steps, batch, surrogate_code,
      surrogate_param, straight_through, need_grad):
    M = batch * weight.shape[0]
    ck_rows = -(-steps // KC.SEGMENT) if need_grad else 0
    return weight.new_empty(steps, M), weight.new_empty(ck_rows, M), weight.new_empty(M, dtype=torch.int32)


def _single_spike_events_fused_backward_impl(crow: Tensor, channels: Tensor, values: Tensor, weight: Tensor, bias: Tensor,
                                       checkpoints: Tensor, first: Tensor, grad_s: Tensor, decay: Tensor,
                                       scale: Tensor, threshold: Tensor, steps: int, batch: int, surrogate_code: int,
                                       surrogate_param: float, straight_through: bool, need_weight: bool,
                                       need_bias: bool,
                                       param_grads: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(grad_weight_t [C, O], grad_bias [O], grad_decay, grad_scale, grad_threshold, grad_v0 [B * O])``;
    ``grad_weight_t`` is the weight's gradient transposed (zeros unless ``need_weight``, as
    ``grad_bias`` unless ``need_bias``)."""
    from . import numba_kernels as K

    config = SingleSpikeKernelConfig(surrogate_code, surrogate_param, straight_through)
    M = batch * weight.shape[0]
    return K.events_backward(crow=crow, channels=channels, values=values, weight=weight, bias=bias,
                             checkpoints=checkpoints, first=first, grad_s=grad_rows(grad_s, steps, M, weight.dtype),
                             decay=decay, scale=scale, threshold=threshold, steps=steps, batch=batch, config=config,
                             need_weight=need_weight, need_bias=need_bias, param_grads=param_grads)


single_spike_events_fused_backward = torch.library.custom_op(
    "spikescan::single_spike_events_fused_backward", _single_spike_events_fused_backward_impl, mutates_args=())


@single_spike_events_fused_backward.register_fake
def _(crow, channels, values, weight, bias, checkpoints, first, grad_s, decay, scale, threshold, steps, batch,
      surrogate_code, surrogate_param, straight_through, need_weight, need_bias, param_grads):
    O, C = weight.shape
    M = batch * O
    return (weight.new_empty(C, O), weight.new_empty(O), *(weight.new_empty(M) for _ in range(4)))


def _events_setup_context(ctx, inputs, output):
    crow, channels, values, weight, bias, decay, scale, threshold, v0, steps, batch, code, param, straight, _ = inputs
    s, checkpoints, first = output
    ctx.save_for_backward(crow, channels, values, weight, bias, checkpoints, first, decay, scale, threshold)
    ctx.sizes = (steps, batch)
    ctx.config = (code, param, straight)


def _events_backward(ctx, g_s, g_ck, g_first, backward_op=single_spike_events_fused_backward):
    crow, channels, values, weight, bias, checkpoints, first, decay, scale, threshold = ctx.saved_tensors
    _check_saved(checkpoints, "single_spike_events_fused_forward")
    steps, batch = ctx.sizes
    gs = weight.new_zeros(1, batch * weight.shape[0]) if g_s is None else g_s
    need = ctx.needs_input_grad
    gwt, gb, gd, gc, gth, gv0 = backward_op(
        crow, channels, values, weight, bias, checkpoints, first, gs, decay, scale, threshold, steps, batch,
        *ctx.config, bool(need[3]), bool(need[4]), any(need[5:8]))
    return (None, None, None, gwt.t() if need[3] else None, gb if need[4] else None, gd, gc, gth, gv0,
            *(None for _ in range(6)))


single_spike_events_fused_forward.register_autograd(_events_backward, setup_context=_events_setup_context)
_SingleSpikeEventsFusedForwardEager = eager_function(
    "single_spike_events_fused_forward", _single_spike_events_fused_forward_impl, _events_setup_context,
    lambda ctx, *grads: _events_backward(ctx, *grads, backward_op=_single_spike_events_fused_backward_impl))


def single_spike_events_fused(x, weight: Tensor, bias: Tensor, decay: Tensor, threshold: Tensor, scale: Tensor,
                              v0: Tensor | None, *, surrogate, straight_through: bool) -> Tensor:
    """The fused kernel of :func:`spikescan.ops.single_spike.single_spike_lif_events`: validated
    inputs (``x`` :class:`~spikescan.ops.events.SpikeEvents` on the CPU, ``scale`` already
    ``1 - decay`` where meant, the parameters broadcastable to ``[B, O]``); returns the spikes
    ``[T, B, O]`` in ``weight.dtype``."""
    T, B, _ = x.shape
    O = weight.shape[0]
    values, (w, b), neuron, consts = _events_kernel_inputs(x, (weight, bias), decay, threshold, scale, v0, surrogate)
    op = single_spike_events_fused_forward if torch.compiler.is_compiling() else _SingleSpikeEventsFusedForwardEager.apply
    s, _, first = op(x.crow, x.channels, values, w, b, *neuron, T, B, *consts, bool(straight_through),
                     needs_grad(weight, bias, decay, scale, threshold, v0))
    return _with_events(s.view(T, B, O).to(weight.dtype), first)


def _events_kernel_inputs(x, layers: tuple, decay, threshold, scale, v0, surrogate):
    """What the events ops take: ``(values, layers, (d, c, th, v0) [B * O], (code, param))`` with
    ``values`` and the layer tensors in the kernel dtype of ``layers[0]`` (the input weight)."""
    T, B, _ = x.shape
    rest = torch.Size((B, layers[0].shape[0]))
    check_neuron_count(math.prod(rest))
    kdtype = kernel_dtype(layers[0].dtype)
    d, c, th = (per_neuron(p, rest, kdtype) for p in (decay, scale, threshold))
    v0v = d.new_zeros(math.prod(rest)) if v0 is None else per_neuron(v0, rest, kdtype)
    values = d.new_empty(0) if x.values is None else x.values.detach().to(kdtype).contiguous()
    return (values, tuple(t.to(kdtype) for t in layers), (d, c, th, v0v),
            KC.surrogate_constants(surrogate.kind, surrogate.param))


# --------------------------------------------------------------------------------------------
# ... and the linear layer its spikes feed (the readout's input layer)
# --------------------------------------------------------------------------------------------
#
# single_spike_lif_events followed by event_linear(s, W2, b2): that layer's backward writes the
# spike gradient gs = gy W2 ([T, B, O], one GEMM) for the neuron's backward to read again.  Here
# the neuron's reverse sweep forms gs[t] + gy[t] W2 per neuron in a register, so the [T, B, O]
# gradient is never stored.  The linear layer's forward and its weight
# and bias gradients are event_linear's numba kernels on the spikes' events (from the first-spike
# times), so they equal the composition's bit for bit; gs is summed in another order than torch's
# GEMM, so the gradients of the input layer and the neurons agree with it to rounding.


def _single_spike_events_linear_fused_forward_impl(
        crow: Tensor, channels: Tensor, values: Tensor, weight: Tensor, bias: Tensor, out_weight: Tensor,
        out_bias: Tensor, decay: Tensor, scale: Tensor, threshold: Tensor, v0: Tensor, steps: int, batch: int,
        surrogate_code: int, surrogate_param: float, straight_through: bool,
        need_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(s [T, B * O], y [T * B, K], checkpoints, first)``: the single-spike neurons fed by
    ``W x + b`` and ``y = W2 s + b2`` (``out_weight`` ``W2`` ``[K, O]``, ``out_bias`` ``[K]``)."""
    from ..events import numba_event_linear
    from . import numba_kernels as K  # CPU only

    s, checkpoints, first = K.events_forward(crow=crow, channels=channels, values=values, weight=weight, bias=bias,
                                             decay=decay, scale=scale, threshold=threshold, v0=v0, steps=steps,
                                             batch=batch, need_grad=need_grad)
    spikes = _spike_events(first, steps, batch, weight.shape[0], weight.dtype)
    return s, numba_event_linear(spikes, out_weight.detach(), out_bias.detach()), checkpoints, first


single_spike_events_linear_fused_forward = torch.library.custom_op(
    "spikescan::single_spike_events_linear_fused_forward", _single_spike_events_linear_fused_forward_impl,
    mutates_args=())


@single_spike_events_linear_fused_forward.register_fake
def _(crow, channels, values, weight, bias, out_weight, out_bias, decay, scale, threshold, v0, steps, batch,
      surrogate_code, surrogate_param, straight_through, need_grad):
    M = batch * weight.shape[0]
    ck_rows = -(-steps // KC.SEGMENT) if need_grad else 0
    return (weight.new_empty(steps, M), weight.new_empty(steps * batch, out_weight.shape[0]),
            weight.new_empty(ck_rows, M), weight.new_empty(M, dtype=torch.int32))


def _single_spike_events_linear_fused_backward_impl(
        crow: Tensor, channels: Tensor, values: Tensor, weight: Tensor, bias: Tensor, out_weight: Tensor,
        checkpoints: Tensor, first: Tensor, grad_s: Tensor, grad_y: Tensor, decay: Tensor, scale: Tensor,
        threshold: Tensor, steps: int, batch: int, surrogate_code: int, surrogate_param: float,
        straight_through: bool, need_weight: bool, need_bias: bool, need_out_weight: bool, need_out_bias: bool,
        neuron_grads: bool, param_grads: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(grad_weight_t [C, O], grad_bias [O], grad_out_weight_t [O, K], grad_out_bias [K],
    grad_decay, grad_scale, grad_threshold, grad_v0 [B * O])``; the transposed weight gradients
    and the biases' are zeros unless asked for, and so is everything of the input layer and the
    neurons unless ``neuron_grads`` (the reverse sweep is skipped)."""
    return _events_linear_grads(crow, channels, values, weight, bias, out_weight, checkpoints, first, grad_s, grad_y,
                                decay, scale, threshold, steps, batch, surrogate_code, surrogate_param,
                                straight_through, need_weight, need_bias, need_out_weight, need_out_bias,
                                neuron_grads, param_grads)


def _events_linear_grads(crow, channels, values, weight, bias, out_weight, checkpoints, first, grad_s, grad_y, decay,
                         scale, threshold, steps, batch, surrogate_code, surrogate_param, straight_through,
                         need_weight, need_bias, need_out_weight, need_out_bias, neuron_grads, param_grads,
                         readout=None):
    """The body of the backward op above; ``readout``: ``(impulses [T, B * K], scale [B * K],
    decay [1])`` of a max-membrane readout whose input gradient ``grad_y`` is (its section)."""
    from ..events import numba_event_linear_param_grads
    from . import numba_kernels as K

    O, C = weight.shape
    Kout = out_weight.shape[0]
    M = batch * O
    gy = grad_y.reshape(steps * batch, Kout).contiguous()
    if neuron_grads:
        config = SingleSpikeKernelConfig(surrogate_code, surrogate_param, straight_through)
        imp, cr, dr = (None, None, None) if readout is None else readout
        gwt, gb, gd, gc, gth, gv0 = K.events_backward(
            crow=crow, channels=channels, values=values, weight=weight, bias=bias, checkpoints=checkpoints,
            first=first, grad_s=grad_rows(grad_s, steps, M, weight.dtype), decay=decay, scale=scale,
            threshold=threshold, steps=steps, batch=batch, config=config, need_weight=need_weight,
            need_bias=need_bias, param_grads=param_grads, grad_y=gy.view(steps, batch * Kout), out_weight=out_weight,
            impulses=imp, readout_scale=cr, readout_decay=dr)
    else:
        gwt, gb = weight.new_zeros(C, O), weight.new_zeros(O)
        gd, gc, gth, gv0 = (weight.new_zeros(M) for _ in range(4))
    if need_out_weight or need_out_bias:
        spikes = _spike_events(first, steps, batch, O, weight.dtype)
        gw2t, gb2 = numba_event_linear_param_grads(spikes, gy, need_out_bias)
    else:
        gw2t, gb2 = weight.new_zeros(O, Kout), weight.new_zeros(Kout)
    return gwt, gb, gw2t, gb2, gd, gc, gth, gv0


single_spike_events_linear_fused_backward = torch.library.custom_op(
    "spikescan::single_spike_events_linear_fused_backward", _single_spike_events_linear_fused_backward_impl,
    mutates_args=())


@single_spike_events_linear_fused_backward.register_fake
def _(crow, channels, values, weight, bias, out_weight, checkpoints, first, grad_s, grad_y, decay, scale, threshold,
      steps, batch, surrogate_code, surrogate_param, straight_through, need_weight, need_bias, need_out_weight,
      need_out_bias, neuron_grads, param_grads):
    O, C = weight.shape
    M = batch * O
    Kout = out_weight.shape[0]
    return (weight.new_empty(C, O), weight.new_empty(O), weight.new_empty(O, Kout), weight.new_empty(Kout),
            *(weight.new_empty(M) for _ in range(4)))


def _events_linear_setup_context(ctx, inputs, output):
    (crow, channels, values, weight, bias, out_weight, out_bias, decay, scale, threshold, v0, steps, batch, code,
     param, straight, _) = inputs
    s, y, checkpoints, first = output
    ctx.save_for_backward(crow, channels, values, weight, bias, out_weight, checkpoints, first, decay, scale,
                          threshold)
    ctx.sizes = (steps, batch)
    ctx.config = (code, param, straight)


def _events_linear_backward(ctx, g_s, g_y, g_ck, g_first, backward_op=single_spike_events_linear_fused_backward):
    (crow, channels, values, weight, bias, out_weight, checkpoints, first, decay, scale,
     threshold) = ctx.saved_tensors
    _check_saved(checkpoints, "single_spike_events_linear_fused_forward")
    steps, batch = ctx.sizes
    O = weight.shape[0]
    gs = weight.new_zeros(1, batch * O) if g_s is None else g_s
    gy = weight.new_zeros(steps * batch, out_weight.shape[0]) if g_y is None else g_y
    need = ctx.needs_input_grad
    neuron = bool(need[3] or need[4] or any(need[7:11]))
    gwt, gb, gw2t, gb2, gd, gc, gth, gv0 = backward_op(
        crow, channels, values, weight, bias, out_weight, checkpoints, first, gs, gy, decay, scale, threshold, steps,
        batch, *ctx.config, bool(need[3]), bool(need[4]), bool(need[5]), bool(need[6]), neuron, any(need[7:10]))
    return (None, None, None, gwt.t() if need[3] else None, gb if need[4] else None,
            gw2t.t() if need[5] else None, gb2 if need[6] else None, gd, gc, gth, gv0, *(None for _ in range(6)))


single_spike_events_linear_fused_forward.register_autograd(_events_linear_backward,
                                                           setup_context=_events_linear_setup_context)
_SingleSpikeEventsLinearFusedForwardEager = eager_function(
    "single_spike_events_linear_fused_forward", _single_spike_events_linear_fused_forward_impl,
    _events_linear_setup_context,
    lambda ctx, *grads: _events_linear_backward(ctx, *grads,
                                                backward_op=_single_spike_events_linear_fused_backward_impl))


def single_spike_events_linear_fused(x, weight: Tensor, bias: Tensor, out_weight: Tensor, out_bias: Tensor,
                                     decay: Tensor, threshold: Tensor, scale: Tensor, v0: Tensor | None, *,
                                     surrogate, straight_through: bool) -> tuple[Tensor, Tensor]:
    """As :func:`single_spike_events_fused`, and the linear layer ``y = out_weight s + out_bias``
    that the spikes feed: returns ``(s [T, B, O], y [T, B, K])`` in ``weight``'s dtype (validated
    inputs; ``out_weight`` ``[K, O]``, ``out_bias`` ``[K]``)."""
    T, B, _ = x.shape
    O = weight.shape[0]
    values, layers, neuron, consts = _events_kernel_inputs(x, (weight, bias, out_weight, out_bias), decay, threshold,
                                                           scale, v0, surrogate)
    op = (single_spike_events_linear_fused_forward if torch.compiler.is_compiling()
          else _SingleSpikeEventsLinearFusedForwardEager.apply)
    s, y, _, first = op(x.crow, x.channels, values, *layers, *neuron, T, B, *consts, bool(straight_through),
                        needs_grad(weight, bias, out_weight, out_bias, decay, scale, threshold, v0))
    out = weight.dtype
    return _with_events(s.view(T, B, O).to(out), first), y.view(T, B, out_weight.shape[0]).to(out)


# --------------------------------------------------------------------------------------------
# ... and the max-membrane readout of that linear layer (FastSNN's whole network but the loss)
# --------------------------------------------------------------------------------------------
#
# The readout's input gradient gy[t] = c_r r[t], r[t] = imp[t] + d_r r[t + 1], is dense up to the
# readout's maxima although its impulses imp (gm / count where V is the maximum) are not: with
# one readout decay d_r the neurons' sweep carries G[t] = gy[t] W2 = d_r G[t + 1] + (c_r imp[t]) W2
# instead of forming gy[t] W2 (K multiply-adds per neuron and step).  Eager CPU only: under
# torch.compile, or with per-neuron readout decays, the two ops above compose.


class _EventsLinearMaxReadout(torch.autograd.Function):
    """``(s [T, B * O], logits [B * K])`` of the events-fed single-spike neurons, the linear layer
    ``y = W2 s + b2`` and the max-membrane readout of ``y`` (readout parameters ``[B * K]``)."""

    @staticmethod
    def forward(ctx, crow, channels, values, weight, bias, out_weight, out_bias, decay, scale, threshold, v0,
                readout_decay, readout_scale, steps, batch, surrogate_code, surrogate_param, straight_through,
                need_grad):
        from . import numba_kernels as K

        ctx.set_materialize_grads(False)
        s, y, ck, first = _single_spike_events_linear_fused_forward_impl(
            crow, channels, values, weight, bias, out_weight, out_bias, decay, scale, threshold, v0, steps, batch,
            surrogate_code, surrogate_param, straight_through, need_grad)
        yv = y.view(steps, -1)
        logits, count, _, ck_r = K.readout_forward(x=yv, decay=readout_decay, scale=readout_scale,
                                                   v0=yv.new_zeros(yv.shape[1]), need_grad=need_grad)
        ctx.save_for_backward(crow, channels, values, weight, bias, out_weight, ck, first, decay, scale, threshold,
                              readout_decay, readout_scale, yv, ck_r, logits, count)
        ctx.sizes = (steps, batch)
        ctx.config = (surrogate_code, surrogate_param, straight_through)
        ctx.mark_non_differentiable(first)
        return s, logits, first

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_s, g_logits, g_first):
        from . import numba_kernels as K

        (crow, channels, values, weight, bias, out_weight, ck, first, decay, scale, threshold, dr, cr, yv, ck_r,
         logits, count) = ctx.saved_tensors
        _check_saved(ck_r, "single_spike_events_linear_max (eager)")
        steps, batch = ctx.sizes
        need = ctx.needs_input_grad
        gm = logits.new_zeros(logits.shape) if g_logits is None else g_logits.to(logits.dtype).contiguous()
        gy, gdr, gcr, _, imp = K.readout_backward(x=yv, v=None, checkpoints=ck_r, grad_max=gm, decay=dr, scale=cr,
                                                  v0=None, maximum=logits, count=count,
                                                  param_grads=bool(need[11] or need[12]), impulses=True)
        gs = weight.new_zeros(1, batch * weight.shape[0]) if g_s is None else g_s
        neuron = bool(need[3] or need[4] or any(need[7:11]))
        gwt, gb, gw2t, gb2, gd, gc, gth, gv0 = _events_linear_grads(
            crow, channels, values, weight, bias, out_weight, ck, first, gs, gy, decay, scale, threshold, steps,
            batch, *ctx.config, bool(need[3]), bool(need[4]), bool(need[5]), bool(need[6]), neuron,
            any(need[7:10]), readout=(imp, cr, dr[:1]))
        return (None, None, None, gwt.t() if need[3] else None, gb if need[4] else None,
                gw2t.t() if need[5] else None, gb2 if need[6] else None, *((gd, gc, gth, gv0) if neuron else
                                                                           (None,) * 4),
                gdr if need[11] else None, gcr if need[12] else None, *(None for _ in range(6)))


def single_spike_events_linear_max_fused(x, weight: Tensor, bias: Tensor, out_weight: Tensor, out_bias: Tensor,
                                         decay: Tensor, threshold: Tensor, scale: Tensor, v0: Tensor | None,
                                         readout_decay: Tensor, readout_scale: Tensor, *, surrogate,
                                         straight_through: bool) -> tuple[Tensor, Tensor]:
    """:func:`single_spike_events_linear_fused` followed by :func:`max_membrane_fused` of its ``y``:
    ``(s [T, B, O], logits [B, K])`` in ``weight``'s dtype (validated inputs; the readout's
    ``readout_decay``, ``readout_scale`` broadcastable to ``[B, K]``).  With one readout decay, in
    eager mode, one autograd node whose backward carries ``gy W2`` from step to step (section
    comment); the two ops otherwise."""
    T, B, _ = x.shape
    O, Kout = weight.shape[0], out_weight.shape[0]
    kdtype = kernel_dtype(weight.dtype)
    rest = torch.Size((B, Kout))
    dr, cr = per_neuron(readout_decay, rest, kdtype), per_neuron(readout_scale, rest, kdtype)
    if torch.compiler.is_compiling() or dr.numel() == 0 or bool(dr.detach().amin() != dr.detach().amax()):
        s, y = single_spike_events_linear_fused(x, weight, bias, out_weight, out_bias, decay, threshold, scale, v0,
                                                surrogate=surrogate, straight_through=straight_through)
        return s, max_membrane_fused(y, readout_decay, readout_scale, None).to(weight.dtype)
    values, layers, neuron, consts = _events_kernel_inputs(x, (weight, bias, out_weight, out_bias), decay, threshold,
                                                           scale, v0, surrogate)
    s, logits, first = _EventsLinearMaxReadout.apply(
        x.crow, x.channels, values, *layers, *neuron, dr, cr, T, B, *consts, bool(straight_through),
        needs_grad(weight, bias, out_weight, out_bias, decay, scale, threshold, v0, readout_decay, readout_scale))
    out = weight.dtype
    return _with_events(s.view(T, B, O).to(out), first), logits.view(B, Kout).to(out)
