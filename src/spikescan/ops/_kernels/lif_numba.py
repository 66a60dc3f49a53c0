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

from ._numba_math import exp_row

# Serial kernels over a range of neurons [lo0, hi0); the caller runs disjoint ranges on a thread
# pool (nogil).  Inside, neurons are processed in blocks of ``block``: the state of a block lives
# in local arrays (which LLVM knows alias nothing, so the inner loops vectorize), the t loop runs
# outside the contiguous inner loop over the block's neurons.
_JIT = dict(fastmath=False, cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def surrogate_row(code, x, th, out, consts, ec, fast):
    """``out[k] = sg(x[k] - th[k])`` for the surrogate ``code``; ``consts = [1, p, p/2, pi/2*p, 1/p]``.

    The branch on ``code`` sits outside the loops so that each loop vectorizes (``ec``, ``fast``:
    see ``_numba_math.exp_row``).
    """
    one = consts[0]
    p = consts[1]
    m = out.shape[0]
    if code == 0:  # fast sigmoid: 1 / (p|x| + 1)^2
        for k in range(m):
            r = one / (p * abs(x[k] - th[k]) + one)
            out[k] = r * r
    elif code == 1:  # atan: (p/2) / (1 + (pi/2 p x)^2)
        half_p = consts[2]
        pi2p = consts[3]
        for k in range(m):
            y = (x[k] - th[k]) * pi2p
            out[k] = half_p / (one + y * y)
    elif code == 2:  # sigmoid: p sig(px) (1 - sig(px))
        for k in range(m):
            out[k] = p * (x[k] - th[k])
        exp_row(out, -one, out, ec, fast)  # in place: exp(-p x)
        for k in range(m):
            sg = one / (one + out[k])
            out[k] = p * sg * (one - sg)
    else:  # triangle: max(0, 1 - |x|/p) / p
        inv_p = consts[4]
        for k in range(m):
            y = one - abs(x[k] - th[k]) * inv_p
            out[k] = max(y, one - one) * inv_p


@njit(**_JIT)
def lif_forward(x, decay, thr, vreset, v0, zero_reset, lo0, hi0, block, s, v, vlast):
    """Fill ``s`` ([T, N]), ``v`` and ``vlast`` ([N]) for neurons ``lo0 .. hi0-1``.

    ``v`` is ``[T, N]``, or a single row ``[1, N]`` when the membrane is not needed (every step
    then overwrites it in cache).
    """
    T = x.shape[0]
    v_step = 1 if v.shape[0] == T else 0
    for lo in range(lo0, hi0, block):
        hi = min(lo + block, hi0)
        m = hi - lo
        d = decay[lo:hi]
        th = thr[lo:hi]
        vr = vreset[lo:hi]
        vp = v0[lo:hi].copy()  # post-reset state of the block
        for t in range(T):
            _forward_row(x[t, lo:hi], d, th, vr, zero_reset, vp, s[t, lo:hi], v[t * v_step, lo:hi])
        out = vlast[lo:hi]
        for k in range(m):
            out[k] = vp[k]


@njit(inline="always")
def _forward_row(xt, d, th, vr, zero_reset, vp, st, vt):
    """One step of a block: ``vt`` = pre-reset membrane, ``st`` = spikes, ``vp`` updated."""
    m = vp.shape[0]
    if zero_reset:
        for k in range(m):
            vv = d[k] * vp[k] + xt[k]
            f = vv >= th[k]
            vt[k] = vv
            st[k] = 1.0 if f else 0.0
            vp[k] = vr[k] if f else vv
    else:
        for k in range(m):
            vv = d[k] * vp[k] + xt[k]
            f = vv >= th[k]
            vt[k] = vv
            st[k] = 1.0 if f else 0.0
            vp[k] = vv - th[k] if f else vv


@njit(inline="always")
def _backward_row(vt, prev, prev_is_post, gst, gvt, gxt, d, th, vr, zero_reset, keep, code, consts, ec, fast,
                  a, acc_d, acc_th, acc_vr, sg):
    """One reverse step of a block (module docstring); ``prev`` is ``v[t-1]``, or ``v0`` (already
    post-reset) when ``prev_is_post``.  Updates ``a`` and the accumulators."""
    m = a.shape[0]
    one = consts[0]
    zero = one - one
    surrogate_row(code, vt, th, sg, consts, ec, fast)
    if zero_reset:
        for k in range(m):
            vv = vt[k]
            f = vv >= th[k]
            g_s = gst[k] + keep * a[k] * (vr[k] - vv)
            dv = gvt[k] + (zero if f else a[k]) + g_s * sg[k]
            gxt[k] = dv
            pv = prev[k]
            acc_d[k] += dv * (pv if (prev_is_post or pv < th[k]) else vr[k])
            acc_th[k] -= g_s * sg[k]
            acc_vr[k] += a[k] if f else zero
            a[k] = d[k] * dv
    else:
        for k in range(m):
            vv = vt[k]
            f = vv >= th[k]
            g_s = gst[k] - keep * a[k] * th[k]
            dv = gvt[k] + a[k] + g_s * sg[k]
            gxt[k] = dv
            pv = prev[k]
            acc_d[k] += dv * (pv if (prev_is_post or pv < th[k]) else pv - th[k])
            acc_th[k] -= g_s * sg[k] + (a[k] if f else zero)
            a[k] = d[k] * dv


@njit(**_JIT)
def lif_backward(v, gs, gv, glast, decay, thr, vreset, v0, zero_reset, detach, code, consts, ec, fast, lo0,
                 hi0, block, gx, gd, gth, gvr, gv0):
    """Reverse-time pass over the stored membrane ``v`` for neurons ``lo0 .. hi0-1``.

    ``gs``/``gv`` are ``[T, N]`` or one row ``[1, N]`` shared by all steps.
    """
    T = v.shape[0]
    gs_step = 1 if gs.shape[0] == T else 0
    gv_step = 1 if gv.shape[0] == T else 0
    one = consts[0]
    keep = one - one if detach else one  # weight of the reset path through the spike
    for lo in range(lo0, hi0, block):
        hi = min(lo + block, hi0)
        m = hi - lo
        a = glast[lo:hi].copy()  # dL/dvp[t], carried backwards
        acc_d = np.zeros(m, v.dtype)
        acc_th = np.zeros(m, v.dtype)
        acc_vr = np.zeros(m, v.dtype)
        sg = np.empty(m, v.dtype)
        for t in range(T - 1, -1, -1):
            first = t == 0  # the previous state is v0, already post-reset
            prev = v0[lo:hi] if first else v[t - 1, lo:hi]
            _backward_row(v[t, lo:hi], prev, first, gs[t * gs_step, lo:hi], gv[t * gv_step, lo:hi], gx[t, lo:hi],
                          decay[lo:hi], thr[lo:hi], vreset[lo:hi], zero_reset, keep, code, consts, ec, fast,
                          a, acc_d, acc_th, acc_vr, sg)
        gd[lo:hi] = acc_d
        gth[lo:hi] = acc_th
        gvr[lo:hi] = acc_vr
        gv0[lo:hi] = a
