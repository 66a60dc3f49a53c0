"""Vectorizable elementwise math for the numba kernels.

numba has no vector math library here (no SVML), so a loop calling ``math.exp`` stays scalar
(about 2.3 ns per float32 on the development CPU).  :func:`exp1` (and :func:`exp_row`, a loop
of it) computes ``exp`` with Cody-Waite range reduction (``x = n ln2 + r``, ``|r| <= ln2/2``),
a degree-6 Taylor polynomial for ``exp(r)`` in Horner form and ``2**n`` built from its exponent
bits, all of which vectorize (max relative error about 2 ulp in float32).  Each Horner step is
one fused multiply-add where the CPU has FMA (LLVM's ``fmuladd``): half the operations of a
multiply and an add, which made the compute-bound fused SPSN forward 17 % faster on the
development CPU (and its spikes did not change: 0 of 41 million draws differed); where there is
no FMA the step rounds twice, so the last bit of the result may differ between machines.  It
is used for float32 only; float64 keeps ``math.exp`` (the kernels pass ``fast=False``).
Arguments are clamped to [-87, 88], so the result stays a normal float32 (a sigmoid evaluated
through it is then 1/(1 + e^88) instead of denormal or 0 for inputs below -88, immaterial for
spikes and their gradients).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_JIT = dict(fastmath=False, cache=True, nogil=True, error_model="numpy")

# [log2(e), ln2_hi, ln2_lo, clamp_lo, clamp_hi, 0.5, 1, 1/2!, 1/3!, 1/4!, 1/5!, 1/6!]
EXP_CONSTS = (1.0 / math.log(2.0), 0.693359375, -2.12194440e-4, -87.0, 88.0, 0.5, 1.0,
              1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720)


def exp_consts(dtype) -> tuple:
    """:data:`EXP_CONSTS` as a tuple of ``dtype`` scalars.

    A tuple, not an array: numba passes it by value, so inside a kernel loop its items are
    registers.  Items of an array argument are loads that LLVM must assume the loop's stores may
    overwrite, and with the dozen of them in the polynomial it gave up vectorizing the loops
    that call :func:`exp1` (seen with numba 0.68 / LLVM 20: the fused SPSN kernels ran scalar).
    """
    return tuple(np.dtype(dtype).type(v) for v in EXP_CONSTS)


@intrinsic
def pow2i(typingctx, n, like):
    """``2.0 ** n`` in the float type of ``like`` for an integer ``n`` in the normal exponent range."""
    if not isinstance(n, types.Integer) or like not in (types.float32, types.float64):
        return None

    def codegen(context, builder, sig, args):
        nv = args[0]
        if sig.args[1] == types.float32:
            ity, bias, shift, fty = ir.IntType(32), 127, 23, ir.FloatType()
        else:
            ity, bias, shift, fty = ir.IntType(64), 1023, 52, ir.DoubleType()
        w = nv.type.width
        if w > ity.width:
            nv = builder.trunc(nv, ity)
        elif w < ity.width:
            nv = builder.sext(nv, ity)
        bits = builder.shl(builder.add(nv, ir.Constant(ity, bias)), ir.Constant(ity, shift))
        return builder.bitcast(bits, fty)

    return like(n, like), codegen


@intrinsic
def u32_to_float(typingctx, n, like):
    """The uint32 ``n`` converted to the float type of ``like`` (exact below 2**24), without
    numpy's promotion of ``uint32 * float32`` to float64."""
    if n != types.uint32 or like not in (types.float32, types.float64):
        return None

    def codegen(context, builder, sig, args):
        fty = ir.FloatType() if sig.args[1] == types.float32 else ir.DoubleType()
        return builder.uitofp(args[0], fty)

    return like(n, like), codegen


@intrinsic
def muladd(typingctx, a, b, c):
    """``a * b + c`` of one float type, fused into one rounding where the CPU has FMA (LLVM's
    ``fmuladd``; two roundings elsewhere)."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, sig, args):
        fty = args[0].type
        name = "llvm.fmuladd.f32" if sig.args[0] == types.float32 else "llvm.fmuladd.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fty, [fty, fty, fty]), name)
        return builder.call(fn, args)

    return a(a, b, c), codegen


@njit(inline="always")
def exp1(y, c, fast):
    """Scalar ``exp(y)``: with ``fast``, the vectorizable approximation of the module docstring
    (one ``muladd`` per polynomial step), else ``math.exp``.  :func:`exp_row` is a loop of it."""
    if fast:
        y = min(max(y, c[3]), c[4])
        nf = np.floor(muladd(y, c[0], c[5]))
        r = muladd(nf, -c[2], muladd(nf, -c[1], y))
        p = muladd(c[11], r, c[10])
        p = muladd(p, r, c[9])
        p = muladd(p, r, c[8])
        p = muladd(p, r, c[7])
        p = muladd(p, r, c[6])
        p = muladd(p, r, c[6])
        return p * pow2i(np.int32(nf), y)
    return math.exp(y)


@njit(**_JIT)
def exp_row(x, sign, out, c, fast):
    """``out[k] = exp(sign * x[k])`` (``sign`` is +1 or -1 of x's dtype); ``c = exp_consts(dtype)``."""
    for k in range(out.shape[0]):
        out[k] = exp1(sign * x[k], c, fast)


# Surrogate codes (``_common.SURROGATE_CODES``) as named compile-time constants of the kernels.
FAST_SIGMOID, ATAN, SIGMOID, TRIANGLE = 0, 1, 2, 3


@njit(inline="always")
def surrogate_grad(code, z, c, ec, fast):
    """Surrogate derivative of ``H`` at ``z = v - threshold`` (the formulas of
    :func:`spikescan.surrogate.surrogate_grad`); ``c`` a ``_common.SurrogateConsts``."""
    one = c.one
    if code == FAST_SIGMOID:
        r = one / (c.param * abs(z) + one)
        return r * r
    elif code == ATAN:
        y = z * c.atan_scale
        return c.half_param / (one + y * y)
    elif code == SIGMOID:
        e = exp1(-(c.param * z), ec, fast)
        q = one / (one + e)
        return c.param * q * (one - q)
    y = one - abs(z) * c.inv_param
    return max(y, one - one) * c.inv_param
