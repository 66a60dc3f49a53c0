"""Vectorizable elementwise math for the numba kernels.

numba has no vector math library here (no SVML), so a loop calling ``math.exp`` stays scalar
(about 2.3 ns per float32 on the development CPU).  :func:`exp_row` computes ``exp`` with
Cody-Waite range reduction (``x = n ln2 + r``, ``|r| <= ln2/2``), a degree-6 Taylor polynomial
for ``exp(r)`` and ``2**n`` built from its exponent bits, all of which vectorize (0.4 ns per
float32, max relative error 2.2e-7, about 2 ulp).  It is used for float32 only; float64 keeps
``math.exp`` (the kernels pass ``fast=False``).  Arguments are clamped to [-87, 88], so the
result stays a normal float32 (a sigmoid evaluated through it is then 1/(1 + e^88) instead of
denormal or 0 for inputs below -88, immaterial for spikes and their gradients).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
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


@njit(**_JIT)
def exp_row(x, sign, out, c, fast):
    """``out[k] = exp(sign * x[k])`` (``sign`` is +1 or -1 of x's dtype); ``c = exp_consts(dtype)``."""
    m = out.shape[0]
    if fast:
        for k in range(m):
            y = min(max(sign * x[k], c[3]), c[4])
            nf = np.floor(y * c[0] + c[5])
            r = (y - nf * c[1]) - nf * c[2]
            p = c[11] * r + c[10]
            p = p * r + c[9]
            p = p * r + c[8]
            p = p * r + c[7]
            p = p * r + c[6]
            p = p * r + c[6]
            out[k] = p * pow2i(np.int32(nf), y)
    else:
        for k in range(m):
            out[k] = math.exp(sign * x[k])


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


@njit(inline="always")
def exp1(y, c, fast):
    """Scalar ``exp(y)``, the same operations as one element of :func:`exp_row` (so a loop of it
    vectorizes like ``exp_row`` and gives bit-identical results)."""
    if fast:
        y = min(max(y, c[3]), c[4])
        nf = np.floor(y * c[0] + c[5])
        r = (y - nf * c[1]) - nf * c[2]
        p = c[11] * r + c[10]
        p = p * r + c[9]
        p = p * r + c[8]
        p = p * r + c[7]
        p = p * r + c[6]
        p = p * r + c[6]
        return p * pow2i(np.int32(nf), y)
    return math.exp(y)
