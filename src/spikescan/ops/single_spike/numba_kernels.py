"""Time-fused FastSNN single-spike LIF on the CPU (numba): forward and backward, one pass each.

Equations (those of :func:`spikescan.ops.single_spike.single_spike_lif`), per neuron ``n`` and
step ``t = 0 .. T-1``::

    v[t] = d * v[t-1] + (c * x[t])        v[-1] = v0          no reset
    tf   = min{t : v[t] >= th}            (T when there is none)
    s[t] = (t == tf)                      the first spike only

The forward does the reference's floating-point operations in the same order (``c * x`` and
``d * v`` rounded, then their sum; ``fastmath=False``, no FMA), so membranes and spikes equal the
composed op's and the sequential reference's bit for bit.  It writes ``s``, ``tf`` (int32 per
neuron) and, when a gradient will be needed, a membrane checkpoint at the start of every segment
of ``seg`` steps (``ck[g] = v[g*seg - 1]``, ``ck[0] = v0``); ``v`` itself only when asked for.

Backward: the gradient autograd gives the composed op ``S = g(phi(H(v - th)))``, ``H`` with the
surrogate derivative ``sg``.  ``g'(phi)`` is 1 before the first spike and 0 from it on (the
identity with ``straight_through``), and phi's adjoint is two reversed cumulative sums, so one
reverse-time sweep per neuron computes, with ``lim = tf`` (``T`` with ``straight_through``)::

    gz     = gs[t] if t < lim else 0
    A      = A + gz                       A[t] = sum_{u >= t} gz[u]
    B      = B + A                        B[t] = sum_{u >= t} (u - t + 1) gz[u] = dL/dS~[t]
    q      = B * sg(v[t] - th)
    r      = (q + gv[t]) + d * r          dL/dv[t] (the leaky integration's adjoint)
    gx[t]  = c * r
    gd    += r * v[t-1]                   (v[-1] = v0)
    gc    += r * x[t]
    gth   += q                            the caller negates it: dL/dth = -sum q
    gv0    = d * r                        after t = 0

``A`` and ``B`` accumulate in float64 and are rounded to the kernel dtype at every step, which is
what torch's CPU ``cumsum`` does (its accumulator type is double for float32 too), so ``B``
equals the composed op's bit for bit; the per-neuron sums ``gd, gc, gth`` accumulate in reverse
time order, as the fused leaky-integration backward does.  ``gs``/``gv`` may be a single row
(``[1, N]``) when they are the same at every step (e.g. the gradient of ``s.sum()``).

Without a membrane gradient every step from ``max(lim)`` of a block of neurons on has ``r = 0``:
those segments are written as zeros without recomputing them.  The others are recomputed from
their checkpoint and ``x`` into a small buffer (``(seg + 1) x block`` elements, cache resident;
the forward's operations, so the same membranes), then walked in reverse, two steps per sweep
over the block (state and sums in registers across both), as in ``lif/numba_kernels.py``.

Memory kept for the backward: ``x`` (the caller's own tensor when it is a contiguous kernel
dtype), ``tf`` and the checkpoints (``4 / seg`` bytes per (t, neuron) in float32).  Traffic of a
training step per (t, neuron): forward reads ``x`` and writes ``s``; backward reads ``x`` (and a
full ``gs``/``gv``) and writes ``gx``.

The backward kernels are compiled per surrogate code, exp flavour, whether the parameter sums are
needed (``pgrad``) and whether the membrane output has a gradient (``has_gv``), each a named
variant from :func:`~._numba_lowlevel.specialise` (no closures: the disk cache works).  The
two-step reverse kernel asks LLVM for 512-bit vectors where the CPU has them: its float64 sums
would otherwise halve the number of neurons per vector.

The end of the file holds the max-membrane readout (infinite threshold, ``max_t v[t]``), built
from the same membrane kernels.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from .._kernels._numba_lowlevel import (add_row, add_scaled_row, assume_disjoint_arrays, copy_row,
                                        prefer_wide_vectors, row_has_nonzero, row_slice_view, row_view,
                                        specialise)
from .._kernels._numba_math import surrogate_grad

_JIT = dict(fastmath=False, cache=True, nogil=True, error_model="numpy")
_U = 4  # forward steps per sweep over a block


@intrinsic
def _like(typingctx, value, like):
    """``value`` converted (rounded) to the float type of ``like``."""
    if not (isinstance(value, types.Float) and isinstance(like, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        return context.cast(builder, args[0], sig.args[0], sig.args[1])

    return like(value, like), codegen


# ------------------------------------------------------------------------------------------
# forward
# ------------------------------------------------------------------------------------------
#
# As in lif/numba_kernels.py: the U-step bodies are separate functions whose rows arrive as distinct
# arguments (so LLVM vectorizes them with runtime alias checks), state and parameters stay in
# registers across the U steps.


@njit(inline="always")
def _step(xk, p, dk, ck):
    return dk * p + ck * xk


@njit(inline="always")
def _fire(p, tk, f, T, t):
    """``(spike now, new first-spike time)`` for membrane ``p`` at step ``t``."""
    hit = (p >= tk) & (f == T)
    return hit, (t if hit else f)


@njit(inline="always")
def _steps4(x0, x1, x2, x3, k, dk, ck, tk, p, f, t, T):
    """Four steps of neuron ``k`` from membrane ``p`` and first-spike time ``f``: the four
    membranes, whether each step spikes, and the new first-spike time."""
    p0 = _step(x0[k], p, dk, ck)
    h0, f = _fire(p0, tk, f, T, t)
    p1 = _step(x1[k], p0, dk, ck)
    h1, f = _fire(p1, tk, f, T, t + 1)
    p2 = _step(x2[k], p1, dk, ck)
    h2, f = _fire(p2, tk, f, T, t + 2)
    p3 = _step(x3[k], p2, dk, ck)
    h3, f = _fire(p3, tk, f, T, t + 3)
    return p0, p1, p2, p3, h0, h1, h2, h3, f


@njit(**_JIT)
def _fwd4(x0, x1, x2, x3, s0, s1, s2, s3, d, c, th, vp, first, t, T, one, zero):
    for k in range(vp.shape[0]):
        _, _, _, p, h0, h1, h2, h3, f = _steps4(x0, x1, x2, x3, k, d[k], c[k], th[k], vp[k], first[k], t, T)
        s0[k] = one if h0 else zero
        s1[k] = one if h1 else zero
        s2[k] = one if h2 else zero
        s3[k] = one if h3 else zero
        vp[k] = p
        first[k] = f


@njit(**_JIT)
def _fwd4v(x0, x1, x2, x3, s0, s1, s2, s3, w0, w1, w2, w3, d, c, th, vp, first, t, T, one, zero):
    for k in range(vp.shape[0]):
        p0, p1, p2, p3, h0, h1, h2, h3, f = _steps4(x0, x1, x2, x3, k, d[k], c[k], th[k], vp[k], first[k], t, T)
        s0[k] = one if h0 else zero
        s1[k] = one if h1 else zero
        s2[k] = one if h2 else zero
        s3[k] = one if h3 else zero
        w0[k] = p0
        w1[k] = p1
        w2[k] = p2
        w3[k] = p3
        vp[k] = p3
        first[k] = f


@njit(**_JIT)
def _first4(x0, x1, x2, x3, d, c, th, vp, first, t, T):
    """Four steps keeping only the first-spike times (the events forward writes the spikes from
    them afterwards)."""
    assume_disjoint_arrays()
    prefer_wide_vectors()
    for k in range(vp.shape[0]):
        _, _, _, p, _, _, _, _, f = _steps4(x0, x1, x2, x3, k, d[k], c[k], th[k], vp[k], first[k], t, T)
        vp[k] = p
        first[k] = f


@njit(**_JIT)
def _fwd1(x0, s0, w0, d, c, th, vp, first, t, T, store_v, one, zero):
    for k in range(vp.shape[0]):
        p = _step(x0[k], vp[k], d[k], c[k])
        hit, f = _fire(p, th[k], first[k], T, t)
        s0[k] = one if hit else zero
        if store_v:
            w0[k] = p
        vp[k] = p
        first[k] = f


@njit(**_JIT)
def _membrane4(x0, x1, x2, x3, w0, w1, w2, w3, d, c, vp):
    """Four steps writing only the membranes (the backward's recomputation)."""
    assume_disjoint_arrays()
    prefer_wide_vectors()
    for k in range(vp.shape[0]):
        dk = d[k]
        ck = c[k]
        p = _step(x0[k], vp[k], dk, ck)
        w0[k] = p
        p = _step(x1[k], p, dk, ck)
        w1[k] = p
        p = _step(x2[k], p, dk, ck)
        w2[k] = p
        p = _step(x3[k], p, dk, ck)
        w3[k] = p
        vp[k] = p


@njit(**_JIT)
def _membrane1(x0, w0, d, c, vp):
    for k in range(vp.shape[0]):
        p = _step(x0[k], vp[k], d[k], c[k])
        w0[k] = p
        vp[k] = p


@njit(**_JIT)
def single_spike_forward(x, decay, scale, thr, v0, lo0, hi0, block, seg, store_v, store_ck, s, v, ck, tf):
    """Fill ``s`` ([T, N]), ``tf`` ([N] int32) and, when asked, ``v`` ([T, N]) and the checkpoints
    ``ck`` ([ceil(T / seg), N]) for neurons ``lo0 .. hi0-1``; ``seg`` is a multiple of 4.

    ``v`` and ``ck`` are not touched when not asked for (pass any array of the dtype).
    """
    T = x.shape[0]
    one = np.ones(1, x.dtype)[0]
    zero = one - one
    for lo in range(lo0, hi0, block):
        hi = min(lo + block, hi0)
        d = decay[lo:hi]
        c = scale[lo:hi]
        th = thr[lo:hi]
        vp = v0[lo:hi].copy()
        first = np.full(hi - lo, T, np.int64)
        t = 0
        while t + _U <= T:
            if store_ck and t % seg == 0:
                ck[t // seg, lo:hi] = vp
            if store_v:
                _fwd4v(x[t, lo:hi], x[t + 1, lo:hi], x[t + 2, lo:hi], x[t + 3, lo:hi],
                       s[t, lo:hi], s[t + 1, lo:hi], s[t + 2, lo:hi], s[t + 3, lo:hi],
                       v[t, lo:hi], v[t + 1, lo:hi], v[t + 2, lo:hi], v[t + 3, lo:hi], d, c, th, vp, first, t, T,
                       one, zero)
            else:
                _fwd4(x[t, lo:hi], x[t + 1, lo:hi], x[t + 2, lo:hi], x[t + 3, lo:hi],
                      s[t, lo:hi], s[t + 1, lo:hi], s[t + 2, lo:hi], s[t + 3, lo:hi], d, c, th, vp, first, t, T,
                      one, zero)
            t += _U
        while t < T:
            if store_ck and t % seg == 0:
                ck[t // seg, lo:hi] = vp
            _fwd1(x[t, lo:hi], s[t, lo:hi], v[t if store_v else 0, lo:hi], d, c, th, vp, first, t, T, store_v,
                  one, zero)
            t += 1
        for k in range(hi - lo):
            tf[lo + k] = first[k]


# ------------------------------------------------------------------------------------------
# backward
# ------------------------------------------------------------------------------------------

# Bound per variant by specialise() (_make_backward): the surrogate code, the flags, and in the
# driver the two-step and one-step reverse kernels.
_CODE = _FAST = _PGRAD = _HAS_GV = _bwd2 = _bwd1 = None


@njit(inline="always")
def _bstep(vv, tk, gsk, gvk, live, A, B, r, dk, code, consts, ec, fast, has_gv):
    """One reverse step of one neuron (module docstring): ``(q, new A, new B, new r)``."""
    zero = consts.one - consts.one
    A = A + (gsk if live else zero)
    B = B + _like(A, zero)
    q = _like(B, zero) * surrogate_grad(code, vv - tk, consts, ec, fast)
    dv = q + gvk if has_gv else q
    return q, A, B, dv + dk * r


def _bwd2_template(v0, v1, vm, x0, x1, gs0, gs1, gv0, gv1, gx0, gx1, d, c, th, lim, t, a_r, b_r, r_r, ad_r, ac_r,
                   at_r, consts, ec):
    # steps t+1, t in reverse; v0/v1 = v[t]/v[t+1], vm = v[t-1]; a_r/b_r (float64): the running
    # sums A and B; r_r: dL/dv carried backwards; ad_r/ac_r/at_r: the decay, scale, threshold sums
    prefer_wide_vectors()
    zero = consts.one - consts.one
    for k in range(d.shape[0]):
        dk = d[k]
        tk = th[k]
        lk = lim[k]
        w0 = v0[k]
        q, A, B, r = _bstep(v1[k], tk, gs1[k], gv1[k] if _HAS_GV else zero, t + 1 < lk, a_r[k], b_r[k], r_r[k],
                            dk, _CODE, consts, ec, _FAST, _HAS_GV)
        gx1[k] = c[k] * r
        if _PGRAD:
            ad = ad_r[k] + r * w0
            ac = ac_r[k] + r * x1[k]
            at = at_r[k] + q
        q, A, B, r = _bstep(w0, tk, gs0[k], gv0[k] if _HAS_GV else zero, t < lk, A, B, r, dk, _CODE, consts, ec,
                            _FAST, _HAS_GV)
        gx0[k] = c[k] * r
        a_r[k] = A
        b_r[k] = B
        r_r[k] = r
        if _PGRAD:
            ad_r[k] = ad + r * vm[k]
            ac_r[k] = ac + r * x0[k]
            at_r[k] = at + q


def _bwd1_template(v0, vm, x0, gs0, gv0, gx0, d, c, th, lim, t, a_r, b_r, r_r, ad_r, ac_r, at_r, consts, ec):
    zero = consts.one - consts.one
    for k in range(d.shape[0]):
        q, A, B, r = _bstep(v0[k], th[k], gs0[k], gv0[k] if _HAS_GV else zero, t < lim[k], a_r[k], b_r[k],
                            r_r[k], d[k], _CODE, consts, ec, _FAST, _HAS_GV)
        gx0[k] = c[k] * r
        a_r[k] = A
        b_r[k] = B
        r_r[k] = r
        if _PGRAD:
            ad_r[k] += r * vm[k]
            ac_r[k] += r * x0[k]
            at_r[k] += q


_KOUT = None  # the size of the linear layer fed by the spikes (constant of the _GY reverse kernels)


@njit(inline="always")
def _spike_grad(gsk, gy, row, w2, o, kout):
    """``gs + sum_k gy[row + k] * w2[k, o]`` (``k`` rising; ``kout`` a compile-time constant, so
    the loop unrolls and the sum stays in a register of the vector loop over ``o``)."""
    for kk in range(kout):
        gsk += gy[row + kk] * w2[kk, o]
    return gsk


_IMP = None  # the _GY kernels read the readout's impulses (a register recursion) instead of gy W2


def _bwd2_gy_template(v0, v1, vm, x0, x1, gs0, gs1, gy0, gy1, w2, gx0, gx1, st0, st1, d, c, th, lim, t, a_r, b_r,
                      r_r, ad_r, ac_r, at_r, ab_r, consts, ec, pool, idx0, idx1, gw_r, dr):
    # as _bwd2 (steps t+1, t in reverse, no membrane gradient), for a block of whole samples of O
    # neurons, the spike gradient of neuron (q, o) being gs[q O + o] + gy[q K + k] w2[k, o] over
    # the _KOUT outputs k; A and B in the kernel dtype (no double-precision lanes); with _NEED_B
    # also each neuron's sum of gI over time (ab_r, in reverse time as the template's add_row);
    # gI is stored (gx1, gx0) only where st1 / st0: steps at which the block's samples have input
    # events, the only rows of gI read afterwards.  With _IMP, gy is a max-membrane readout's
    # input gradient, gy[t] = c_r (imp[t] + dr r[t + 1]) with one readout decay dr, so
    # G[t] = gy[t] W2 obeys G[t] = dr G[t + 1] + inj[t], inj[t] = (c_r imp[t]) W2 (zero but at the
    # readout's maxima): one multiply-add per neuron and step in place of _KOUT (G in gw_r); the
    # row inj[t] of sample q is pool[idx0[q]] (step t) / pool[idx1[q]] (step t + 1)
    prefer_wide_vectors()
    assume_disjoint_arrays()
    O = w2.shape[1]
    for q in range(d.shape[0] // O):
        row = q * _KOUT
        inj0 = row_view(pool, idx0[q])
        inj1 = row_view(pool, idx1[q])
        for o in range(O):
            k = q * O + o
            dk = d[k]
            tk = th[k]
            lk = lim[k]
            w0 = v0[k]
            if _IMP:
                G1 = dr * gw_r[k] + inj1[o]
                G0 = dr * G1 + inj0[o]
                gw_r[k] = G0
                g1 = gs1[k] + G1
                g0 = gs0[k] + G0
            else:
                g1 = _spike_grad(gs1[k], gy1, row, w2, o, _KOUT)
                g0 = _spike_grad(gs0[k], gy0, row, w2, o, _KOUT)
            qq, A, B, r = _bstep(v1[k], tk, g1, g1, t + 1 < lk, a_r[k], b_r[k], r_r[k], dk, _CODE, consts, ec,
                                 _FAST, False)
            gi1 = c[k] * r
            if st1:
                gx1[k] = gi1
            if _PGRAD:
                ad = ad_r[k] + r * w0
                ac = ac_r[k] + r * x1[k]
                at = at_r[k] + qq
            qq, A, B, r = _bstep(w0, tk, g0, g0, t < lk, A, B, r, dk, _CODE, consts, ec, _FAST, False)
            gi0 = c[k] * r
            if st0:
                gx0[k] = gi0
            a_r[k] = A
            b_r[k] = B
            r_r[k] = r
            if _NEED_B:
                ab_r[k] = (ab_r[k] + gi1) + gi0
            if _PGRAD:
                ad_r[k] = ad + r * vm[k]
                ac_r[k] = ac + r * x0[k]
                at_r[k] = at + qq


def _bwd1_gy_template(v0, vm, x0, gs0, gy0, w2, gx0, st0, d, c, th, lim, t, a_r, b_r, r_r, ad_r, ac_r, at_r, ab_r,
                      consts, ec, pool, idx0, gw_r, dr):
    assume_disjoint_arrays()
    O = w2.shape[1]
    for q in range(d.shape[0] // O):
        row = q * _KOUT
        inj0 = row_view(pool, idx0[q])
        for o in range(O):
            k = q * O + o
            if _IMP:
                G0 = dr * gw_r[k] + inj0[o]
                gw_r[k] = G0
                g0 = gs0[k] + G0
            else:
                g0 = _spike_grad(gs0[k], gy0, row, w2, o, _KOUT)
            qq, A, B, r = _bstep(v0[k], th[k], g0, g0, t < lim[k], a_r[k], b_r[k], r_r[k], d[k], _CODE, consts, ec,
                                 _FAST, False)
            gi0 = c[k] * r
            if st0:
                gx0[k] = gi0
            a_r[k] = A
            b_r[k] = B
            r_r[k] = r
            if _NEED_B:
                ab_r[k] += gi0
            if _PGRAD:
                ad_r[k] += r * vm[k]
                ac_r[k] += r * x0[k]
                at_r[k] += qq


_REVERSE_GY: dict = {}


def _reverse_gy_kernels(code: int, fast: bool, pgrad: bool, need_b: bool, kout: int, imp: bool):
    """The two-step and one-step reverse kernels of the ``_GY`` events backward for ``kout``
    outputs (``imp``: from a max-membrane readout's impulses), made once per process;
    multiply-adds may be fused (``contract``): this variant agrees with the composition to
    rounding, not bit for bit."""
    key = (int(code), bool(fast), bool(pgrad), bool(need_b), int(kout), bool(imp))
    pair = _REVERSE_GY.get(key)
    if pair is None:
        flags = {"_CODE": key[0], "_FAST": key[1], "_PGRAD": key[2], "_NEED_B": key[3], "_KOUT": key[4],
                 "_IMP": key[5]}
        jit = dict(_JIT, fastmath={"contract"})
        pair = _REVERSE_GY.setdefault(key, (specialise(_bwd2_gy_template, jit, flags, {}),
                                            specialise(_bwd1_gy_template, jit, flags, {})))
    return pair


def _backward_template(x, ck, gs, gv, decay, scale, thr, lim, consts, ec, lo0, hi0, block, seg, gx, gd, gc, gth,
                       gv0):
    """The reverse-time driver; :func:`_make_backward` binds ``_bwd2``/``_bwd1`` per variant."""
    T = x.shape[0]
    gs_step = 1 if gs.shape[0] == T else 0
    gv_step = 1 if gv.shape[0] == T else 0
    nseg = (T + seg - 1) // seg
    for lo in range(lo0, hi0, block):
        hi = min(lo + block, hi0)
        m = hi - lo
        d = decay[lo:hi]
        c = scale[lo:hi]
        th = thr[lo:hi]
        lm = lim[lo:hi]
        tmax = T if _HAS_GV else lm.max()  # from tmax on, r = 0 for the whole block
        # separate allocations (rows of one array would defeat LLVM's alias analysis)
        buf = np.empty((seg + 1, m), x.dtype)  # buf[0]: v[t0 - 1] (the checkpoint), buf[j+1]: v[t0+j]
        vp = np.empty(m, x.dtype)
        a_r = np.zeros(m, np.float64)
        b_r = np.zeros(m, np.float64)
        r_r = np.zeros(m, x.dtype)
        ad_r = np.zeros(m, x.dtype)
        ac_r = np.zeros(m, x.dtype)
        at_r = np.zeros(m, x.dtype)
        for g in range(nseg - 1, -1, -1):
            t0 = g * seg
            n = min(T, t0 + seg) - t0
            if t0 >= tmax:
                gx[t0:t0 + n, lo:hi] = 0
                continue
            buf[0] = ck[g, lo:hi]
            vp[:] = buf[0]
            j = 0
            while j + _U <= n:
                _membrane4(x[t0 + j, lo:hi], x[t0 + j + 1, lo:hi], x[t0 + j + 2, lo:hi], x[t0 + j + 3, lo:hi],
                           buf[j + 1], buf[j + 2], buf[j + 3], buf[j + 4], d, c, vp)
                j += _U
            while j < n:
                _membrane1(x[t0 + j, lo:hi], buf[j + 1], d, c, vp)
                j += 1
            odd = n % 2  # the segment's first step alone when n is odd, after the pairs
            for j in range(n - 2, odd - 1, -2):  # steps t0+j, t0+j+1
                t = t0 + j
                _bwd2(buf[j + 1], buf[j + 2], buf[j], x[t, lo:hi], x[t + 1, lo:hi], gs[t * gs_step, lo:hi],
                      gs[(t + 1) * gs_step, lo:hi], gv[t * gv_step, lo:hi], gv[(t + 1) * gv_step, lo:hi],
                      gx[t, lo:hi], gx[t + 1, lo:hi], d, c, th, lm, t, a_r, b_r, r_r, ad_r, ac_r, at_r, consts, ec)
            if odd:
                _bwd1(buf[1], buf[0], x[t0, lo:hi], gs[t0 * gs_step, lo:hi], gv[t0 * gv_step, lo:hi], gx[t0, lo:hi],
                      d, c, th, lm, t0, a_r, b_r, r_r, ad_r, ac_r, at_r, consts, ec)
        if _PGRAD:
            gd[lo:hi] = ad_r
            gc[lo:hi] = ac_r
            gth[lo:hi] = at_r
        for k in range(m):
            gv0[lo + k] = d[k] * r_r[k]


def _make_backward(code: int, fast: bool, pgrad: bool, has_gv: bool):
    """The backward kernel specialised to one surrogate ``code``, exp flavour (``fast``), and
    whether parameter sums (``pgrad``) and a membrane gradient (``has_gv``) are needed: compile-time
    constants, so unused branches, sums and loads vanish from the inner loops."""
    flags = {"_CODE": code, "_FAST": fast, "_PGRAD": pgrad, "_HAS_GV": has_gv}
    bwd2, bwd1 = _reverse_kernels(code, fast, pgrad, has_gv)
    return specialise(_backward_template, _JIT, flags, {"_bwd2": bwd2, "_bwd1": bwd1})


_REVERSE: dict = {}


def _reverse_kernels(code: int, fast: bool, pgrad: bool, has_gv: bool):
    """The two-step and one-step reverse kernels of one variant, made once per process (the
    events kernel below binds the same ones)."""
    key = (int(code), bool(fast), bool(pgrad), bool(has_gv))
    pair = _REVERSE.get(key)
    if pair is None:
        flags = {"_CODE": key[0], "_FAST": key[1], "_PGRAD": key[2], "_HAS_GV": key[3]}
        pair = _REVERSE.setdefault(key, (specialise(_bwd2_template, _JIT, flags, {}),
                                         specialise(_bwd1_template, _JIT, flags, {})))
    return pair


_BACKWARD: dict = {}


def single_spike_backward(x, ck, gs, gv, decay, scale, thr, lim, code, consts, ec, fast, pgrad, has_gv, lo0, hi0,
                          block, seg, gx, gd, gc, gth, gv0):
    """Reverse-time pass for neurons ``lo0 .. hi0-1``, recomputing the membranes per segment.

    ``gs``/``gv`` are ``[T, N]`` or one row ``[1, N]`` (``gv`` is not read unless ``has_gv``);
    ``lim`` ([N] int32): steps ``t < lim`` pass the spike gradient (``tf``, or ``T`` for the
    straight-through ``g``).  ``consts``/``ec``: tuples of scalars of ``x``'s dtype (surrogate and
    exp constants, as for the LIF kernels).  ``gd, gc, gth`` are written only when ``pgrad``;
    ``gth`` is the sum of ``+q`` (negate it for the threshold's gradient).
    """
    key = (int(code), bool(fast), bool(pgrad), bool(has_gv))
    kernel = _BACKWARD.get(key)
    if kernel is None:
        kernel = _BACKWARD.setdefault(key, _make_backward(*key))
    kernel(x, ck, gs, gv, decay, scale, thr, lim, consts, ec, lo0, hi0, block, seg, gx, gd, gc, gth, gv0)


# ------------------------------------------------------------------------------------------
# max-membrane readout
# ------------------------------------------------------------------------------------------
#
# FastSNN's readout: the same membrane with an infinite threshold, reduced to ``m = max_t v[t]``.
# Forward: ``m``, the number ``n`` of steps at which ``v[t] == m`` (ties) and the checkpoints.
# Backward, the gradient of ``torch.amax`` (split evenly among the ties) through the leaky
# integration: ``r = (gm / n if v[t] == m else 0) + d * r``, ``gx[t] = c * r``, sums as above.


@njit(**_JIT)
def _rfwd1(x0, d, c, vp, mx, cnt, one):
    for k in range(vp.shape[0]):
        p = _step(x0[k], vp[k], d[k], c[k])
        m = mx[k]
        cnt[k] = one if p > m else (cnt[k] + one if p == m else cnt[k])
        mx[k] = max(m, p)
        vp[k] = p


@njit(**_JIT)
def max_membrane_forward(x, decay, scale, v0, lo0, hi0, block, seg, store_ck, ck, mx, cnt):
    """``mx`` ([N]): max over time of the membrane, ``cnt`` ([N], x's dtype): how many steps reach
    it; the checkpoints ``ck`` as for :func:`single_spike_forward` when ``store_ck``."""
    T = x.shape[0]
    one = np.ones(1, x.dtype)[0]
    for lo in range(lo0, hi0, block):
        hi = min(lo + block, hi0)
        d = decay[lo:hi]
        c = scale[lo:hi]
        vp = v0[lo:hi].copy()
        m = np.full(hi - lo, -np.inf, x.dtype)
        n = np.zeros(hi - lo, x.dtype)
        for t in range(T):
            if store_ck and t % seg == 0:
                ck[t // seg, lo:hi] = vp
            _rfwd1(x[t, lo:hi], d, c, vp, m, n, one)
        mx[lo:hi] = m
        cnt[lo:hi] = n


@njit(**_JIT)
def _rbwd1(v0, vm, x0, gx0, ip0, d, c, mx, w, r_r, ad_r, ac_r, pgrad, store_imp, zero):
    for k in range(d.shape[0]):
        delta = w[k] if v0[k] == mx[k] else zero
        if store_imp:
            ip0[k] = delta
        r = delta + d[k] * r_r[k]
        gx0[k] = c[k] * r
        r_r[k] = r
        if pgrad:
            ad_r[k] += r * vm[k]
            ac_r[k] += r * x0[k]


@njit(**_JIT)
def max_membrane_backward(x, ck, gm, decay, scale, mx, cnt, lo0, hi0, block, seg, pgrad, store_imp, gx, gd, gc, gv0,
                          imp):
    """Reverse-time pass of the readout for neurons ``lo0 .. hi0-1`` (``gm`` [N]: the incoming
    gradient of the maxima); ``gd, gc`` written only when ``pgrad``; when ``store_imp`` also
    (``imp`` ``[T, N]``, else one unread row) the impulses ``imp[t, n] = gm[n] / count[n]`` where ``V[t, n]`` is the
    maximum, 0 elsewhere: ``gx[t] = scale * sum_{t' >= t} decay^(t' - t) imp[t']``."""
    T = x.shape[0]
    istep = 1 if store_imp else 0
    nseg = (T + seg - 1) // seg
    for lo in range(lo0, hi0, block):
        hi = min(lo + block, hi0)
        m = hi - lo
        d = decay[lo:hi]
        c = scale[lo:hi]
        mk = mx[lo:hi]
        w = gm[lo:hi] / cnt[lo:hi]  # torch.amax's backward: the gradient shared by the ties
        zero = w[0] - w[0]
        buf = np.empty((seg + 1, m), x.dtype)
        vp = np.empty(m, x.dtype)
        r_r = np.zeros(m, x.dtype)
        ad_r = np.zeros(m, x.dtype)
        ac_r = np.zeros(m, x.dtype)
        for g in range(nseg - 1, -1, -1):
            t0 = g * seg
            n = min(T, t0 + seg) - t0
            buf[0] = ck[g, lo:hi]
            vp[:] = buf[0]
            j = 0
            while j + _U <= n:
                _membrane4(x[t0 + j, lo:hi], x[t0 + j + 1, lo:hi], x[t0 + j + 2, lo:hi], x[t0 + j + 3, lo:hi],
                           buf[j + 1], buf[j + 2], buf[j + 3], buf[j + 4], d, c, vp)
                j += _U
            while j < n:
                _membrane1(x[t0 + j, lo:hi], buf[j + 1], d, c, vp)
                j += 1
            for j in range(n - 1, -1, -1):
                _rbwd1(buf[j + 1], buf[j], x[t0 + j, lo:hi], gx[t0 + j, lo:hi], imp[(t0 + j) * istep, lo:hi], d, c,
                       mk, w, r_r, ad_r, ac_r, pgrad, store_imp, zero)
        if pgrad:
            gd[lo:hi] = ad_r
            gc[lo:hi] = ac_r
        for k in range(m):
            gv0[lo + k] = d[k] * r_r[k]


# ------------------------------------------------------------------------------------------
# single-spike LIF fed by events: the input layer computed inside the kernel
# ------------------------------------------------------------------------------------------
#
# ``single_spike_lif_events``: the layer ``I = W x + b`` of a batch of events (CSR over the rows
# ``r = t * B + b`` of ``[T, B, C]``, as in ``event_numba``) feeding the single-spike neurons, with
# ``I`` and its gradient never stored.  The neurons of sample ``b`` are ``b * O .. (b+1) * O - 1``
# of the flat ``[B * O]`` neuron axis; a block is a run of whole samples, so row ``t`` of a block
# is one contiguous segment of the neuron axis.  The forward writes each step's spikes to a
# four-row scratch array and the ``[T, B * O]`` spikes from ``tf`` afterwards (one write per spike,
# see ``_spikes_from_first``).  The current of step ``t`` of a block is built in a
# block-sized buffer that holds the bias of every sample; the events of rows ``(t, b)`` add their
# rows of ``wt`` (``[C, O]``, W transposed, cache resident) in CSR order -- the operations of
# ``event_numba.event_linear_forward``, so the current is that kernel's bit for bit -- and after
# the step those samples' segments are set back to the bias (work proportional to the events,
# not to ``T B O``).  The neuron steps are the kernels above (``_fwd4``/``_fwd1``,
# ``_membrane4``/``_membrane1``, the specialised ``_bwd2``/``_bwd1``), so spikes, membranes,
# ``gI`` and every per-neuron sum are the unfused kernels' bit for bit whatever the blocking.
#
# Backward, per block: each segment's currents are rebuilt from the events, its membranes
# recomputed from the checkpoint, the reverse sweep writes ``gI`` of the segment into a
# block-sized buffer; then, in reverse time, ``gI`` is added to the per-neuron bias sums and the
# rows that have events are copied to ``gev`` (one row of ``O`` per nonempty row ``(t, b)``,
# ``evrow[r]`` its index).  Segments from the block's ``max(lim)`` on have ``gI = 0`` and are
# skipped (their ``gev`` rows zeroed).  The weight gradient is then
# ``event_numba.event_linear_weight_grad`` over the CSR of the nonempty rows (``gev``'s rows):
# ``gwt[c] += values[e] * gev[row(e)]`` in event_linear's own order, split over columns of ``O``.
#
# With a linear layer ``y = W2 s + b2`` fed by the spikes (``_GY``: ``single_spike_lif_events(...,
# out_weight=W2)``), the spike gradient is ``gs + gy W2``: the ``_GY`` reverse kernels form it in a
# register per neuron, ``_KOUT`` (the layer's size, a compile-time constant, so the loop over it
# unrolls) multiply-adds from ``gy[t, b]`` and the column ``W2[:, o]`` (cache resident), instead of
# reading the ``[T, B * O]`` product from memory; they keep ``A`` and ``B`` in the kernel dtype and
# sum the bias gradient themselves.  This variant agrees with the composition to rounding.

_NEED_W = _NEED_B = _GY = None  # compile-time flags of the events backward (set per variant by ``specialise``)


@njit(inline="always")
def _add_row_events(crow, channels, values, has_values, wt, r, dst):
    """``dst += sum values[e] * wt[channels[e]]`` over the events of row ``r``, in CSR order
    (``dst`` holds the bias: the result is ``event_linear_forward``'s row)."""
    for e in range(crow[r], crow[r + 1]):
        if has_values:
            add_scaled_row(dst, values[e], row_view(wt, channels[e]))
        else:
            add_row(dst, row_view(wt, channels[e]))


@njit(inline="always")
def _add_step_events(crow, channels, values, has_values, wt, t, B, b0, b1, cur):
    """Add the events of rows ``(t, b0 .. b1-1)`` into the block's current buffer ``cur``."""
    O = wt.shape[1]
    base = t * B
    if crow[base + b0] == crow[base + b1]:
        return
    for b in range(b0, b1):
        r = base + b
        if crow[r + 1] > crow[r]:
            _add_row_events(crow, channels, values, has_values, wt, r,
                            row_slice_view(cur, None, (b - b0) * O, (b - b0 + 1) * O))


@njit(inline="always")
def _block_has_events(crow, t, B, b0, b1) -> bool:
    """Whether any of the rows ``(t, b0 .. b1-1)`` has an event."""
    return crow[t * B + b1] > crow[t * B + b0]


@njit(inline="always")
def _restore_bias(crow, t, B, b0, b1, bias, cur):
    """Set the segments of ``cur`` that the events of rows ``(t, b0 .. b1-1)`` changed back to the bias."""
    O = bias.shape[0]
    base = t * B
    if crow[base + b0] == crow[base + b1]:
        return
    for b in range(b0, b1):
        r = base + b
        if crow[r + 1] > crow[r]:
            copy_row(row_slice_view(cur, None, (b - b0) * O, (b - b0 + 1) * O), bias)


@njit(inline="always")
def _bias_rows(bias, m):
    """A length-``m`` buffer holding the bias of every sample (``m`` a multiple of its length)."""
    O = bias.shape[0]
    out = np.empty(m, bias.dtype)
    for q in range(m // O):
        out[q * O:(q + 1) * O] = bias
    return out


@njit(inline="always")
def _last_nonzero_step(gs, t_end, lo, hi):
    """1 + the last step before ``t_end`` where ``gs[t, lo:hi]`` has a nonzero (or NaN) entry; 0 if none."""
    for t in range(t_end - 1, -1, -1):
        if row_has_nonzero(gs[t, lo:hi]):
            return t + 1
    return 0


@njit(**_JIT)
def single_spike_events_forward(crow, channels, values, has_values, wt, bias, decay, scale, thr, v0, T, B, lo0, hi0,
                                bblock, seg, store_ck, s, ck, tf):
    """Samples ``lo0 .. hi0-1``, ``bblock`` samples per block: fill ``tf`` ([B * O] int32) and,
    when ``store_ck``, the checkpoints ``ck`` ([ceil(T / seg), B * O]); ``decay, scale, thr, v0``:
    [B * O].  ``seg`` is a multiple of 4.  The spikes of each step go to rows of ``s``, a
    ``[4, B * O]`` scratch array (the caller writes the ``[T, B * O]`` spikes from ``tf``)."""
    O = wt.shape[1]
    one = np.ones(1, wt.dtype)[0]
    zero = one - one
    for b0 in range(lo0, hi0, bblock):
        b1 = min(b0 + bblock, hi0)
        lo = b0 * O
        hi = b1 * O
        m = hi - lo
        d = decay[lo:hi]
        c = scale[lo:hi]
        th = thr[lo:hi]
        vp = v0[lo:hi].copy()
        first = np.full(m, T, np.int32)  # int32: as many lanes per vector as the float32 membranes
        # four separate buffers (rows of one array would defeat LLVM's alias analysis)
        c0 = _bias_rows(bias, m)
        c1 = _bias_rows(bias, m)
        c2 = _bias_rows(bias, m)
        c3 = _bias_rows(bias, m)
        t = 0
        while t + _U <= T:
            if store_ck and t % seg == 0:
                ck[t // seg, lo:hi] = vp
            _add_step_events(crow, channels, values, has_values, wt, t, B, b0, b1, c0)
            _add_step_events(crow, channels, values, has_values, wt, t + 1, B, b0, b1, c1)
            _add_step_events(crow, channels, values, has_values, wt, t + 2, B, b0, b1, c2)
            _add_step_events(crow, channels, values, has_values, wt, t + 3, B, b0, b1, c3)
            _first4(c0, c1, c2, c3, d, c, th, vp, first, np.int32(t), np.int32(T))
            _restore_bias(crow, t, B, b0, b1, bias, c0)
            _restore_bias(crow, t + 1, B, b0, b1, bias, c1)
            _restore_bias(crow, t + 2, B, b0, b1, bias, c2)
            _restore_bias(crow, t + 3, B, b0, b1, bias, c3)
            t += _U
        while t < T:
            if store_ck and t % seg == 0:
                ck[t // seg, lo:hi] = vp
            _add_step_events(crow, channels, values, has_values, wt, t, B, b0, b1, c0)
            _fwd1(c0, s[0, lo:hi], c1, d, c, th, vp, first, t, T, False, one, zero)
            _restore_bias(crow, t, B, b0, b1, bias, c0)
            t += 1
        for k in range(m):
            tf[lo + k] = first[k]


def _events_backward_template(crow, channels, values, has_values, evrow, wt, bias, ck, gs, gy, w2, imp, cr, dr, decay,
                              scale, thr, lim, consts, ec, T, B, lo0, hi0, bblock, seg, gev, gbn, gd, gc, gth, gv0):
    """Reverse-time pass for samples ``lo0 .. hi0-1`` (module section above); ``gs`` is
    ``[T, B * O]`` or one row ``[1, B * O]``.  With ``_GY`` the spikes also feed a linear layer
    ``y = W2 s + b2`` (``w2`` = ``W2`` ``[K, O]``) whose output gradient is ``gy`` ``[T, B * K]``:
    the spike gradient ``gs[t] + gy[t, b] @ W2`` is formed in the ``_GY`` reverse kernels'
    registers (the ``[T, B, O]`` product is never stored); with ``_IMP`` too, ``gy`` is a
    max-membrane readout's input gradient and ``imp`` ``[T, B * K]`` its impulses, ``cr``
    ``[B * K]`` its input scale and ``dr[0]`` its one decay: ``gy[t] W2`` is then carried from
    step to step (``_bwd2_gy_template``), started from ``gy`` at the end of the first segment
    swept and fed the impulses' rows ``(cr imp[t]) W2``.  Writes, when ``_NEED_W``, the rows
    ``gev[evrow[r]]`` of the nonempty rows ``r`` of these samples; when ``_NEED_B``, ``gbn``
    ([B * O]: each neuron's sum of ``gI`` over time); when ``_PGRAD``, ``gd, gc, gth`` as
    ``single_spike_backward``; and ``gv0``."""
    O = wt.shape[1]
    K = w2.shape[0]
    gs_step = 1 if gs.shape[0] == T else 0
    nseg = (T + seg - 1) // seg
    for b0 in range(lo0, hi0, bblock):
        b1 = min(b0 + bblock, hi0)
        lo = b0 * O
        hi = b1 * O
        m = hi - lo
        d = decay[lo:hi]
        c = scale[lo:hi]
        th = thr[lo:hi]
        lm = lim[lo:hi]
        tmax = lm.max()  # from tmax on, r = 0 (and gI = 0) for the whole block
        if _GY:  # ... and after the block's last nonzero incoming gradient (a max-membrane readout
            # sends none after its maxima): the reverse sweep starts from r = 0 there
            tlim = min(tmax, T)
            if gs_step == 1:
                tmax = _last_nonzero_step(gs, tlim, lo, hi)
            else:
                tmax = tlim if row_has_nonzero(gs[0, lo:hi]) else 0
            tmax = max(tmax, _last_nonzero_step(gy, tlim, b0 * K, b1 * K))
        elif gs_step == 1:
            tmax = _last_nonzero_step(gs, min(tmax, T), lo, hi)
        # separate allocations (rows of one array would defeat LLVM's alias analysis)
        buf = np.empty((seg + 1, m), wt.dtype)  # buf[0]: v[t0 - 1] (the checkpoint), buf[j+1]: v[t0+j]
        cur = np.empty((seg, m), wt.dtype)  # cur[j]: the current of step t0+j
        for j in range(seg):
            cur[j] = _bias_rows(bias, m)
        gx = np.empty((seg, m), wt.dtype)  # gx[j]: gI of step t0+j
        gvz = np.zeros(m, wt.dtype)  # stands for the (absent) membrane gradient
        vp = np.empty(m, wt.dtype)
        if _GY:  # the running sums in the kernel dtype (the variant agrees to rounding anyway)
            a_r = np.zeros(m, wt.dtype)
            b_r = np.zeros(m, wt.dtype)
        else:  # in float64, rounded at every step, as torch's CPU cumsum
            a_r = np.zeros(m, np.float64)
            b_r = np.zeros(m, np.float64)
        r_r = np.zeros(m, wt.dtype)
        ad_r = np.zeros(m, wt.dtype)
        ac_r = np.zeros(m, wt.dtype)
        at_r = np.zeros(m, wt.dtype)
        ab_r = np.zeros(m, wt.dtype)
        gw_r = np.zeros(m if _IMP else 1, wt.dtype)  # G = gy[t] W2 of the step last swept
        # the rows (cr imp[t]) W2 of each sample: pool[0] zeros, two rows per sample (_impulse_rows)
        nb = b1 - b0
        pool = np.zeros((1 + 2 * nb if _IMP else 1, O if _IMP else 1), wt.dtype)
        slot = np.zeros(nb, np.int64)
        last = np.zeros(nb * K if _IMP else 1, wt.dtype)
        idx0 = np.zeros(nb, np.int64)
        idx1 = np.zeros(nb, np.int64)
        drv = dr[0]
        started = False
        for g in range(nseg - 1, -1, -1):
            t0 = g * seg
            n = min(T, t0 + seg) - t0
            if t0 >= tmax:
                if _NEED_W:
                    for t in range(t0, t0 + n):
                        for b in range(b0, b1):
                            r = t * B + b
                            if crow[r + 1] > crow[r]:
                                gev[evrow[r]] = 0
                continue
            # (row_view: views without a reference count, _numba_lowlevel's "borrowed views")
            for j in range(n):
                _add_step_events(crow, channels, values, has_values, wt, t0 + j, B, b0, b1, row_view(cur, j))
            buf[0] = ck[g, lo:hi]
            vp[:] = buf[0]
            j = 0
            while j + _U <= n:
                _membrane4(row_view(cur, j), row_view(cur, j + 1), row_view(cur, j + 2), row_view(cur, j + 3),
                           row_view(buf, j + 1), row_view(buf, j + 2), row_view(buf, j + 3), row_view(buf, j + 4),
                           d, c, vp)
                j += _U
            while j < n:
                _membrane1(row_view(cur, j), row_view(buf, j + 1), d, c, vp)
                j += 1
            odd = n % 2  # the segment's first step alone when n is odd, after the pairs
            if _IMP:
                if not started:  # G of step t0 + n from gy itself (0 past the end)
                    started = True
                    if t0 + n < T:
                        _gy_w2_rows(row_view(gy, t0 + n), w2, b0, b1, O, K, gw_r)
            if _GY:
                ylo = b0 * K
                yhi = b1 * K
                for j in range(n - 2, odd - 1, -2):
                    t = t0 + j
                    # (flags and rows named first: numba rejects long calls with inline branches)
                    st0 = _NEED_W and _block_has_events(crow, t, B, b0, b1)
                    st1 = _NEED_W and _block_has_events(crow, t + 1, B, b0, b1)
                    if _IMP:  # step t + 1 first: its row stays put while step t's is made
                        _impulse_rows(row_view(imp, t + 1), cr, w2, b0, b1, K, pool, slot, last, idx1)
                        _impulse_rows(row_view(imp, t), cr, w2, b0, b1, K, pool, slot, last, idx0)
                    _bwd2(row_view(buf, j + 1), row_view(buf, j + 2), row_view(buf, j), row_view(cur, j),
                          row_view(cur, j + 1), row_slice_view(gs, t * gs_step, lo, hi),
                          row_slice_view(gs, (t + 1) * gs_step, lo, hi), row_slice_view(gy, t, ylo, yhi),
                          row_slice_view(gy, t + 1, ylo, yhi), w2, row_view(gx, j), row_view(gx, j + 1),
                          st0, st1, d, c, th, lm, t, a_r, b_r, r_r, ad_r, ac_r, at_r, ab_r, consts, ec, pool, idx0,
                          idx1, gw_r, drv)
                if odd:
                    st0 = _NEED_W and _block_has_events(crow, t0, B, b0, b1)
                    if _IMP:
                        _impulse_rows(row_view(imp, t0), cr, w2, b0, b1, K, pool, slot, last, idx0)
                    _bwd1(row_view(buf, 1), row_view(buf, 0), row_view(cur, 0), row_slice_view(gs, t0 * gs_step, lo, hi),
                          row_slice_view(gy, t0, ylo, yhi), w2, row_view(gx, 0), st0, d, c,
                          th, lm, t0, a_r, b_r, r_r, ad_r, ac_r, at_r, ab_r, consts, ec, pool, idx0, gw_r, drv)
            else:
                for j in range(n - 2, odd - 1, -2):  # steps t0+j, t0+j+1
                    t = t0 + j
                    _bwd2(row_view(buf, j + 1), row_view(buf, j + 2), row_view(buf, j), row_view(cur, j),
                          row_view(cur, j + 1), row_slice_view(gs, t * gs_step, lo, hi),
                          row_slice_view(gs, (t + 1) * gs_step, lo, hi), gvz, gvz, row_view(gx, j),
                          row_view(gx, j + 1), d, c, th, lm, t, a_r, b_r, r_r, ad_r, ac_r, at_r, consts, ec)
                if odd:
                    _bwd1(row_view(buf, 1), row_view(buf, 0), row_view(cur, 0), row_slice_view(gs, t0 * gs_step, lo, hi),
                          gvz, row_view(gx, 0), d, c, th, lm, t0, a_r, b_r, r_r, ad_r, ac_r, at_r, consts, ec)
            for j in range(n - 1, -1, -1):
                t = t0 + j
                if _NEED_B and not _GY:  # (the _GY reverse kernels sum it themselves, in this order)
                    add_row(ab_r, row_view(gx, j))
                if _NEED_W:
                    for b in range(b0, b1):
                        r = t * B + b
                        if crow[r + 1] > crow[r]:
                            copy_row(row_view(gev, evrow[r]), row_slice_view(gx, j, (b - b0) * O, (b - b0 + 1) * O))
                _restore_bias(crow, t, B, b0, b1, bias, row_view(cur, j))
        if _PGRAD:
            gd[lo:hi] = ad_r
            gc[lo:hi] = ac_r
            gth[lo:hi] = at_r
        if _NEED_B:
            gbn[lo:hi] = ab_r
        for k in range(m):
            gv0[lo + k] = d[k] * r_r[k]


@njit(**_JIT)
def _gy_w2_rows(gy_t, w2, b0, b1, O, K, out):
    """``out[(b - b0) O + o] = sum_k gy_t[b K + k] w2[k, o]`` (``k`` rising) for samples ``b0 .. b1-1``."""
    for b in range(b0, b1):
        row = out[(b - b0) * O:(b - b0 + 1) * O]
        row[:] = 0
        for k in range(K):
            a = gy_t[b * K + k]
            if a != 0:
                add_scaled_row(row, a, w2[k])


@njit(**_JIT)
def _impulse_rows(imp_t, cr, w2, b0, b1, K, pool, slot, last, idx):
    """Point ``idx[b - b0]`` at a row of ``pool`` holding ``sum_k (cr imp_t)[b K + k] w2[k]``
    (``k`` rising, over the nonzero impulses; ``pool[0]``, zeros, when there is none).

    Each sample owns the rows ``2 q + 1`` and ``2 q + 2`` (``q = b - b0``); ``slot[q]`` is the one
    made last and ``last`` the impulses it was made from.  A step whose impulses equal those is
    given the same row: while a readout's membrane sits at its maximum for many steps (a
    constant input, early in training) its impulses are dense but do not change, and the row is
    made once per run of equal impulses instead of at every step.  A new row goes to the other
    slot, so the row of the step swept with this one (made just before) stays intact."""
    for b in range(b0, b1):
        q = b - b0
        nonzero = False
        same = slot[q] != 0
        for k in range(K):
            a = imp_t[b * K + k]
            nonzero |= a != 0
            same &= a == last[q * K + k]
        if not nonzero:
            idx[q] = 0
            continue
        if not same:
            s = 2 * q + 2 if slot[q] == 2 * q + 1 else 2 * q + 1
            dst = row_view(pool, s)
            dst[:] = 0
            for k in range(K):
                a = imp_t[b * K + k]
                last[q * K + k] = a
                if a != 0:
                    add_scaled_row(dst, a * cr[b * K + k], row_view(w2, k))
            slot[q] = s
        idx[q] = slot[q]


_EVENTS_BACKWARD: dict = {}


def single_spike_events_backward(crow, channels, values, has_values, evrow, wt, bias, ck, gs, gy, w2, imp, cr, dr,
                                 decay, scale, thr, lim, code, consts, ec, fast, pgrad, need_w, need_b, has_gy,
                                 has_imp, T, B, lo0, hi0, bblock, seg, gev, gbn, gd, gc, gth, gv0):
    """The events backward for samples ``lo0 .. hi0-1``, compiled per surrogate ``code``, exp
    flavour, ``pgrad`` (decay/scale/threshold sums), ``need_w`` (the ``gev`` rows), ``need_b``
    (the bias sums ``gbn``), ``has_gy`` (a following linear layer's output gradient ``gy``
    with its weight ``w2``) and ``has_imp`` (that layer feeds a max-membrane readout of impulses
    ``imp``, scale ``cr``, decay ``dr[0]``); arrays not asked for are not touched (pass any of
    the dtype)."""
    has_imp = bool(has_imp) and bool(has_gy)
    # the layer's size is a constant of the gy W2 sums only; the impulse recursion never reads it,
    # so one variant serves every size there (no compile per number of classes)
    kout = w2.shape[0] if has_gy and not has_imp else 0
    key = (int(code), bool(fast), bool(pgrad), bool(need_w), bool(need_b), bool(has_gy), kout, has_imp)
    kernel = _EVENTS_BACKWARD.get(key)
    if kernel is None:
        if has_gy:
            bwd2, bwd1 = _reverse_gy_kernels(key[0], key[1], key[2], key[4], kout, has_imp)
        else:
            bwd2, bwd1 = _reverse_kernels(key[0], key[1], key[2], False)
        flags = {"_CODE": key[0], "_FAST": key[1], "_PGRAD": key[2], "_HAS_GV": False, "_NEED_W": key[3],
                 "_NEED_B": key[4], "_GY": key[5], "_KOUT": kout, "_IMP": has_imp}
        kernel = _EVENTS_BACKWARD.setdefault(
            key, specialise(_events_backward_template, _JIT, flags, {"_bwd2": bwd2, "_bwd1": bwd1}))
    kernel(crow, channels, values, has_values, evrow, wt, bias, ck, gs, gy, w2, imp, cr, dr, decay, scale, thr, lim,
           consts, ec, T, B, lo0, hi0, bblock, seg, gev, gbn, gd, gc, gth, gv0)


@njit(**_JIT)
def sum_samples(gbn, B, out):
    """``out[j] = sum_b gbn[b * O + j]`` in ascending ``b``, accumulated in float64, rounded once."""
    O = out.shape[0]
    acc = np.zeros(O, np.float64)
    for b in range(B):
        row = gbn[b * O:(b + 1) * O]
        for j in range(O):
            acc[j] += row[j]
    for j in range(O):
        out[j] = acc[j]


# ------------------------------------------------------------------------------------------
# host functions (the contract of triton_kernels.py: same names, same keyword arguments)
# ------------------------------------------------------------------------------------------

# Neurons per block of the CPU backward: its recomputation buffer, (SEGMENT + 1) x block
# elements, stays in L2 (135 KiB in float32), as for the LIF backward.
_BACKWARD_BLOCK = 1024
# Neurons per block of the events backward (whole samples, at least one): its three
# (SEGMENT + 1) x block buffers (membranes, currents, gI) stay in L2.
_EVENTS_BACKWARD_BLOCK = 1024
# ... and of the events forward (four current buffers and the state of the block, in L1/L2).
_EVENTS_FORWARD_BLOCK = 4096
_SAMPLE_CHUNKS_PER_THREAD = 4


def forward(*, x, decay, scale, threshold, v0, config, store_v: bool, need_grad: bool):
    """Run the single-spike LIF over ``x`` ``[T, N]`` (contiguous, float32/float64) with per-neuron
    ``[N]`` parameters; ``config`` a :class:`~spikescan.ops.single_spike.fused.SingleSpikeKernelConfig`
    (not read: the forward has no constant).

    Returns ``(s, v, first, checkpoints)``: ``v`` ``[T, N]`` when ``store_v`` else ``[0, N]``;
    ``first`` ``[N]`` int32; ``checkpoints`` ``[ceil(T / SEGMENT), N]`` when ``need_grad`` else ``[0, N]``.
    """
    import torch

    from .._kernels._common import SEGMENT
    from .._kernels._host import empty, numpy_views, run_cpu

    T, N = x.shape
    s = empty((T, N), x)
    v = empty((T, N), x) if store_v else x.new_empty(1, N)
    ck = x.new_empty(-(-T // SEGMENT), N) if need_grad else x.new_empty(1, N)
    first = torch.empty(N, dtype=torch.int32)
    args = numpy_views(x, decay, scale, threshold, v0)
    outs = numpy_views(s, v, ck, first)
    flags = (bool(store_v), bool(need_grad))
    run_cpu(N, T, lambda lo, hi, bs: single_spike_forward(*args, lo, hi, bs, SEGMENT, *flags, *outs))
    empty_rows = torch.empty(0, N, dtype=x.dtype)
    return s, (v if store_v else empty_rows), first, (ck if need_grad else empty_rows.clone())


def backward(*, x, v, checkpoints, first, grad_s, grad_v, decay, scale, threshold, v0, config, param_grads: bool):
    """Gradients ``(gx [T, N], g_decay, g_scale, g_threshold, g_v0 [N])`` of the forward above.

    ``grad_s``/``grad_v``: ``[T, N]`` or one ``[1, N]`` row shared by every step; ``grad_v``
    ``None`` when the membrane output has no gradient.  ``v``/``v0`` are not read (the segments
    are recomputed from ``x`` and the checkpoints, whose first row is ``v0``).  The parameter
    sums are zeros unless ``param_grads``.
    """
    import torch

    from .._kernels._common import SEGMENT, surrogate_consts
    from .._kernels._host import empty, exp_args, numpy_dtype, numpy_views, run_cpu

    T, N = x.shape
    kdtype = x.dtype
    has_gv = grad_v is not None
    gv = grad_v if has_gv else x.new_zeros(1, N)
    lim = torch.full_like(first, T) if config.straight_through else first
    gx = empty((T, N), x)
    gd, gc, gth = (x.new_zeros(N) for _ in range(3))  # zeros: written only when param_grads
    gv0 = x.new_empty(N)
    ec, fast = exp_args(kdtype)
    consts = surrogate_consts(numpy_dtype(kdtype), config.surrogate_param)
    args = numpy_views(x, checkpoints, grad_s, gv, decay, scale, threshold, lim)
    flags = (int(config.surrogate_code), consts, ec, fast, bool(param_grads), has_gv)
    outs = numpy_views(gx, gd, gc, gth, gv0)
    run_cpu(N, T, lambda lo, hi, bs: single_spike_backward(*args, *flags, lo, hi, bs, SEGMENT, *outs),
            _BACKWARD_BLOCK)
    return gx, gd, gc, gth.neg_(), gv0


def readout_forward(*, x, decay, scale, v0, need_grad: bool):
    """``(maximum, count, v, checkpoints)`` of the max-membrane readout over ``x`` ``[T, N]``:
    ``v`` is always ``[0, N]`` (the backward recomputes it), ``checkpoints`` as for :func:`forward`."""
    import torch

    from .._kernels._common import SEGMENT
    from .._kernels._host import numpy_views, run_cpu

    T, N = x.shape
    ck = x.new_empty(-(-T // SEGMENT), N) if need_grad else x.new_empty(1, N)
    mx, cnt = x.new_empty(N), x.new_empty(N)
    args = numpy_views(x, decay, scale, v0)
    outs = numpy_views(ck, mx, cnt)
    run_cpu(N, T, lambda lo, hi, bs: max_membrane_forward(*args, lo, hi, bs, SEGMENT, bool(need_grad), *outs),
            _BACKWARD_BLOCK)
    empty_rows = torch.empty(0, N, dtype=x.dtype)
    return mx, cnt, empty_rows, (ck if need_grad else empty_rows.clone())


def readout_backward(*, x, v, checkpoints, grad_max, decay, scale, v0, maximum, count, param_grads: bool,
                     impulses: bool = False):
    """Gradients ``(gx [T, N], g_decay, g_scale, g_v0 [N])`` of the readout (``grad_max`` ``[N]``);
    the sums are zeros unless ``param_grads``.  With ``impulses`` (CPU only) also, fifth, the
    ``[T, N]`` impulses of ``max_membrane_backward`` (``grad_max / count`` at the maxima)."""
    from .._kernels._common import SEGMENT
    from .._kernels._host import empty, numpy_views, run_cpu

    T, N = x.shape
    gx = empty((T, N), x)
    gd, gc = x.new_zeros(N), x.new_zeros(N)  # zeros: written only when param_grads
    gv0 = x.new_empty(N)
    imp = empty((T, N), x) if impulses else x.new_empty(1, N)
    args = numpy_views(x, checkpoints, grad_max, decay, scale, maximum, count)
    outs = numpy_views(gx, gd, gc, gv0, imp)
    flags = (bool(param_grads), bool(impulses))
    run_cpu(N, T, lambda lo, hi, bs: max_membrane_backward(*args, lo, hi, bs, SEGMENT, *flags, *outs),
            _BACKWARD_BLOCK)
    return (gx, gd, gc, gv0, imp) if impulses else (gx, gd, gc, gv0)


# The events-fed layer (CPU only).  Threads: samples are split over the pool in fixed ranges;
# every (t, b, neuron) value is computed the same way whatever the range, and the two sums across
# samples (the bias gradient over b, the weight gradient over rows) run afterwards in a fixed
# order, so results do not depend on the thread count or the scheduling.


def _run_samples(B: int, work: int, block: int, fn) -> None:
    """Call ``fn(lo, hi)`` on disjoint ranges of samples covering ``0 .. B-1``, each range a
    multiple of ``block`` samples (but the last), up to ``_SAMPLE_CHUNKS_PER_THREAD`` ranges per
    thread taken from a shared counter (as ``_cpu.parallel_for``, over samples instead of neurons)."""
    if B == 0:
        return
    import torch

    from .._kernels import _cpu

    threads = max(1, torch.get_num_threads())
    if threads == 1 or work < _cpu._MIN_PARALLEL or B < 2:
        fn(0, B)
        return
    size = max(1, -(-B // (threads * _SAMPLE_CHUNKS_PER_THREAD)))
    size = block * (-(-size // block)) if size > block else size
    ranges = [(lo, min(B, lo + size)) for lo in range(0, B, size)]
    _cpu.run_ranges(ranges, fn, threads)


def _events_arrays(crow, channels, values):
    """``(crow, channels, values, has_values)`` as numpy arrays for the kernels (``values`` empty: all 1)."""
    return crow.contiguous().numpy(), channels.contiguous().numpy(), values.contiguous().numpy(), values.numel() > 0


def events_forward(*, crow, channels, values, weight, bias, decay, scale, threshold, v0, steps: int, batch: int,
                   need_grad: bool):
    """``(s [T, B * O], checkpoints, first)`` of the neurons fed by ``weight @ x + bias``, ``x`` the
    events ``(crow, channels, values)`` of ``[T, B, C]``; ``weight`` ``[O, C]`` and ``bias`` ``[O]``
    in the kernel dtype, the neuron parameters ``[B * O]``."""
    import torch

    from .._kernels._common import SEGMENT
    from .._kernels._host import numpy_views

    T, B = steps, batch
    O = weight.shape[0]
    M = B * O
    wt = weight.detach().t().contiguous()
    scratch = wt.new_empty(4, M)
    first = torch.empty(M, dtype=torch.int32)
    ck = wt.new_empty(-(-T // SEGMENT), M) if need_grad else wt.new_empty(1, M)
    args = (*_events_arrays(crow, channels, values), wt.numpy(), bias.detach().contiguous().numpy(),
            *numpy_views(decay, scale, threshold, v0), T, B)
    outs = numpy_views(scratch, ck, first)
    bblock = max(1, _EVENTS_FORWARD_BLOCK // max(O, 1))
    _run_samples(B, T * M, bblock,
                 lambda lo, hi: single_spike_events_forward(*args, lo, hi, bblock, SEGMENT, bool(need_grad), *outs))
    return _spikes_from_first(first, T, wt.dtype), (ck if need_grad else wt.new_empty(0, M)), first


def _spikes_from_first(first, T: int, dtype):
    """``s [T, N]`` with ``s[first[n], n] = 1`` (none where ``first[n] == T``).

    ``numpy.zeros`` of a large array is fresh zero pages from the OS that no one has touched, and
    only the pages holding a spike are written: at most one spike per neuron (early, in a trained
    network) leaves almost all of the 80 MB of a FastSNN F-MNIST batch untouched, where writing
    the zeros costs as much as the whole input layer (12 of 15 ms on the development CPU).  A
    reader of ``s`` maps those pages then (a following event-driven layer takes the recorded
    events instead, see ``fused._with_events``)."""
    import torch

    from .._kernels._host import numpy_dtype

    N = first.shape[0]
    s = torch.from_numpy(np.zeros((T, N), dtype=numpy_dtype(dtype)))
    fired = torch.nonzero(first < T).squeeze(1)
    s[first[fired].long(), fired] = 1
    return s


def events_backward(*, crow, channels, values, weight, bias, checkpoints, first, grad_s, decay, scale, threshold,
                    steps: int, batch: int, config, need_weight: bool, need_bias: bool, param_grads: bool,
                    grad_y=None, out_weight=None, impulses=None, readout_scale=None, readout_decay=None):
    """Gradients ``(g_weight_t [C, O], g_bias [O], g_decay, g_scale, g_threshold, g_v0 [B * O])`` of
    :func:`events_forward` for ``grad_s`` ``[T, B * O]`` (or one row) plus, when given, the
    gradient ``grad_y`` ``[T, B * K]`` of a linear layer ``y = out_weight s + b2`` (``out_weight``
    ``[K, O]``, kernel dtype) fed by the spikes; ``g_weight_t`` (the weight's gradient transposed)
    and ``g_bias`` are zeros unless asked for, the parameter sums unless ``param_grads``.  With
    ``impulses`` (``[T, B * K]``) ``grad_y`` is a max-membrane readout's input gradient over
    ``y`` and ``impulses`` its impulses (:func:`readout_backward`), ``readout_scale`` ``[B * K]``
    and ``readout_decay`` (one value) its parameters: the sweep then carries ``gy W2`` from step
    to step (``_events_backward_template``), the same sums to rounding."""
    import torch

    from .._kernels import event_numba as EK
    from .._kernels._common import SEGMENT, surrogate_consts
    from .._kernels._cpu import parallel_for
    from .._kernels._host import empty, exp_args, numpy_dtype, numpy_views

    T, B = steps, batch
    O, C = weight.shape
    M = B * O
    kdtype = weight.dtype
    wt = weight.detach().t().contiguous()
    bv = bias.detach().contiguous()
    crow_a, channels_a, values_a, has_values = _events_arrays(crow, channels, values)
    lim = torch.full_like(first, T) if config.straight_through else first
    evrow = np.empty(crow_a.shape[0] - 1, np.int64)
    crow_ev = np.empty(crow_a.shape[0], np.int64)
    rows = EK.nonempty_rows(crow_a, evrow, crow_ev)
    gev = empty((rows, O), wt) if need_weight else wt.new_empty(1, O)
    gbn = wt.new_empty(M) if need_bias else wt.new_empty(1)
    gd, gc, gth = (wt.new_zeros(M) for _ in range(3))  # zeros: written only when param_grads
    gv0 = wt.new_empty(M)
    ec, fast = exp_args(kdtype)
    consts = surrogate_consts(numpy_dtype(kdtype), config.surrogate_param)
    has_gy = grad_y is not None
    gy = grad_y.contiguous() if has_gy else wt.new_zeros(1, 1)
    w2 = out_weight.detach().contiguous() if has_gy else wt.new_zeros(1, O)
    has_imp = has_gy and impulses is not None
    imp = impulses.contiguous() if has_imp else wt.new_zeros(1, 1)
    cr = readout_scale.contiguous() if has_imp else wt.new_zeros(1)
    dr = readout_decay.reshape(1).contiguous() if has_imp else wt.new_zeros(1)
    args = (crow_a, channels_a, values_a, has_values, evrow, wt.numpy(), bv.numpy(), checkpoints.numpy(),
            grad_s.numpy(), gy.numpy(), w2.numpy(), *numpy_views(imp, cr, dr, decay, scale, threshold, lim),
            int(config.surrogate_code), consts, ec, fast, bool(param_grads), bool(need_weight), bool(need_bias),
            has_gy, has_imp, T, B)
    outs = numpy_views(gev, gbn, gd, gc, gth, gv0)
    bblock = max(1, _EVENTS_BACKWARD_BLOCK // max(O, 1))
    _run_samples(B, T * M, bblock,
                 lambda lo, hi: single_spike_events_backward(*args, lo, hi, bblock, SEGMENT, *outs))
    gwt = wt.new_zeros(C, O) if not need_weight or O == 0 else wt.new_empty(C, O)
    if need_weight and O > 0:
        # gev holds the rows that have events, in order: their CSR is the weight gradient's input
        # as in event_linear's backward (the same sums in the same order)
        wargs = (crow_ev[:rows + 1], channels_a, values_a, has_values, gev.numpy(), gwt.numpy(), wt.new_empty(O).numpy(), False)
        parallel_for(O, channels_a.shape[0] * O + C * O, lambda lo, hi, _b: EK.event_linear_weight_grad(*wargs, lo, hi))
    gb = wt.new_zeros(O)
    if need_bias:
        sum_samples(gbn.numpy(), B, gb.numpy())
    return gwt, gb, gd, gc, gth.neg_(), gv0
