"""Time-fused SPSN step on the CPU (numba): both integrations, firing and RNG in one pass.

Forward, per neuron (SPSN eq. 5-7, 17-18)::

    i[t] = a * i[t-1] + x[t]
    u[t] = b * u[t-1] + ((1 - b) * i[t])
    U    = uniform(seed, t, n)                       counter-based, see _common
    SB:  s[t] = U < sigmoid(u[t])
    GS:  z = c * u[t] + logit(U);  s[t] = z > 0      (logit(U) ~ Logistic(0, 1))

Nothing of size [T, N] is stored but the spikes: every ``seg`` steps the forward writes the
state ``(i, u)`` into a checkpoint array ``[ceil(T/seg) + 1, N]`` each, i.e. ``2 * 4 / seg`` bytes
per (t, neuron) in float32 (0.25 B at seg = 32); the first row is the initial state ``(i0, u0)``,
the extra last row the final state (a chunked sequence continues from it).  The backward walks
the segments from last to first; for each it recomputes the segment's states from its checkpoint into a small local buffer
(``2 x seg x block`` elements, cache resident) with the same operations as the forward (so
bit-identical), regenerates the noise from the counter when needed (GS), and runs the
reverse-time recurrences::

    SB:  gu = gs[t] * p^2 (1 - p)                    p = sigmoid(u[t])  (SPSN eq. 19, authors' code)
    GS:  gu = gs[t] * (c / tau) * q (1 - q)          q = sigmoid(z / tau)  (straight-through)
    ru = gu + b * ru;              gb += ru * (u[t-1] - i[t])
    ri = (1 - b) * ru + a * ri;    ga += ri * i[t-1]
    gx[t] = ri

starting from the final state's gradients (``b * ru`` and ``a * ri`` one step past the end) and
ending with the initial state's, ``grad u0 = b * ru``, ``grad i0 = a * ri`` after step 0.

Memory traffic of a training step: forward reads x and writes s; backward reads x and gs and
writes gx: 5 elements per (t, neuron).

The kernels advance each neuron several steps per sweep over a block (forward and the
backward's recomputation 4, the Sigmoid-Bernoulli reverse walk 2), so states and carried
gradients stay in registers across those steps; the backward is compiled with and without the
alpha/beta sums (without them it stores only the membranes of a segment, not the currents).
The hot loops ask LLVM for 512-bit vectors (``_numba_lowlevel.prefer_wide_vectors``): with the
RNG and the exp per element they are compute-bound.  Measured on the development CPU (2 threads,
[10000, 4096], float32, backward without parameter sums): recomputing 4 steps per sweep and
storing only ``u`` took the backward from 36.1 to 31.8 ms, the 2-step reverse walk from 29.6
to 25.5 ms (minimum of 10 interleaved runs each).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .._kernels._numba_lowlevel import prefer_wide_vectors, specialise
from .._kernels._numba_math import exp1, exp_row, u32_to_float

_JIT = dict(fastmath=False, cache=True, nogil=True, error_model="numpy")

_U1 = np.uint32(1)
_U9 = np.uint32(9)


@intrinsic
def mix32(typingctx, h):
    """lowbias32 (see ``_common``) on a uint32, as 32-bit LLVM operations.

    numba would widen integer arithmetic to 64 bits (64-bit vector multiplies are slow); this
    keeps it in 32-bit lanes: 0.40 instead of 0.71 ns per uniform on the development CPU.
    """
    if h != types.uint32:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        x = args[0]
        x = builder.xor(x, builder.lshr(x, ir.Constant(i32, 16)))
        x = builder.mul(x, ir.Constant(i32, 0x7FEB352D))
        x = builder.xor(x, builder.lshr(x, ir.Constant(i32, 15)))
        x = builder.mul(x, ir.Constant(i32, 0x846CA68B))
        return builder.xor(x, builder.lshr(x, ir.Constant(i32, 16)))

    return types.uint32(types.uint32), codegen


@njit(**_JIT)
def uniform_row(k1, k2, lo, out):
    """``out[k] = 2 * (h >> 9) + 1`` for neurons ``lo + k`` (times 2**-24 gives the uniform);
    ``k1``, ``k2``: the step's keys (uint32)."""
    for k in range(out.shape[0]):
        h = mix32(np.uint32(mix32(np.uint32(np.uint32(lo + k) ^ k1)) ^ k2))
        out[k] = np.uint32((h >> _U9) << _U1) | _U1


