"""Time-fused exact LIF on the GPU (Triton): the contract of ``lif_numba`` (see its docstring).

One program per block of neurons loops over ``T``; the post-reset state lives in registers.
Forward reads ``x`` once and writes ``s`` (and ``v`` when stored); the reverse-time backward
reads ``v`` (one row per step: ``v[t-1]`` is carried to the next iteration), ``gs`` and ``gv``
(each ``[T, N]``, or one ``[1, N]`` row read at every step: stride 0) and writes ``gx``; the per-neuron parameter gradients are accumulated in registers.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._triton_util import LAUNCH, block_for, grid


@triton.jit
def surrogate(x, p, CODE: tl.constexpr):
    """Surrogate derivative of ``H`` at ``x``; ``CODE`` as in ``_common.SURROGATE_CODES``."""
    if CODE == 0:  # fast sigmoid
        r = 1.0 / (p * tl.abs(x) + 1.0)
        g = r * r
    elif CODE == 1:  # atan
        y = x * (1.5707963267948966 * p)
        g = (0.5 * p) / (1.0 + y * y)
    elif CODE == 2:  # sigmoid
        sg = 1.0 / (1.0 + tl.exp(-(p * x)))
        g = p * sg * (1.0 - sg)
    else:  # triangle
        g = tl.maximum(1.0 - tl.abs(x) / p, 0.0) / p
    return g


@triton.jit
def _lif_fwd(x_ptr, d_ptr, th_ptr, vr_ptr, v0_ptr, s_ptr, v_ptr, vlast_ptr, T, N,
             ZERO_RESET: tl.constexpr, STORE_V: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    d = tl.load(d_ptr + offs, mask=mask, other=0.0)
    th = tl.load(th_ptr + offs, mask=mask, other=1.0)
    vr = tl.load(vr_ptr + offs, mask=mask, other=0.0)
    vp = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    xp = x_ptr + offs
    sp = s_ptr + offs
    vq = v_ptr + offs
    for _t in range(T):
        v = d * vp + tl.load(xp, mask=mask, other=0.0)
        f = v >= th
        tl.store(sp, f.to(s_ptr.dtype.element_ty), mask=mask)
        if STORE_V:
            tl.store(vq, v, mask=mask)
            vq += N
        if ZERO_RESET:
            vp = tl.where(f, vr, v)
        else:
            vp = tl.where(f, v - th, v)
        xp += N
        sp += N
    tl.store(vlast_ptr + offs, vp, mask=mask)


@triton.jit
def _lif_bwd(v_ptr, gs_ptr, gv_ptr, gl_ptr, d_ptr, th_ptr, vr_ptr, v0_ptr,
             gx_ptr, gd_ptr, gth_ptr, gvr_ptr, gv0_ptr, T, N, gs_stride, gv_stride, p,
             ZERO_RESET: tl.constexpr, DETACH: tl.constexpr, CODE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    d = tl.load(d_ptr + offs, mask=mask, other=0.0)
    th = tl.load(th_ptr + offs, mask=mask, other=1.0)
    vr = tl.load(vr_ptr + offs, mask=mask, other=0.0)
    v0 = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    a = tl.load(gl_ptr + offs, mask=mask, other=0.0)  # dL/dvp[t]
    acc_d = tl.zeros_like(a)
    acc_th = tl.zeros_like(a)
    acc_vr = tl.zeros_like(a)
    last = (T - 1).to(tl.int64) * N
    vq = v_ptr + last + offs
    gsq = gs_ptr + (T - 1).to(tl.int64) * gs_stride + offs
    gvq = gv_ptr + (T - 1).to(tl.int64) * gv_stride + offs
    gxq = gx_ptr + last + offs
    cur = tl.load(vq, mask=mask, other=0.0)
    for tt in range(T):
        t = T - 1 - tt
        has_prev = (offs * 0 + t) > 0
        prev = tl.load(vq - N, mask=mask & has_prev, other=0.0)
        if ZERO_RESET:
            prev_post = tl.where(has_prev, tl.where(prev >= th, vr, prev), v0)
        else:
            prev_post = tl.where(has_prev, tl.where(prev >= th, prev - th, prev), v0)
        f = cur >= th
        sg = surrogate(cur - th, p, CODE)
        g_s = tl.load(gsq, mask=mask, other=0.0)
        if not DETACH:
            if ZERO_RESET:
                g_s = g_s + a * (vr - cur)
            else:
                g_s = g_s - a * th
        if ZERO_RESET:
            dv = tl.where(f, 0.0, a) + g_s * sg
            acc_vr += tl.where(f, a, 0.0)
            acc_th -= g_s * sg
        else:
            dv = a + g_s * sg
            acc_th -= g_s * sg + tl.where(f, a, 0.0)
        dv += tl.load(gvq, mask=mask, other=0.0)
        tl.store(gxq, dv, mask=mask)
        acc_d += dv * prev_post
        a = d * dv
        cur = prev
        vq -= N
        gsq -= gs_stride
        gvq -= gv_stride
        gxq -= N
    tl.store(gd_ptr + offs, acc_d, mask=mask)
    tl.store(gth_ptr + offs, acc_th, mask=mask)
    tl.store(gvr_ptr + offs, acc_vr, mask=mask)
    tl.store(gv0_ptr + offs, a, mask=mask)


def forward(x, d, th, vr, v0, zero_reset: bool, s, v, vlast) -> None:
    T, N = x.shape
    block = block_for(N)
    _lif_fwd[grid(N, block)](x, d, th, vr, v0, s, v, vlast, T, N, ZERO_RESET=zero_reset,
                             STORE_V=v.shape[0] == T, BLOCK=block, **LAUNCH)


def backward(v, gs, gv, gl, d, th, vr, v0, zero_reset: bool, detach: bool, code: int, param: float,
             gx, gd, gth, gvr, gv0) -> None:
    T, N = v.shape
    block = block_for(N)
    _lif_bwd[grid(N, block)](v, gs, gv, gl, d, th, vr, v0, gx, gd, gth, gvr, gv0, T, N,
                             N if gs.shape[0] == T else 0, N if gv.shape[0] == T else 0, param,
                             ZERO_RESET=zero_reset, DETACH=detach, CODE=code, BLOCK=block, **LAUNCH)
