"""Time-fused exact LIF on the CPU (numba): forward and backward through time, one pass each.

Equations (those of :mod:`spikescan.ops.lif`), per neuron ``n`` and step ``t``::

    v[t]  = d * vp[t-1] + x[t]            vp[-1] = v0
    s[t]  = (v[t] >= th)
    vp[t] = v[t] - th * s[t]              subtract reset
    vp[t] = v[t] * (1 - s[t]) + vr * s[t] zero reset (hard reset to vr)

Forward writes ``s``, the final ``vp`` and, when a gradient will be needed, a checkpoint of the
post-reset state at the start of every segment of ``seg`` steps (``ck[g] = vp[g*seg - 1]``,
``ck[0] = v0``); the pre-reset membrane ``v`` only when the caller asks for it as an output.
It does the same floating-point operations in the same order as the sequential reference
(``d * vp`` rounded, then ``+ x``; no FMA contraction since ``fastmath=False``), so the spikes and
membranes agree bit for bit.

Backward walks the segments from last to first.  For each it recomputes the segment's membranes
from its checkpoint and ``x`` into a small buffer (``(seg + 1) x block`` elements, cache resident;
the same operations as the forward, so bit-identical and the same spikes), then runs the
reverse-time recurrence (``a = dL/dvp[t]`` carried in a local, starting from the gradient of the
returned final state)::

    gs_tot = gs[t] + (not detach) * a * dvp/ds      dvp/ds = -th (subtract) | vr - v[t] (zero)
    dv     = gv[t] + a * dvp/dv + gs_tot * sg(v[t] - th)
                                                    dvp/dv = 1 (subtract) | 1 - s[t] (zero)
    gx[t]  = dv
    gd    += dv * vp[t-1]       (vp[t-1] from v[t-1], or the checkpoint at a segment's start)
    gth   += -gs_tot * sg - (subtract) a * s[t]
    gvr   += (zero) a * s[t]
    a      = d * dv            ->  after t = 0: grad of v0

``gs``/``gv`` are the incoming gradients of the spikes and the membrane output (each may be a
single row when it is the same at every step, e.g. of ``s.sum()``).  The per-neuron sums
``gd, gth, gvr`` are reduced to the parameters' shapes by the caller.

Memory kept for the backward: the input ``x`` (the caller's own tensor when it is a contiguous
kernel dtype, so usually nothing new) and the checkpoints, ``4 / seg`` bytes per (t, neuron) in
float32 (0.125 B at seg = 32).  Memory traffic of a training step, per (t, neuron): forward
reads ``x`` and writes ``s``; backward reads ``x`` and writes ``gx`` (+ a full ``gs``/``gv`` when
the incoming gradients are not broadcast rows).  Keeping the pre-reset membrane instead (as the
previous version did) costs one more write and one more read of 4 B; on the development CPU
(2 cores, B=32, N=256, T=1000, float32) recomputing was faster: forward, ``s.sum()`` and
backward 7.2 vs 8.1 ms (minimum of 21 interleaved runs; both with the specialisations below).

The backward kernels are compiled per surrogate, exp flavour, and two facts about the call that
remove work from the inner loop when they are false: whether a parameter (decay, threshold,
v_reset) needs a gradient (``pgrad``: the per-neuron sums) and whether the membrane output has
one (``has_gv``).  A layer with fixed constants trained on its spikes alone runs the leanest
version (25 % less work in the backward's loop than with every sum).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._kernels._numba_lowlevel import specialise
from .._kernels._common import surrogate_consts
from .._kernels._numba_math import surrogate_grad

# Serial kernels over a range of neurons [lo0, hi0); the caller runs disjoint ranges on a thread
# pool (nogil).  Inside, neurons are processed in blocks of ``block``: the state of a block lives
# in local arrays (which LLVM knows alias nothing, so the inner loops vectorize), the t loop runs
# outside the contiguous inner loop over the block's neurons.
_JIT = dict(fastmath=False, cache=True, nogil=True, error_model="numpy")


# ------------------------------------------------------------------------------------------
# forward
# ------------------------------------------------------------------------------------------
#
# Per (t, neuron) a row-at-a-time loop loads the state and the three parameters and stores the
# state back: 8 memory operations for one multiply-add, i.e. it is bound by load/store
# throughput, not by memory bandwidth.  The kernels below advance each neuron U = 4 steps per
# sweep over the block, keeping state and parameters in registers for those steps: 2 (3 with v)
# memory operations per element + 5 per 4 steps.  The U-step bodies are separate (non-inlined
# at the numba level) functions whose rows arrive as distinct arguments, which is what lets LLVM
# vectorize them with runtime alias checks (row slices of one array inside a single function
# defeat its dependence analysis).

_U = 4


@njit(inline="always")
def _fstep(xk, p, dk, tk, rk, zero_reset):
    """One reference step: ``(v, spike, post-reset state)``, ``d * vp`` rounded, then ``+ x``."""
    vv = dk * p + xk
    f = vv >= tk
    if zero_reset:
        q = rk if f else vv
    else:
        q = vv - tk if f else vv
    return vv, f, q


@njit(**_JIT)
def _fwd4(x0, x1, x2, x3, s0, s1, s2, s3, d, th, vr, vp, zero_reset, one, zero):
    for k in range(vp.shape[0]):
        dk = d[k]
        tk = th[k]
        rk = vr[k]
        _, f, p = _fstep(x0[k], vp[k], dk, tk, rk, zero_reset)
        s0[k] = one if f else zero
        _, f, p = _fstep(x1[k], p, dk, tk, rk, zero_reset)
        s1[k] = one if f else zero
        _, f, p = _fstep(x2[k], p, dk, tk, rk, zero_reset)
        s2[k] = one if f else zero
        _, f, p = _fstep(x3[k], p, dk, tk, rk, zero_reset)
        s3[k] = one if f else zero
        vp[k] = p


@njit(**_JIT)
def _fwd4v(x0, x1, x2, x3, s0, s1, s2, s3, w0, w1, w2, w3, d, th, vr, vp, zero_reset, one, zero):
    for k in range(vp.shape[0]):
        dk = d[k]
        tk = th[k]
        rk = vr[k]
        vv, f, p = _fstep(x0[k], vp[k], dk, tk, rk, zero_reset)
        s0[k] = one if f else zero
        w0[k] = vv
        vv, f, p = _fstep(x1[k], p, dk, tk, rk, zero_reset)
        s1[k] = one if f else zero
        w1[k] = vv
        vv, f, p = _fstep(x2[k], p, dk, tk, rk, zero_reset)
        s2[k] = one if f else zero
        w2[k] = vv
        vv, f, p = _fstep(x3[k], p, dk, tk, rk, zero_reset)
        s3[k] = one if f else zero
        w3[k] = vv
        vp[k] = p


@njit(**_JIT)
def _fwd1(x0, s0, w0, d, th, vr, vp, zero_reset, store_s, store_v, one, zero):
    for k in range(vp.shape[0]):
        vv, f, p = _fstep(x0[k], vp[k], d[k], th[k], vr[k], zero_reset)
        if store_s:
            s0[k] = one if f else zero
        if store_v:
            w0[k] = vv
        vp[k] = p


@njit(**_JIT)
def _membrane4(x0, x1, x2, x3, w0, w1, w2, w3, d, th, vr, vp, zero_reset):
    """Four steps writing only the pre-reset membranes (the backward's recomputation)."""
    for k in range(vp.shape[0]):
        dk = d[k]
        tk = th[k]
        rk = vr[k]
        vv, _, p = _fstep(x0[k], vp[k], dk, tk, rk, zero_reset)
        w0[k] = vv
        vv, _, p = _fstep(x1[k], p, dk, tk, rk, zero_reset)
        w1[k] = vv
        vv, _, p = _fstep(x2[k], p, dk, tk, rk, zero_reset)
        w2[k] = vv
        vv, _, p = _fstep(x3[k], p, dk, tk, rk, zero_reset)
        w3[k] = vv
        vp[k] = p


@njit(**_JIT)
def lif_forward(x, decay, thr, vreset, v0, zero_reset, lo0, hi0, block, seg, store_v, store_ck, s, v, ck,
                vlast):
    """Fill ``s`` ([T, N]), ``vlast`` ([N]) and, when asked, ``v`` ([T, N]) and the checkpoints
    ``ck`` ([ceil(T / seg), N]) for neurons ``lo0 .. hi0-1``; ``seg`` is a multiple of 4.

    ``v`` and ``ck`` are not touched when not asked for (pass any array of the dtype).
    """
    T = x.shape[0]
    one = np.ones(1, x.dtype)[0]
    zero = one - one
    for lo in range(lo0, hi0, block):
        hi = min(lo + block, hi0)
        d = decay[lo:hi]
        th = thr[lo:hi]
        vr = vreset[lo:hi]
        vp = v0[lo:hi].copy()  # post-reset state of the block
        t = 0
        while t + _U <= T:
            if store_ck and t % seg == 0:
                ck[t // seg, lo:hi] = vp
            if store_v:
                _fwd4v(x[t, lo:hi], x[t + 1, lo:hi], x[t + 2, lo:hi], x[t + 3, lo:hi],
                       s[t, lo:hi], s[t + 1, lo:hi], s[t + 2, lo:hi], s[t + 3, lo:hi],
                       v[t, lo:hi], v[t + 1, lo:hi], v[t + 2, lo:hi], v[t + 3, lo:hi], d, th, vr, vp, zero_reset,
                       one, zero)
            else:
                _fwd4(x[t, lo:hi], x[t + 1, lo:hi], x[t + 2, lo:hi], x[t + 3, lo:hi],
                      s[t, lo:hi], s[t + 1, lo:hi], s[t + 2, lo:hi], s[t + 3, lo:hi], d, th, vr, vp, zero_reset,
                      one, zero)
            t += _U
        while t < T:
            if store_ck and t % seg == 0:
                ck[t // seg, lo:hi] = vp
            _fwd1(x[t, lo:hi], s[t, lo:hi], v[t if store_v else 0, lo:hi], d, th, vr, vp, zero_reset, True,
                  store_v, one, zero)
            t += 1
        vlast[lo:hi] = vp


# ------------------------------------------------------------------------------------------
# backward
# ------------------------------------------------------------------------------------------


@njit(inline="always")
def _bstep(vv, pv, prev_post, gsk, gvk, a, dk, tk, rk, zero_reset, keep, code, consts, ec, fast):
    """One reverse step of one neuron (module docstring).  ``pv``: ``v[t-1]``, or the post-reset
    state (a checkpoint) when ``prev_post``.  Returns ``(dv, new a, d_acc_d, d_acc_th, d_acc_vr)``;
    the three increments are dead code that LLVM drops where the caller does not use them."""
    zero = consts.one - consts.one
    f = vv >= tk
    sg = surrogate_grad(code, vv - tk, consts, ec, fast)
    if zero_reset:
        g_s = gsk + keep * a * (rk - vv)
        dv = gvk + (zero if f else a) + g_s * sg
        inc_d = dv * (pv if (pv < tk) | prev_post else rk)
        inc_th = g_s * sg
        inc_vr = a if f else zero
    else:
        g_s = gsk - keep * a * tk
        dv = gvk + a + g_s * sg
        inc_d = dv * (pv if (pv < tk) | prev_post else pv - tk)
        inc_th = g_s * sg + (a if f else zero)
        inc_vr = zero
    return dv, dk * dv, inc_d, inc_th, inc_vr


# Bound per variant by specialise() (_make_backward): the surrogate code, the flags, and in the
# driver the two-step and one-step reverse kernels.
_CODE = _FAST = _PGRAD = _HAS_GV = _bwd2 = _bwd1 = None


def _lif_backward_template(x, ck, gs, gv, glast, decay, thr, vreset, zero_reset, detach, consts, ec, lo0, hi0,
                           block, seg, gx, gd, gth, gvr, gv0):
    """The reverse-time driver; :func:`_make_backward` binds ``_bwd2``/``_bwd1`` per variant."""
    T = x.shape[0]
    gs_step = 1 if gs.shape[0] == T else 0
    gv_step = 1 if gv.shape[0] == T else 0
    one = consts.one
    keep = one - one if detach else one  # weight of the reset path through the spike
    nseg = (T + seg - 1) // seg
    for lo in range(lo0, hi0, block):
        hi = min(lo + block, hi0)
        m = hi - lo
        d = decay[lo:hi]
        th = thr[lo:hi]
        vr = vreset[lo:hi]
        # separate allocations (rows of one array would defeat LLVM's alias analysis)
        buf = np.empty((seg + 1, m), x.dtype)  # buf[0]: checkpoint (post-reset), buf[j+1]: v[t0+j]
        vp = np.empty(m, x.dtype)
        unused = np.empty(m, x.dtype)  # spike row of the recomputation (not written)
        a_r = glast[lo:hi].copy()  # dL/dvp[t], carried backwards
        ad_r = np.zeros(m, x.dtype)
        at_r = np.zeros(m, x.dtype)
        av_r = np.zeros(m, x.dtype)
        for g in range(nseg - 1, -1, -1):
            t0 = g * seg
            n = min(T, t0 + seg) - t0
            buf[0] = ck[g, lo:hi]
            vp[:] = buf[0]
            j = 0
            while j + _U <= n:
                _membrane4(x[t0 + j, lo:hi], x[t0 + j + 1, lo:hi], x[t0 + j + 2, lo:hi], x[t0 + j + 3, lo:hi],
                           buf[j + 1], buf[j + 2], buf[j + 3], buf[j + 4], d, th, vr, vp, zero_reset)
                j += _U
            while j < n:
                _fwd1(x[t0 + j, lo:hi], unused, buf[j + 1], d, th, vr, vp, zero_reset, False, True, one, one)
                j += 1
            r = n % 2  # the segment's first step alone when n is odd, after the pairs
            for j in range(n - 2, r - 1, -2):  # steps t0+j, t0+j+1
                t = t0 + j
                _bwd2(buf[j + 1], buf[j + 2], buf[j], gs[t * gs_step, lo:hi], gs[(t + 1) * gs_step, lo:hi],
                     gv[t * gv_step, lo:hi], gv[(t + 1) * gv_step, lo:hi], gx[t, lo:hi], gx[t + 1, lo:hi], d,
                     th, vr, a_r, ad_r, at_r, av_r, j == 0, zero_reset, keep, consts, ec)
            if r:
                _bwd1(buf[1], buf[0], gs[t0 * gs_step, lo:hi], gv[t0 * gv_step, lo:hi], gx[t0, lo:hi], d, th,
                     vr, a_r, ad_r, at_r, av_r, True, zero_reset, keep, consts, ec)
        gd[lo:hi] = ad_r
        gth[lo:hi] = at_r
        gvr[lo:hi] = av_r
        gv0[lo:hi] = a_r


def _bwd2_template(v0, v1, vm, gs0, gs1, gv0, gv1, gx0, gx1, d, th, vr, a_r, ad_r, at_r, av_r, prev_post,
                   zero_reset, keep, consts, ec):
    # steps t+1, t in reverse; vm = v[t-1] (or the checkpoint when prev_post); a_r: dL/dvp
    # carried backwards, ad_r/at_r/av_r: the sums for decay, threshold, v_reset.  (Four
    # steps at a time would need more runtime alias checks than LLVM accepts.)
    zero = consts.one - consts.one
    for k in range(d.shape[0]):
        dk = d[k]
        tk = th[k]
        rk = vr[k]
        w0 = v0[k]
        dv, a, i_d, i_t, i_v = _bstep(v1[k], w0, False, gs1[k], gv1[k] if _HAS_GV else zero, a_r[k], dk, tk,
                                      rk, zero_reset, keep, _CODE, consts, ec, _FAST)
        gx1[k] = dv
        if _PGRAD:
            ad = ad_r[k] + i_d
            at = at_r[k] - i_t
            av = av_r[k] + i_v
        dv, a, i_d, i_t, i_v = _bstep(w0, vm[k], prev_post, gs0[k], gv0[k] if _HAS_GV else zero, a, dk, tk,
                                      rk, zero_reset, keep, _CODE, consts, ec, _FAST)
        gx0[k] = dv
        a_r[k] = a
        if _PGRAD:
            ad_r[k] = ad + i_d
            at_r[k] = at - i_t
            av_r[k] = av + i_v

def _bwd1_template(v0, vm, gs0, gv0, gx0, d, th, vr, a_r, ad_r, at_r, av_r, prev_post, zero_reset, keep, consts, ec):
    zero = consts.one - consts.one
    for k in range(d.shape[0]):
        dv, a, i_d, i_t, i_v = _bstep(v0[k], vm[k], prev_post, gs0[k], gv0[k] if _HAS_GV else zero, a_r[k],
                                      d[k], th[k], vr[k], zero_reset, keep, _CODE, consts, ec, _FAST)
        gx0[k] = dv
        a_r[k] = a
        if _PGRAD:
            ad_r[k] += i_d
            at_r[k] -= i_t
            av_r[k] += i_v


def _make_backward(code: int, fast: bool, pgrad: bool, has_gv: bool):
    """The backward kernel specialised to one surrogate ``code``, exp flavour (``fast``), and
    whether parameter sums (``pgrad``) and a membrane gradient (``has_gv``) are needed.

    These are compile-time constants of the kernels, so the surrogate's other branches, the
    unused sums and the ``gv`` loads vanish from the inner loops (with the surrogate branch left
    in, the loop versions multiply and LLVM gives up vectorizing).  Each kernel is a template
    compiled by :func:`~._numba_lowlevel.specialise` with those constants (and, for the driver,
    the step kernels) bound: one uniquely named, disk-cached function per variant.
    """
    flags = {"_CODE": code, "_FAST": fast, "_PGRAD": pgrad, "_HAS_GV": has_gv}
    bwd2 = specialise(_bwd2_template, _JIT, flags, {})
    bwd1 = specialise(_bwd1_template, _JIT, flags, {})
    return specialise(_lif_backward_template, _JIT, flags, {"_bwd2": bwd2, "_bwd1": bwd1})


_BACKWARD: dict = {}


def lif_backward(x, ck, gs, gv, glast, decay, thr, vreset, zero_reset, detach, code, consts, ec, fast, pgrad,
                 has_gv, lo0, hi0, block, seg, gx, gd, gth, gvr, gv0):
    """Reverse-time pass for neurons ``lo0 .. hi0-1``, recomputing the membranes per segment.

    ``gs``/``gv`` are ``[T, N]`` or one row ``[1, N]`` shared by all steps (``gv`` is not read
    unless ``has_gv``).  ``consts``: a ``SurrogateConsts``, ``ec``: the exp constants, scalars of ``x``'s dtype.  Steps are taken two at a time per neuron (state and sums in registers across
    both); each neuron's sums accumulate in reverse time order, as in a step-by-step loop, and
    ``gd, gth, gvr`` are written only when ``pgrad``.  Dispatches to the kernel compiled for the
    flags.
    """
    key = (int(code), bool(fast), bool(pgrad), bool(has_gv))
    kernel = _BACKWARD.get(key)
    if kernel is None:
        kernel = _BACKWARD.setdefault(key, _make_backward(*key))
    kernel(x, ck, gs, gv, glast, decay, thr, vreset, zero_reset, detach, consts, ec, lo0, hi0, block, seg,
           gx, gd, gth, gvr, gv0)


# ------------------------------------------------------------------------------------------
# host launchers (same names and keyword arguments as ``triton_kernels``)
# ------------------------------------------------------------------------------------------

# Neurons per block of the backward: its recomputation buffer, (SEGMENT + 1) x block elements,
# stays in L2 (135 KiB in float32).
_BACKWARD_BLOCK = 1024

def forward(*, x, decay, threshold, v_reset, v0, config, store_v: bool, need_grad: bool):
    """Run the LIF over ``x`` ``[T, N]`` (contiguous, float32/float64) with per-neuron ``[N]``
    parameters and initial state ``v0``; ``config`` a :class:`~spikescan.ops.lif.fused.LIFKernelConfig`.

    Returns ``(s, v, v_last, checkpoints)``: ``v`` ``[T, N]`` when ``store_v`` else ``[0, N]``;
    ``checkpoints`` ``[ceil(T / SEGMENT), N]`` when ``need_grad`` else ``[0, N]``.
    """
    import torch

    from .._kernels._common import SEGMENT
    from .._kernels._host import empty, numpy_views, run_cpu

    T, N = x.shape
    s = empty((T, N), x)
    v = empty((T, N), x) if store_v else x.new_empty(1, N)
    ck = x.new_empty(-(-T // SEGMENT), N) if need_grad else x.new_empty(1, N)
    vlast = x.new_empty(N)
    args = numpy_views(x, decay, threshold, v_reset, v0)
    outs = numpy_views(s, v, ck, vlast)
    zero_reset = bool(config.zero_reset)
    run_cpu(N, T, lambda lo, hi, bs: lif_forward(*args, zero_reset, lo, hi, bs, SEGMENT, bool(store_v),
                                                  bool(need_grad), *outs))
    empty_rows = torch.empty(0, N, dtype=x.dtype)
    return s, (v if store_v else empty_rows), vlast, (ck if need_grad else empty_rows.clone())


def backward(*, x, v, checkpoints, grad_s, grad_v, grad_last, decay, threshold, v_reset, v0, config,
             param_grads: bool):
    """Gradients ``(gx [T, N], g_decay, g_threshold, g_v_reset, g_v0 [N])`` of the forward above.

    ``grad_s``/``grad_v``: ``[T, N]`` or one ``[1, N]`` row shared by every step; ``grad_v``
    ``None`` when the membrane output has no gradient.  ``v``/``v0`` are not read (the segments
    are recomputed from ``x`` and the checkpoints, whose first row is ``v0``).
    """
    from .._kernels._common import SEGMENT
    from .._kernels._host import empty, exp_args, numpy_dtype, numpy_views, run_cpu

    T, N = x.shape
    kdtype = x.dtype
    has_gv = grad_v is not None
    gv = grad_v if has_gv else x.new_zeros(1, N)
    gx = empty((T, N), x)
    gd, gth, gvr, gv0 = (x.new_empty(N) for _ in range(4))
    ec, fast = exp_args(kdtype)
    consts = surrogate_consts(numpy_dtype(kdtype), config.surrogate_param)
    args = numpy_views(x, checkpoints, grad_s, gv, grad_last, decay, threshold, v_reset)
    flags = (bool(config.zero_reset), bool(config.detach), int(config.surrogate_code), consts, ec, fast,
             bool(param_grads), has_gv)
    outs = numpy_views(gx, gd, gth, gvr, gv0)
    run_cpu(N, T, lambda lo, hi, bs: lif_backward(*args, *flags, lo, hi, bs, SEGMENT, *outs), _BACKWARD_BLOCK)
    return gx, gd, gth, gvr, gv0