@njit(**_JIT)
def fill_uniforms(keys, lo0, hi0, out):
    """``out[t, n]`` = the uniform of step t, neuron n (``keys`` [T, 2] uint32)."""
    T = out.shape[0]
    for t in range(T):
        row = out[t, lo0:hi0]
        uniform_row(keys[t, 0], keys[t, 1], lo0, row)
        for k in range(row.shape[0]):
            row[k] *= 2.0 ** -24


@njit(inline="always")
def _uniform_word(n, k1, k2):
    """``2 * (h >> 9) + 1`` as uint32 for neuron ``n`` (see :func:`uniform_row`)."""
    h = mix32(np.uint32(mix32(np.uint32(np.uint32(n) ^ k1)) ^ k2))
    return np.uint32(np.uint32((h >> _U9) << _U1) | _U1)


@njit(inline="always")
def _integrate(xk, ip, up, ak, bk, ok):
    """Both integrations of one step of one neuron, ``(i, u)``; ``ok = 1 - b``.  Every kernel that
    computes the states (forwards, the backward's recomputation) goes through here, so they are
    bit-identical."""
    iv = ak * ip + xk
    return iv, bk * up + ok * iv


@njit(inline="always")
def _sb_step(xk, ip, up, ak, bk, ok, n, k1, k2, inv24, one, ec, fast):
    """One Sigmoid-Bernoulli step of one neuron: ``(spike, i, u)`` with the operations of the
    row-wise formulation (``U (1 + exp(-u)) < 1``)."""
    iv, uv = _integrate(xk, ip, up, ak, bk, ok)
    w = u32_to_float(_uniform_word(n, k1, k2), one)
    e = exp1(-uv, ec, fast)
    return w * inv24 * (one + e) < one, iv, uv


# Bound per variant by specialise(): the exp flavour of the templates below.
_FAST = None


def _sb_fwd4_template(x0, x1, x2, x3, s0, s1, s2, s3, ii, uu, a, b, omb, keys, t, lo, consts, ec):
    """Steps t .. t+3 of Sigmoid-Bernoulli firing for one block, state in registers across them.
    (A separate function with the rows as arguments: that is what lets LLVM vectorize it.)"""
    prefer_wide_vectors()
    one = consts[0]
    zero = one - one
    inv24 = consts[1]
    k10 = keys[t, 0]
    k20 = keys[t, 1]
    k11 = keys[t + 1, 0]
    k21 = keys[t + 1, 1]
    k12 = keys[t + 2, 0]
    k22 = keys[t + 2, 1]
    k13 = keys[t + 3, 0]
    k23 = keys[t + 3, 1]
    for k in range(ii.shape[0]):
        ak = a[k]
        bk = b[k]
        ok = omb[k]
        n = lo + k
        f, iv, uv = _sb_step(x0[k], ii[k], uu[k], ak, bk, ok, n, k10, k20, inv24, one, ec, _FAST)
        s0[k] = one if f else zero
        f, iv, uv = _sb_step(x1[k], iv, uv, ak, bk, ok, n, k11, k21, inv24, one, ec, _FAST)
        s1[k] = one if f else zero
        f, iv, uv = _sb_step(x2[k], iv, uv, ak, bk, ok, n, k12, k22, inv24, one, ec, _FAST)
        s2[k] = one if f else zero
        f, iv, uv = _sb_step(x3[k], iv, uv, ak, bk, ok, n, k13, k23, inv24, one, ec, _FAST)
        s3[k] = one if f else zero
        ii[k] = iv
        uu[k] = uv


# The Sigmoid-Bernoulli forward with the exp flavour a compile-time constant (with a runtime flag
# the math.exp call of the other branch stays in the loop and blocks vectorization).
_sb_fwd4_fast = specialise(_sb_fwd4_template, _JIT, {"_FAST": True}, {})
_sb_fwd4_exact = specialise(_sb_fwd4_template, _JIT, {"_FAST": False}, {})


