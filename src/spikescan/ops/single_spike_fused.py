"""The time-fused FastSNN single-spike LIF: one kernel pass forward, one in reverse time backward.

:func:`spikescan.ops.first_spike.single_spike_lif` composes a leaky integration, a Heaviside with
a surrogate, two cumulative sums and ``g``: about ten passes over ``[T, N]`` tensors each way,
plus the autograd graph.  ``backend="fused"`` computes the same function in one kernel each way
(``_kernels/single_spike_numba.py``, equations in its docstring): the forward reads ``x`` and
writes the spikes, the backward reads ``x`` (and the incoming gradients) and writes ``grad_x``;
on the CPU the membranes are recomputed from a checkpoint every 32 steps instead of being
stored.  The forward equals the composed op bit for bit (spikes and membranes); the backward is
the gradient autograd gives the composed op (phi's adjoint masked before the first spike, or not
with ``straight_through``), computed with the same roundings where the composed op's are known
(see the kernel's docstring), so it agrees to rounding.

:func:`~spikescan.ops.first_spike.max_membrane_readout`'s ``"fused"`` backend is the same
membrane with an infinite threshold reduced to its maximum over time in the forward pass (and
the number of steps that reach it); its backward recomputes the membrane and sends the gradient
to those steps, split evenly among ties as ``torch.amax``'s backward does.

Kernels: numba on the CPU; Triton on CUDA (``_kernels/single_spike_triton.py``: the forward
stores the membrane for the backward instead of checkpoints; tested in Triton's interpreter
against the CPU kernels, not yet measured on a GPU, so ``"auto"`` keeps the composed op on
CUDA).  float32/float64 kernels, float16/bfloat16 computed in float32.  The backward is
``once_differentiable`` (no double backward; the composed backends support it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._kernels import _common as KC
from ._backend import kernel_impl as _impl_for_device
from ._backend import kernels_unavailable
from ._kernels._host import check_neuron_count as _check_n
from ._kernels._host import empty as _empty
from ._kernels._host import exp_args as _exp_args
from ._kernels._host import flat as _flat
from ._kernels._host import grad_rows as _grad_rows
from ._kernels._host import kernel_dtype as _compute_dtype
from ._kernels._host import numpy_dtype
from ._kernels._host import numpy_views as _numpy
from ._kernels._host import run_cpu as _run_cpu
from ._kernels._common import surrogate_consts


def is_available(device) -> bool:
    return kernels_unavailable(device) is None


def _impl_for(x: Tensor) -> str:
    return _impl_for_device(x.device)


def _vec(p: Tensor, rest, N: int, dtype: torch.dtype) -> Tensor:
    """A parameter broadcastable to ``rest`` as a contiguous per-neuron ``[N]`` vector (detached)."""
    return p.detach().to(dtype).expand(rest).reshape(N).contiguous()


def _meta(*params) -> list:
    """``(shape, dtype)`` of each parameter (``None`` for an absent one), for the backward."""
    return [None if p is None else (p.shape, p.dtype) for p in params]


def _param_grads(ctx, per_neuron, rest) -> list:
    """Per-neuron ``[N]`` gradients summed back to their parameters' shapes and dtypes
    (``per_neuron[i]`` belongs to forward input ``1 + i``; ``None`` where absent or not needed)."""
    out = []
    for i, (g, meta) in enumerate(zip(per_neuron, ctx.param_meta)):
        if meta is None or not ctx.needs_input_grad[1 + i]:
            out.append(None)
        else:
            shape, dtype = meta
            out.append(g.reshape(rest).sum_to_size(shape).to(dtype))
    return out

__all__ = ["single_spike_backend", "readout_backend", "supports_single_spike"]

# Neurons per block of the CPU backward: its recomputation buffer, (SEGMENT + 1) x block
# elements, stays in L2 (135 KiB in float32), as for the LIF backward.
_BACKWARD_BLOCK = 1024


def supports_single_spike(x: Tensor, surrogate) -> bool:
    """Whether ``backend="auto"`` runs the fused kernel for ``x`` with ``surrogate`` (``None``: the
    readout, which has none): on the CPU, for the built-in surrogates."""
    builtin = surrogate is None or getattr(surrogate, "kind", "") in KC.SURROGATE_CODES
    return x.device.type == "cpu" and builtin and is_available(x.device)


def check_device(x: Tensor) -> None:
    """Raise unless a fused kernel runs on ``x``'s device (CPU: numba; CUDA: Triton)."""
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"backend='fused' of the FastSNN ops runs on the CPU (numba) or CUDA (Triton), x is on "
                         f"{x.device}; use backend='auto' (the composed op there) or 'chunked'")
    if not is_available(x.device):
        need = "numba (pip install numba)" if x.device.type == "cpu" else "triton and a visible CUDA device"
        raise ValueError(f"backend='fused' of the FastSNN ops on {x.device} needs {need}; "
                         f"use backend='auto' or 'chunked'")


