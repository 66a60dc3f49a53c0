"""Time-fused exact LIF on the CPU (numba): forward and backward through time, one pass each.

Equations (those of :mod:`spikescan.ops.lif`), per neuron ``n`` and step ``t``::

    v[t]  = d * vp[t-1] + x[t]            vp[-1] = v0
    s[t]  = (v[t] >= th)
    vp[t] = v[t] - th * s[t]              subtract reset
    vp[t] = v[t] * (1 - s[t]) + vr * s[t] zero reset (hard reset to vr)

Forward writes ``s`` and the pre-reset membrane ``v`` (the only thing the backward needs: the
spike is ``v >= th`` and the post-reset state is a function of ``v``), and the final ``vp``.
It does the same floating-point operations in the same order as the sequential reference
(``d * vp`` rounded, then ``+ x``; no FMA contraction since ``fastmath=False``), so the spikes and
membranes agree bit for bit.

Backward (reverse time, ``a = dL/dvp[t]`` carried in a local, starting from the gradient of
the returned final state)::

    gs_tot = gs[t] + (not detach) * a * dvp/ds      dvp/ds = -th (subtract) | vr - v[t] (zero)
    dv     = gv[t] + a * dvp/dv + gs_tot * sg(v[t] - th)
                                                    dvp/dv = 1 (subtract) | 1 - s[t] (zero)
    gx[t]  = dv
    gd    += dv * vp[t-1]       (vp[t-1] recomputed from v[t-1], or v0 at t = 0)
    gth   += -gs_tot * sg - (subtract) a * s[t]
    gvr   += (zero) a * s[t]
    a      = d * dv            ->  after t = 0: grad of v0

``gs``/``gv`` are the incoming gradients of the spikes and the membrane output (each may be a
single row when it is the same at every step, e.g. zeros when the membrane was not used).  The
per-neuron sums ``gd, gth, gvr`` are reduced to the parameters' shapes by the caller.

Memory kept for the backward: the pre-reset membrane ``v``, one element per (t, neuron), 4 bytes
in float32 (8 in float64); spikes and post-reset states are recomputed from it.

(Recomputing ``v`` in the backward from the input and a checkpoint of the state every 32 steps,
as the SPSN kernel does, was tried: it saves the forward's membrane write and 4 bytes per
(t, neuron), but on the development CPU the backward got slower by more than the forward gained
-- B=32, N=256, T=1000, 2 threads: forward 3.1 vs 3.45 ms, backward 7.2 vs 4.6 ms.)
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._numba_math import exp1

# Serial kernels over a range of neurons [lo0, hi0); the caller runs disjoint ranges on a thread
# pool (nogil).  Inside, neurons are processed in blocks of ``block``: the state of a block lives
# in local arrays (which LLVM knows alias nothing, so the inner loops vectorize), the t loop runs
# outside the contiguous inner loop over the block's neurons.
_JIT = dict(fastmath=False, cache=True, nogil=True, error_model="numpy")


# ------------------------------------------------------------------------------------------
# forward
# ------------------------------------------------------------------------------------------
#
# Per (t, neuron) the old row-at-a-time loop loaded the state and the three parameters and
# stored the state back: 8 memory operations for one multiply-add, i.e. it was bound by
# load/store throughput, not by memory bandwidth (0.33 ns per element in L1 on the development
# CPU, against 0.25 ns per element for streaming x in and s out of DRAM).  The kernels below
# advance each neuron U = 4 steps per sweep over the block, keeping state and parameters in
# registers for those steps: 2 (3 with v) memory operations per element + 5 per 4 steps.  The
# U-step bodies are separate (non-inlined at the numba level) functions whose rows arrive as
# distinct arguments, which is what lets LLVM vectorize them with runtime alias checks (row
# slices of one array inside a single function defeat its dependence analysis).

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
def _fwd1(x0, s0, w0, d, th, vr, vp, zero_reset, store_v, one, zero):
    for k in range(vp.shape[0]):
        vv, f, p = _fstep(x0[k], vp[k], d[k], th[k], vr[k], zero_reset)
        s0[k] = one if f else zero
        if store_v:
            w0[k] = vv
        vp[k] = p


@njit(**_JIT)
def lif_forward(x, decay, thr, vreset, v0, zero_reset, lo0, hi0, block, s, v, vlast):
    """Fill ``s`` ([T, N]), ``v`` and ``vlast`` ([N]) for neurons ``lo0 .. hi0-1``.

    ``v`` is ``[T, N]``, or a single row ``[1, N]`` when the membrane is not needed (then it is
    not written at all).
    """
    T = x.shape[0]
    store_v = v.shape[0] == T
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
            _fwd1(x[t, lo:hi], s[t, lo:hi], v[t if store_v else 0, lo:hi], d, th, vr, vp, zero_reset, store_v, one,
                  zero)
            t += 1
        vlast[lo:hi] = vp


# ------------------------------------------------------------------------------------------
# backward
# ------------------------------------------------------------------------------------------


@njit(inline="always")
def _sg(code, z, consts, ec, fast):
    """Surrogate derivative at ``z = v - th`` (the formulas of :func:`spikescan.surrogate.surrogate_grad`)."""
    one = consts[0]
    p = consts[1]
    if code == 0:
        r = one / (p * abs(z) + one)
        return r * r
    elif code == 1:
        y = z * consts[3]
        return consts[2] / (one + y * y)
    elif code == 2:
        e = exp1(-(p * z), ec, fast)
        q = one / (one + e)
        return p * q * (one - q)
    y = one - abs(z) * consts[4]
    return max(y, one - one) * consts[4]


@njit(inline="always")
def _bstep(vv, pv, prev_post, gsk, gvk, a, dk, tk, rk, zero_reset, keep, code, consts, ec, fast):
    """One reverse step of one neuron (module docstring).  ``pv``: ``v[t-1]``, or the post-reset
    ``v0`` when ``prev_post``.  Returns ``(dv, new a, d_acc_d, d_acc_th, d_acc_vr)``."""
    zero = consts[0] - consts[0]
    f = vv >= tk
    sg = _sg(code, vv - tk, consts, ec, fast)
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


def _make_backward(code: int, fast: bool):
    """The backward kernel specialised to one surrogate ``code`` and exp flavour (``fast``).

    ``code`` and ``fast`` are compile-time constants of these closures, so the surrogate's
    branches vanish from the inner loops and LLVM vectorizes them (with the branch left in,
    the loop versions multiply and it gives up).  numba caches each closure under a hash of
    its captured values.
    """

    @njit(**_JIT)
    def bwd2(v0, v1, vm, gs0, gs1, gv0, gv1, gx0, gx1, d, th, vr, a_r, ad_r, at_r, av_r, prev_post, zero_reset,
             keep, consts, ec):
        # steps t+1, t in reverse; vm = v[t-1] (or v0 when prev_post); a_r: dL/dvp carried
        # backwards, ad_r/at_r/av_r: the sums for decay, threshold, v_reset.  (Four steps at a
        # time would need more runtime alias checks than LLVM accepts: 24 arrays.)
        for k in range(d.shape[0]):
            dk = d[k]
            tk = th[k]
            rk = vr[k]
            w0 = v0[k]
            dv, a, i_d, i_t, i_v = _bstep(v1[k], w0, False, gs1[k], gv1[k], a_r[k], dk, tk, rk, zero_reset, keep,
                                          code, consts, ec, fast)
            gx1[k] = dv
            ad = ad_r[k] + i_d
            at = at_r[k] - i_t
            av = av_r[k] + i_v
            dv, a, i_d, i_t, i_v = _bstep(w0, vm[k], prev_post, gs0[k], gv0[k], a, dk, tk, rk, zero_reset, keep,
                                          code, consts, ec, fast)
            gx0[k] = dv
            a_r[k] = a
            ad_r[k] = ad + i_d
            at_r[k] = at - i_t
            av_r[k] = av + i_v

    @njit(**_JIT)
    def bwd1(v0, vm, gs0, gv0, gx0, d, th, vr, a_r, ad_r, at_r, av_r, prev_post, zero_reset, keep, consts, ec):
        for k in range(d.shape[0]):
            dv, a, i_d, i_t, i_v = _bstep(v0[k], vm[k], prev_post, gs0[k], gv0[k], a_r[k], d[k], th[k], vr[k],
                                          zero_reset, keep, code, consts, ec, fast)
            gx0[k] = dv
            a_r[k] = a
            ad_r[k] += i_d
            at_r[k] -= i_t
            av_r[k] += i_v

    @njit(**_JIT)
    def lif_backward(v, gs, gv, glast, decay, thr, vreset, v0, zero_reset, detach, consts, ec, lo0, hi0, block,
                     gx, gd, gth, gvr, gv0):
        T = v.shape[0]
        gs_step = 1 if gs.shape[0] == T else 0
        gv_step = 1 if gv.shape[0] == T else 0
        one = consts[0]
        keep = one - one if detach else one  # weight of the reset path through the spike
        r = T % 2  # step 0 alone when T is odd, after the pairs
        for lo in range(lo0, hi0, block):
            hi = min(lo + block, hi0)
            d = decay[lo:hi]
            th = thr[lo:hi]
            vr = vreset[lo:hi]
            # separate allocations (rows of one array would defeat LLVM's alias analysis)
            a_r = glast[lo:hi].copy()  # dL/dvp[t], carried backwards
            ad_r = np.zeros(hi - lo, v.dtype)
            at_r = np.zeros(hi - lo, v.dtype)
            av_r = np.zeros(hi - lo, v.dtype)
            for t in range(T - 2, r - 1, -2):  # rows t, t+1
                first = t == 0  # the previous state is v0, already post-reset
                vm = v0[lo:hi] if first else v[t - 1, lo:hi]
                bwd2(v[t, lo:hi], v[t + 1, lo:hi], vm, gs[t * gs_step, lo:hi], gs[(t + 1) * gs_step, lo:hi],
                     gv[t * gv_step, lo:hi], gv[(t + 1) * gv_step, lo:hi], gx[t, lo:hi], gx[t + 1, lo:hi], d, th, vr,
                     a_r, ad_r, at_r, av_r, first, zero_reset, keep, consts, ec)
            for t in range(r - 1, -1, -1):
                first = t == 0
                vm = v0[lo:hi] if first else v[t - 1, lo:hi]
                bwd1(v[t, lo:hi], vm, gs[t * gs_step, lo:hi], gv[t * gv_step, lo:hi], gx[t, lo:hi], d, th, vr,
                     a_r, ad_r, at_r, av_r, first, zero_reset, keep, consts, ec)
            gd[lo:hi] = ad_r
            gth[lo:hi] = at_r
            gvr[lo:hi] = av_r
            gv0[lo:hi] = a_r

    return lif_backward


_BACKWARD: dict = {}


def lif_backward(v, gs, gv, glast, decay, thr, vreset, v0, zero_reset, detach, code, consts, ec, fast, lo0,
                 hi0, block, gx, gd, gth, gvr, gv0):
    """Reverse-time pass over the stored membrane ``v`` for neurons ``lo0 .. hi0-1``.

    ``gs``/``gv`` are ``[T, N]`` or one row ``[1, N]`` shared by all steps.  Steps are taken
    two at a time per neuron (state and sums in registers across both); each neuron's sums accumulate in reverse
    time order, as in a step-by-step loop.  Dispatches to the kernel compiled for ``code``.
    """
    key = (int(code), bool(fast))
    kernel = _BACKWARD.get(key)
    if kernel is None:
        kernel = _BACKWARD.setdefault(key, _make_backward(*key))
    kernel(v, gs, gv, glast, decay, thr, vreset, v0, zero_reset, detach, consts, ec, lo0, hi0, block,
           gx, gd, gth, gvr, gv0)