@njit(**_JIT)
def spsn_forward(x, alpha, beta, keys, gs_mode, consts, ec, fast, lo0, hi0, block, seg, i0, u0, s, ck_i, ck_u):
    """Fill spikes ``s`` [T, N] and the checkpoints ``ck_i``/``ck_u`` [ceil(T/seg) + 1, N]
    (the last row: the state after step T-1), starting from the state ``(i0, u0)`` [N].

    ``consts = [1, 2**-24, c, tau, c / tau]`` in the compute dtype (c: GS logit scale); ``ec``,
    ``fast``: see ``_numba_math.exp_row``.  Sigmoid-Bernoulli steps go four at a time per
    neuron (``seg`` must be a multiple of 4), Gumbel-softmax ones (``math.log``, which does not
    vectorize) one at a time.
    """
    T = x.shape[0]
    one = consts[0]
    inv24 = consts[1]
    c = consts[2]
    for lo in range(lo0, hi0, block):
        hi = min(lo + block, hi0)
        m = hi - lo
        a = alpha[lo:hi]
        b = beta[lo:hi]
        omb = one - b
        ii = i0[lo:hi].copy()
        uu = u0[lo:hi].copy()
        ub = np.empty(m, x.dtype)
        eb = np.empty(m, x.dtype)
        t = 0
        while t < T:
            if t % seg == 0:
                ck_i[t // seg, lo:hi] = ii
                ck_u[t // seg, lo:hi] = uu
            if not gs_mode and t + 4 <= T:
                rows = (x[t, lo:hi], x[t + 1, lo:hi], x[t + 2, lo:hi], x[t + 3, lo:hi], s[t, lo:hi],
                        s[t + 1, lo:hi], s[t + 2, lo:hi], s[t + 3, lo:hi])
                if fast:
                    _sb_fwd4_fast(*rows, ii, uu, a, b, omb, keys, t, lo, consts, ec)
                else:
                    _sb_fwd4_exact(*rows, ii, uu, a, b, omb, keys, t, lo, consts, ec)
                t += 4
                continue
            xt = x[t, lo:hi]
            st = s[t, lo:hi]
            for k in range(m):
                ii[k], uu[k] = _integrate(xt[k], ii[k], uu[k], a[k], b[k], omb[k])
            uniform_row(keys[t, 0], keys[t, 1], lo, ub)
            if gs_mode:
                for k in range(m):
                    U = ub[k] * inv24
                    z = c * uu[k] + math.log(U / (one - U))
                    st[k] = 1.0 if z > 0 else 0.0
            else:  # U < sigmoid(u) = 1 / (1 + exp(-u))  <=>  U (1 + exp(-u)) < 1
                exp_row(uu, -one, eb, ec, fast)
                for k in range(m):
                    st[k] = 1.0 if ub[k] * inv24 * (one + eb[k]) < one else 0.0
            t += 1
        ck_i[ck_i.shape[0] - 1, lo:hi] = ii
        ck_u[ck_u.shape[0] - 1, lo:hi] = uu


@njit(**_JIT)
def _recompute_row(xt, ip, up, ic, uc, a, b, omb):
    prefer_wide_vectors()
    for k in range(ic.shape[0]):
        ic[k], uc[k] = _integrate(xt[k], ip[k], up[k], a[k], b[k], omb[k])


# Bound per variant by specialise() (_make_backward): the flags, and in the driver the row kernels.
_PGRAD = _recompute4 = _sb_grad_row = _sb_rows2 = _back_row = None


def _spsn_backward_template(x, gs, alpha, beta, keys, gs_mode, consts, ec, lo0, hi0, block, seg, ck_i, ck_u, g_il,
                            g_ul, gx, ga, gb, gi0, gu0):
    """The reverse-time driver; :func:`_make_backward` binds the flags and the row kernels per variant.

    ``ru``/``ri`` carry ``b * dL/du[t+1]`` and ``a * dL/di[t+1]`` (what step t adds to its own
    gradients): they start from the gradients ``g_ul``/``g_il`` of the final state and end as
    those of the initial state, ``gu0``/``gi0``."""
    T = x.shape[0]
    g_step = 1 if gs.shape[0] == T else 0
    one = consts[0]
    inv24 = consts[1]
    c = consts[2]
    tau = consts[3]
    ct = consts[4]
    nseg = (T + seg - 1) // seg
    for lo in range(lo0, hi0, block):
        hi = min(lo + block, hi0)
        m = hi - lo
        a = alpha[lo:hi]
        b = beta[lo:hi]
        omb = one - b
        ibuf = np.empty((seg + 1, m), x.dtype)
        ubuf = np.empty((seg + 1, m), x.dtype)
        ub = np.empty(m, x.dtype)
        gu = np.empty(m, x.dtype)
        eb = np.empty(m, x.dtype)
        ru = g_ul[lo:hi].copy()
        ri = g_il[lo:hi].copy()
        ii = np.empty(m, x.dtype)
        uu = np.empty(m, x.dtype)
        acc_a = np.zeros(m, x.dtype)
        acc_b = np.zeros(m, x.dtype)
        for g in range(nseg - 1, -1, -1):
            t0 = g * seg
            n_t = min(T, t0 + seg) - t0
            ibuf[0] = ck_i[g, lo:hi]
            ubuf[0] = ck_u[g, lo:hi]
            # recompute the segment's states (the forward's operations, so bit-identical)
            ii[:] = ibuf[0]
            uu[:] = ubuf[0]
            j = 0
            while j + 4 <= n_t:
                _recompute4(x[t0 + j, lo:hi], x[t0 + j + 1, lo:hi], x[t0 + j + 2, lo:hi], x[t0 + j + 3, lo:hi],
                           ibuf[j + 1], ibuf[j + 2], ibuf[j + 3], ibuf[j + 4], ubuf[j + 1], ubuf[j + 2],
                           ubuf[j + 3], ubuf[j + 4], ii, uu, a, b, omb)
                j += 4
            while j < n_t:  # (the buffers' currents are not all stored: start from the state)
                _recompute_row(x[t0 + j, lo:hi], ii, uu, ibuf[j + 1], ubuf[j + 1], a, b, omb)
                ii[:] = ibuf[j + 1]
                uu[:] = ubuf[j + 1]
                j += 1
            top = n_t - 1
            if not gs_mode:  # steps two at a time from the end, the first one alone if n_t is odd
                while top >= 1:
                    t = t0 + top - 1
                    _sb_rows2(gs[t * g_step, lo:hi], gs[(t + 1) * g_step, lo:hi], gx[t, lo:hi], gx[t + 1, lo:hi],
                             ibuf[top - 1], ibuf[top], ibuf[top + 1], ubuf[top - 1], ubuf[top], ubuf[top + 1], a,
                             b, omb, ru, ri, acc_a, acc_b, one, ec)
                    top -= 2
            for j in range(top, -1, -1):
                t = t0 + j
                gst = gs[t * g_step, lo:hi]
                uc = ubuf[j + 1]
                if gs_mode:
                    uniform_row(keys[t, 0], keys[t, 1], lo, ub)
                    for k in range(m):
                        U = ub[k] * inv24
                        gu[k] = (c * uc[k] + math.log(U / (one - U))) / tau
                    exp_row(gu, -one, eb, ec, _FAST)
                    for k in range(m):
                        q = one / (one + eb[k])
                        gu[k] = gst[k] * (ct * q * (one - q))
                else:
                    _sb_grad_row(gst, uc, gu, one, ec)
                _back_row(gu, gx[t, lo:hi], ibuf[j], ubuf[j], ibuf[j + 1], a, b, omb, ru, ri, acc_a, acc_b)
        gi0[lo:hi] = ri
        gu0[lo:hi] = ru
        if _PGRAD:
            ga[lo:hi] = acc_a
            gb[lo:hi] = acc_b


def _recompute4_template(x0, x1, x2, x3, i0, i1, i2, i3, u0, u1, u2, u3, ii, uu, a, b, omb):
    """Four steps of the integrations (the forward's operations, so bit-identical) into the
    segment buffers, the state ``ii``/``uu`` carried in registers across them; the currents
    are stored only when the parameter sums need them."""
    prefer_wide_vectors()
    for k in range(ii.shape[0]):
        ak = a[k]
        bk = b[k]
        ok = omb[k]
        iv, uv = _integrate(x0[k], ii[k], uu[k], ak, bk, ok)
        u0[k] = uv
        if _PGRAD:
            i0[k] = iv
        iv, uv = _integrate(x1[k], iv, uv, ak, bk, ok)
        u1[k] = uv
        if _PGRAD:
            i1[k] = iv
        iv, uv = _integrate(x2[k], iv, uv, ak, bk, ok)
        u2[k] = uv
        if _PGRAD:
            i2[k] = iv
        iv, uv = _integrate(x3[k], iv, uv, ak, bk, ok)
        u3[k] = uv
        if _PGRAD:
            i3[k] = iv
        ii[k] = iv
        uu[k] = uv

def _sb_grad_row_template(gst, uc, gu, one, ec):
    """Sigmoid-Bernoulli's gradient at the membrane of one step, ``gs * p^2 (1 - p)``."""
    prefer_wide_vectors()
    for k in range(gu.shape[0]):
        p = one / (one + exp1(-uc[k], ec, _FAST))
        gu[k] = gst[k] * (p * p * (one - p))

def _sb_rows2_template(gs0, gs1, gx0, gx1, im, i0, i1, um, u0, u1, a, b, omb, ru, ri, acc_a, acc_b, one,
                       ec):
    """Reverse steps t+1 and t of Sigmoid-Bernoulli (rows ``*1`` and ``*0``; ``im``/``um``:
    the states before step t), the carried gradients in registers across both."""
    prefer_wide_vectors()
    for k in range(ru.shape[0]):
        ak = a[k]
        bk = b[k]
        ok = omb[k]
        p = one / (one + exp1(-u1[k], ec, _FAST))
        r_u = gs1[k] * (p * p * (one - p)) + ru[k]
        r_i = ok * r_u + ri[k]
        gx1[k] = r_i
        if _PGRAD:
            db = acc_b[k] + r_u * (u0[k] - i1[k])
            da = acc_a[k] + r_i * i0[k]
        p = one / (one + exp1(-u0[k], ec, _FAST))
        r_u = gs0[k] * (p * p * (one - p)) + bk * r_u
        r_i = ok * r_u + ak * r_i
        gx0[k] = r_i
        ru[k] = bk * r_u
        ri[k] = ak * r_i
        if _PGRAD:
            acc_b[k] = db + r_u * (um[k] - i0[k])
            acc_a[k] = da + r_i * im[k]

def _back_row_template(gu, gxt, ip, up, ic, a, b, omb, ru, ri, acc_a, acc_b):
    """The two recurrences of one reverse step, given the gradient ``gu`` at the membrane
    (:func:`sb_rows2` does the same for two steps); ``ru``/``ri`` carry ``b * r_u``, ``a * r_i``."""
    prefer_wide_vectors()
    for k in range(ru.shape[0]):
        r_u = gu[k] + ru[k]
        ru[k] = b[k] * r_u
        r_i = omb[k] * r_u + ri[k]
        ri[k] = a[k] * r_i
        gxt[k] = r_i
        if _PGRAD:
            acc_b[k] += r_u * (up[k] - ic[k])
            acc_a[k] += r_i * ip[k]


def _make_backward(fast: bool, pgrad: bool):
    """The backward kernel with the exp flavour (``fast``) and whether ``alpha``/``beta`` need
    gradients (``pgrad``; otherwise their sums are not computed) as compile-time constants: each
    kernel is a template compiled by :func:`~._numba_lowlevel.specialise` with the flags (and,
    for the driver, the row kernels) bound, one uniquely named, disk-cached function per variant."""
    flags = {"_FAST": fast, "_PGRAD": pgrad}
    rows = {f"_{name}": specialise(template, _JIT, flags, {}) for name, template in (
        ("recompute4", _recompute4_template), ("sb_grad_row", _sb_grad_row_template),
        ("sb_rows2", _sb_rows2_template), ("back_row", _back_row_template))}
    return specialise(_spsn_backward_template, _JIT, flags, rows)


_BACKWARD: dict = {}


def spsn_backward(x, gs, alpha, beta, keys, gs_mode, consts, ec, fast, pgrad, lo0, hi0, block, seg, ck_i, ck_u,
                  g_il, g_ul, gx, ga, gb, gi0, gu0):
    """Reverse-time pass (module docstring) for neurons ``lo0 .. hi0-1``; ``ga``/``gb`` are written
    only when ``pgrad``.  Dispatches to the kernel compiled for ``(fast, pgrad)``."""
    key = (bool(fast), bool(pgrad))
    kernel = _BACKWARD.get(key)
    if kernel is None:
        kernel = _BACKWARD.setdefault(key, _make_backward(*key))
    kernel(x, gs, alpha, beta, keys, gs_mode, consts, ec, lo0, hi0, block, seg, ck_i, ck_u, g_il, g_ul, gx, ga, gb,
           gi0, gu0)


# ------------------------------------------------------------------------------------------
# host launchers (same names and keyword arguments as ``triton_kernels``)
# ------------------------------------------------------------------------------------------

# Neurons per block: the backward's segment buffers (2 x 33 x block elements) must stay in L2.
# Measured (T=4000, N=4096, ns per element): blocks of 512: forward 1.84, backward 2.27; 1024:
# 1.68, 1.98; 2048: 1.63, 1.93.
_BLOCK = 2048

def _constants(dtype, config) -> tuple:
    """The kernels' ``consts``: ``(1, 2**-24, c, tau, c / tau)`` as scalars of ``dtype``."""
    from .._kernels._host import scalars

    c, tau = float(config.logit_scale), float(config.tau)
    return scalars(dtype, (1.0, 2.0**-24, c, tau, c / tau))


def uniforms(*, keys, out):
    """Fill ``out`` ``[T, N]`` (float32/float64) with the uniforms of step keys ``keys`` ``[T, 2]``."""
    from .._kernels._host import run_cpu

    T, N = out.shape
    kn, on = keys.numpy().view("uint32"), out.numpy()
    run_cpu(N, T, lambda lo, hi, bs: fill_uniforms(kn, lo, hi, on))
    return out


def forward(*, x, alpha, beta, keys, config, i0, u0):
    """The SPSN step over ``x`` ``[T, N]`` (contiguous, float32/float64) with per-neuron ``[N]``
    decays, step keys ``keys`` ``[T, 2]`` (int32 bit patterns of uint32), ``config`` a
    :class:`~spikescan.ops.spsn.fused.SPSNKernelConfig` and the initial state ``i0``, ``u0`` ``[N]``.

    Returns ``(s, state_i, state_u)``: the spikes ``[T, N]`` and the checkpoints of the current
    and the membrane, ``[ceil(T / SEGMENT) + 1, N]`` each (row ``g < ceil(T / SEGMENT)``: the
    state before step ``g * SEGMENT``; the last row: the state after step ``T - 1``).
    """
    from .._kernels._common import SEGMENT
    from .._kernels._host import empty, exp_args, numpy_views, run_cpu

    T, N = x.shape
    kdtype = x.dtype
    s = empty((T, N), x)
    nseg = -(-T // SEGMENT)
    ck_i, ck_u = x.new_empty(nseg + 1, N), x.new_empty(nseg + 1, N)
    args = numpy_views(x, alpha, beta) + (keys.numpy().view("uint32"), bool(config.gumbel), _constants(kdtype, config),
                                          *exp_args(kdtype))
    init = numpy_views(i0, u0)
    outs = numpy_views(s, ck_i, ck_u)
    run_cpu(N, T, lambda lo, hi, bs: spsn_forward(*args, lo, hi, bs, SEGMENT, *init, *outs), _BLOCK)
    return s, ck_i, ck_u


def backward(*, x, grad_s, alpha, beta, keys, state_i, state_u, config, param_grads: bool, i0, u0, grad_i,
             grad_u):
    """Gradients ``(gx [T, N], g_alpha [N], g_beta [N], g_i0 [N], g_u0 [N])`` of the forward above.

    ``grad_s``: ``[T, N]`` or one ``[1, N]`` row shared by every step; ``grad_i``/``grad_u``
    ``[N]``: the gradients of the final state.  ``g_alpha``/``g_beta`` are zeros unless
    ``param_grads`` (the kernel compiled without the sums skips them).  The initial state
    ``i0``/``u0`` is the first checkpoint here (the GPU kernel reads it).
    """
    from .._kernels._common import SEGMENT
    from .._kernels._host import empty, exp_args, numpy_views, run_cpu

    T, N = x.shape
    kdtype = x.dtype
    gx = empty((T, N), x)
    ga, gb = x.new_zeros(N), x.new_zeros(N)
    gi0, gu0 = x.new_empty(N), x.new_empty(N)
    args = numpy_views(x, grad_s, alpha, beta) + (keys.numpy().view("uint32"), bool(config.gumbel),
                                                  _constants(kdtype, config), *exp_args(kdtype), bool(param_grads))
    ck = numpy_views(state_i, state_u, grad_i, grad_u)
    outs = numpy_views(gx, ga, gb, gi0, gu0)
    run_cpu(N, T, lambda lo, hi, bs: spsn_backward(*args, lo, hi, bs, SEGMENT, *ck, *outs), _BLOCK)
    return gx, ga, gb, gi0, gu0