class _SingleSpikeFused(torch.autograd.Function):
    """Inputs validated; ``x`` in a kernel dtype, ``scale`` a tensor (``1 - decay`` already formed
    by the caller, so autograd carries that dependence).  Returns ``(s, v)``; ``v`` is empty unless
    ``need_v``.  Kept for the backward: the CPU kernel's input and checkpoints, or the Triton
    kernel's input and membrane; both with the first-spike times."""

    @staticmethod
    def forward(ctx, x, decay, threshold, scale, v0, code: int, param: float, straight: bool, need_v: bool,
                impl: str):
        ctx.set_materialize_grads(False)
        T, rest = x.shape[0], x.shape[1:]
        N = math.prod(rest)
        _check_n(N)
        dt = x.dtype
        grad = any(ctx.needs_input_grad[:5])
        xf = _flat(x, T, N, dt)
        d, th, c = (_vec(p, rest, N, dt) for p in (decay, threshold, scale))
        v0v = xf.new_zeros(N) if v0 is None else _vec(v0, rest, N, dt)
        s = _empty((T, N), xf)
        store_v = need_v or (grad and impl != "numba")
        v = _empty((T, N), xf) if store_v else xf.new_empty(1, N)
        tf = torch.empty(N, dtype=torch.int32, device=x.device)
        if impl == "numba":
            from ._kernels import single_spike_numba as K

            seg = KC.SEGMENT
            ck = xf.new_empty(-(-T // seg), N) if grad else xf.new_empty(1, N)
            args = _numpy(xf, d, c, th, v0v)
            outs = _numpy(s, v, ck, tf)
            flags = (bool(need_v), bool(grad))
            _run_cpu(N, T, lambda lo, hi, bs: K.single_spike_forward(*args, lo, hi, bs, seg, *flags, *outs))
            state = ck
        else:
            from ._kernels import single_spike_triton as K

            K.forward(xf, d, c, th, v0v, s, v, tf)
            state = v
        if grad:
            ctx.save_for_backward(xf, d, c, th, v0v, state, tf)
        ctx.meta = (T, rest, code, param, straight, impl)
        ctx.param_meta = _meta(decay, threshold, scale, v0)
        v_out = v.view(x.shape) if need_v else v.new_empty(0)
        return s.view(x.shape), v_out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_s, g_v):
        T, rest, code, param, straight, impl = ctx.meta
        xf, d, c, th, v0v, state, tf = ctx.saved_tensors  # state: checkpoints (numba) or membrane (triton)
        N = d.shape[0]
        dt = d.dtype
        has_gv = g_v is not None and g_v.numel() > 0
        gs = d.new_zeros(1, N) if g_s is None else _grad_rows(g_s, T, N, dt)
        gv = _grad_rows(g_v, T, N, dt) if has_gv else d.new_zeros(1, N)
        lim = torch.full_like(tf, T) if straight else tf
        gx = _empty((T, N), d)
        gd, gc, gth, gv0 = (d.new_empty(N) for _ in range(4))
        pgrad = any(ctx.needs_input_grad[1:4])  # decay, threshold, scale
        if impl == "numba":
            from ._kernels import single_spike_numba as K

            ec, fast = _exp_args(dt)
            consts = surrogate_consts(numpy_dtype(dt), param)
            args = _numpy(xf, state, gs, gv, d, c, th, lim)
            flags = (int(code), consts, ec, fast, pgrad, has_gv)
            outs = _numpy(gx, gd, gc, gth, gv0)
            _run_cpu(N, T, lambda lo, hi, bs: K.single_spike_backward(*args, *flags, lo, hi, bs, KC.SEGMENT, *outs),
                     _BACKWARD_BLOCK)
        else:
            from ._kernels import single_spike_triton as K

            K.backward(state, xf, gs, gv, d, c, th, v0v, lim, int(code), float(param), has_gv, pgrad,
                       gx, gd, gc, gth, gv0)
        grads = _param_grads(ctx, (gd, -gth, gc, gv0), rest)
        return (gx.view((T,) + tuple(rest)), *grads, None, None, None, None, None)


def single_spike_backend(x: Tensor, decay: Tensor, threshold: Tensor, scale: Tensor, v0: Tensor | None, *,
                         surrogate, straight_through: bool, need_membrane: bool):
    """The ``"fused"`` backend of :func:`spikescan.ops.first_spike.single_spike_lif`.

    Receives validated parameter tensors (``scale`` already ``1 - decay`` where the caller means
    the paper's factor), returns ``(s, v)`` in ``x.dtype``; ``v`` is empty unless
    ``need_membrane``.
    """
    check_device(x)
    impl = _impl_for(x)
    code, param = KC.surrogate_constants(surrogate.kind, surrogate.param)
    dt = _compute_dtype(x.dtype)
    s, v = _SingleSpikeFused.apply(x.to(dt), decay, threshold, scale, v0, code, param, bool(straight_through),
                                   bool(need_membrane), impl)
    return s.to(x.dtype), v.to(x.dtype)


class _ReadoutFused(torch.autograd.Function):
    """``max_t v[t]`` of the leaky membrane; inputs as for :class:`_SingleSpikeFused`."""

    @staticmethod
    def forward(ctx, x, decay, scale, v0, impl: str):
        T, rest = x.shape[0], x.shape[1:]
        N = math.prod(rest)
        _check_n(N)
        dt = x.dtype
        grad = any(ctx.needs_input_grad[:4])
        xf = _flat(x, T, N, dt)
        d, c = (_vec(p, rest, N, dt) for p in (decay, scale))
        v0v = xf.new_zeros(N) if v0 is None else _vec(v0, rest, N, dt)
        mx, cnt = xf.new_empty(N), xf.new_empty(N)
        if impl == "numba":
            from ._kernels import single_spike_numba as K

            seg = KC.SEGMENT
            state = xf.new_empty(-(-T // seg), N) if grad else xf.new_empty(1, N)
            args = _numpy(xf, d, c, v0v)
            outs = _numpy(state, mx, cnt)
            _run_cpu(N, T, lambda lo, hi, bs: K.readout_forward(*args, lo, hi, bs, seg, bool(grad), *outs),
                     _BACKWARD_BLOCK)
        else:
            from ._kernels import single_spike_triton as K

            state = _empty((T, N), xf) if grad else xf.new_empty(1, N)
            K.readout_forward(xf, d, c, v0v, state, mx, cnt)
        if grad:
            ctx.save_for_backward(xf, d, c, v0v, state, mx, cnt)
        ctx.meta = (T, rest, impl)
        ctx.param_meta = _meta(decay, scale, v0)
        return mx.view(rest)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_m):
        T, rest, impl = ctx.meta
        xf, d, c, v0v, state, mx, cnt = ctx.saved_tensors
        N = d.shape[0]
        gm = g_m.detach().to(d.dtype).reshape(N).contiguous()
        gx = _empty((T, N), d)
        gd, gc, gv0 = (d.new_empty(N) for _ in range(3))
        pgrad = any(ctx.needs_input_grad[1:3])  # decay, scale
        if impl == "numba":
            from ._kernels import single_spike_numba as K

            args = _numpy(xf, state, gm, d, c, mx, cnt)
            outs = _numpy(gx, gd, gc, gv0)
            _run_cpu(N, T, lambda lo, hi, bs: K.readout_backward(*args, lo, hi, bs, KC.SEGMENT, pgrad, *outs),
                     _BACKWARD_BLOCK)
        else:
            from ._kernels import single_spike_triton as K

            K.readout_backward(state, xf, gm, d, c, v0v, mx, cnt, pgrad, gx, gd, gc, gv0)
        grads = _param_grads(ctx, (gd, gc, gv0), rest)
        return (gx.view((T,) + tuple(rest)), *grads, None)


def readout_backend(x: Tensor, decay: Tensor, scale: Tensor, v0: Tensor | None) -> Tensor:
    """The ``"fused"`` backend of :func:`spikescan.ops.first_spike.max_membrane_readout`:
    validated parameters as for :func:`single_spike_backend`; returns ``[*x.shape[1:]]``."""
    check_device(x)
    dt = _compute_dtype(x.dtype)
    return _ReadoutFused.apply(x.to(dt), decay, scale, v0, _impl_for(x)).to(x.dtype)


# --------------------------------------------------------------------------------------------
# the single-spike LIF fed by events (input layer fused into the kernel)
# --------------------------------------------------------------------------------------------
#
# single_spike_lif(event_linear(x, W, b), ...) writes the current I = W x + b ([T, B, O]) in the
# forward and reads it again in the neuron's backward, which writes gI for event_linear's
# backward to read: four passes over a [T, B, O] tensor besides the spikes.  The fused op builds
# I step by step from the events inside the neuron kernel, in the kernel's own buffers, and in
# the backward sends gI straight on: each neuron's sum over time for the bias, and the rows
# (t, b) that have events -- the only ones the weight gradient needs -- to a compact [R, O]
# array (R = rows with at least one event), which a second kernel reduces into gW in
# event_linear's order.  Kernels: ``_kernels/single_spike_numba.py``, last section.
#
# Threads: samples are split over the pool in fixed ranges; every (t, b, neuron) value is
# computed the same way whatever the range, and the two sums across samples (the bias gradient
# over b, the weight gradient over rows) run afterwards in a fixed order, so results do not
# depend on the thread count or the scheduling.

# Neurons per block of the events backward (whole samples, at least one): its three
# (SEGMENT + 1) x block buffers (membranes, currents, gI) stay in L2.
_EVENTS_BACKWARD_BLOCK = 1024
# ... and of the forward (four current buffers and the state of the block, in L1/L2).
_EVENTS_FORWARD_BLOCK = 4096
_SAMPLE_CHUNKS_PER_THREAD = 4


def _run_samples(B: int, work: int, block: int, fn) -> None:
    """Call ``fn(lo, hi)`` on disjoint ranges of samples covering ``0 .. B-1``, each range a
    multiple of ``block`` samples (but the last), up to ``_SAMPLE_CHUNKS_PER_THREAD`` ranges per
    thread taken from a shared counter (as ``_cpu.parallel_for``, over samples instead of neurons)."""
    if B == 0:
        return
    from ._kernels import _cpu

    threads = max(1, torch.get_num_threads())
    if threads == 1 or work < _cpu._MIN_PARALLEL or B < 2:
        fn(0, B)
        return
    size = max(1, -(-B // (threads * _SAMPLE_CHUNKS_PER_THREAD)))
    size = block * (-(-size // block)) if size > block else size
    ranges = [(lo, min(B, lo + size)) for lo in range(0, B, size)]
    _cpu.run_ranges(ranges, fn, threads)


def _events_arrays(x, dt):
    """``(crow, channels, values, has_values)`` of events ``x`` for the kernels (values in ``dt``)."""
    has_values = x.values is not None
    values = x.values.detach().to(dt).contiguous() if has_values else torch.empty(0, dtype=dt)
    return x.crow.contiguous().numpy(), x.channels.contiguous().numpy(), values.numpy(), has_values


class _SingleSpikeEventsFused(torch.autograd.Function):
    """Inputs validated: ``weight`` [O, C] and ``bias`` [O] in a kernel dtype, the neuron parameters
    as for :class:`_SingleSpikeFused` (broadcastable to ``[B, O]``).  Returns the spikes
    ``[T, B, O]``.  Kept for the backward: the events, ``W^T``, the bias, the checkpoints and the
    first-spike times."""

    @staticmethod
    def forward(ctx, x, weight, bias, decay, threshold, scale, v0, code: int, param: float, straight: bool):
        from ._kernels import single_spike_numba as K

        ctx.set_materialize_grads(False)
        T, B, C = x.shape
        O = weight.shape[0]
        rest = torch.Size((B, O))
        M = B * O
        _check_n(M)
        dt = weight.dtype
        grad = any(ctx.needs_input_grad[1:7])
        wt = weight.detach().t().contiguous()
        bv = bias.detach().to(dt).contiguous()
        d, th, c = (_vec(p, rest, M, dt) for p in (decay, threshold, scale))
        v0v = wt.new_zeros(M) if v0 is None else _vec(v0, rest, M, dt)
        s = _empty((T, M), wt)
        tf = torch.empty(M, dtype=torch.int32)
        seg = KC.SEGMENT
        ck = wt.new_empty(-(-T // seg), M) if grad else wt.new_empty(1, M)
        ev = _events_arrays(x, dt)
        args = (*ev, wt.numpy(), bv.numpy(), *_numpy(d, c, th, v0v), T, B)
        outs = _numpy(s, ck, tf)
        bblock = max(1, _EVENTS_FORWARD_BLOCK // max(O, 1))
        _run_samples(B, T * M, bblock,
                     lambda lo, hi: K.events_forward(*args, lo, hi, bblock, seg, bool(grad), *outs))
        if grad:
            ctx.save_for_backward(wt, bv, d, c, th, ck, tf)
            ctx.events = ev
        ctx.meta = (T, B, C, O, code, param, straight)
        ctx.param_meta = _meta(weight, bias, decay, threshold, scale, v0)
        return s.view(T, B, O)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_s):
        from ._kernels import single_spike_numba as K
        from ._kernels._cpu import parallel_for

        T, B, C, O, code, param, straight = ctx.meta
        grads = [None] * 6
        if g_s is None:
            return (None, *grads, None, None, None)
        wt, bv, d, c, th, ck, tf = ctx.saved_tensors
        crow, channels, values, has_values = ctx.events
        M = B * O
        dt = wt.dtype
        gs = _grad_rows(g_s, T, M, dt)
        lim = torch.full_like(tf, T) if straight else tf
        need_w = bool(ctx.needs_input_grad[1])
        need_b = bool(ctx.needs_input_grad[2])
        pgrad = any(ctx.needs_input_grad[3:6])  # decay, threshold, scale
        crow_t = torch.from_numpy(crow)
        nonempty = crow_t[1:] > crow_t[:-1]
        rows = int(nonempty.sum())
        evrow = (torch.cumsum(nonempty, 0) - 1) if need_w else crow_t.new_empty(1)
        gev = _empty((rows, O), wt) if need_w else wt.new_empty(1, O)
        gbn = wt.new_empty(M) if need_b else wt.new_empty(1)
        gd, gc, gth, gv0 = (wt.new_empty(M) for _ in range(4))
        ec, fast = _exp_args(dt)
        consts = surrogate_consts(numpy_dtype(dt), param)
        args = (crow, channels, values, has_values, evrow.numpy(), wt.numpy(), bv.numpy(), ck.numpy(), gs.numpy(),
                *_numpy(d, c, th, lim), int(code), consts, ec, fast, pgrad, need_w, need_b, T, B)
        outs = _numpy(gev, gbn, gd, gc, gth, gv0)
        bblock = max(1, _EVENTS_BACKWARD_BLOCK // max(O, 1))
        _run_samples(B, T * M, bblock, lambda lo, hi: K.events_backward(*args, lo, hi, bblock, KC.SEGMENT, *outs))
        if need_w:
            from ._kernels import event_numba as EK

            gwt = wt.new_empty(C, O)
            if O > 0:
                # gev holds the rows that have events, in order: their CSR is the weight gradient's
                # input as in event_linear's backward (the same sums in the same order)
                crow_ev = torch.cat([crow_t[:1], crow_t[1:][nonempty]]).numpy()
                wargs = (crow_ev, channels, values, has_values, gev.numpy(), gwt.numpy(), wt.new_empty(O).numpy(),
                         False)
                parallel_for(O, channels.shape[0] * O + C * O,
                             lambda lo, hi, _b: EK.event_linear_weight_grad(*wargs, lo, hi))
            grads[0] = gwt.t()
        if need_b:
            gb = wt.new_empty(O)
            K.sum_samples(gbn.numpy(), B, gb.numpy())
            grads[1] = gb
        rest = torch.Size((B, O))
        for i, g in enumerate((gd, -gth, gc, gv0)):
            meta = ctx.param_meta[2 + i]
            if meta is not None and ctx.needs_input_grad[3 + i]:
                shape, pdt = meta
                grads[2 + i] = g.reshape(rest).sum_to_size(shape).to(pdt)
        return (None, *grads, None, None, None)


def single_spike_events_backend(x, weight: Tensor, bias: Tensor, decay: Tensor, threshold: Tensor, scale: Tensor,
                                v0: Tensor | None, *, surrogate, straight_through: bool) -> Tensor:
    """The fused kernel of :func:`spikescan.ops.first_spike.single_spike_lif_events`: validated
    inputs (``scale`` already ``1 - decay`` where meant, the parameters in the compute dtype of
    ``weight``); returns the spikes ``[T, B, O]`` in ``weight.dtype``."""
    if not is_available(torch.device("cpu")):
        raise ValueError("single_spike_lif_events needs numba (pip install numba)")
    code, param = KC.surrogate_constants(surrogate.kind, surrogate.param)
    dt = _compute_dtype(weight.dtype)
    s = _SingleSpikeEventsFused.apply(x, weight.to(dt), bias.to(dt), decay, threshold, scale, v0, code, param,
                                      bool(straight_through))
    return s.to(weight.dtype)
