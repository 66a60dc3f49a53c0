"""Time-fused exact LIF on the GPU (Triton): the contract of ``numba_kernels`` (see its docstring).

One program per block of neurons loops over ``T``; the post-reset state lives in registers.
Forward reads ``x`` once and writes ``s`` (and ``v`` when stored); the reverse-time backward
reads ``v`` (one row per step: ``v[t-1]`` is carried to the next iteration), ``gs`` and ``gv``
(each ``[T, N]``, or one ``[1, N]`` row read at every step: stride 0) and writes ``gx``; the per-neuron parameter gradients are accumulated in registers.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._kernels._triton_util import LAUNCH, block_for, grid, surrogate


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


def forward(*, x, decay, threshold, v_reset, v0, config, store_v: bool, need_grad: bool):
    """The contract of ``numba_kernels.forward``; ``v`` is written whenever ``store_v`` or
    ``need_grad`` (the backward reads it), ``checkpoints`` is always ``[0, N]``."""
    T, N = x.shape
    keep_v = bool(store_v or need_grad)
    s = x.new_empty(T, N)
    v = x.new_empty(T, N) if keep_v else x.new_empty(1, N)
    vlast = x.new_empty(N)
    block = block_for(N)
    _lif_fwd[grid(N, block)](x, decay, threshold, v_reset, v0, s, v, vlast, T, N, ZERO_RESET=bool(config.zero_reset),
                             STORE_V=keep_v, BLOCK=block, **LAUNCH)
    return s, (v if keep_v else x.new_empty(0, N)), vlast, x.new_empty(0, N)


def backward(*, x, v, checkpoints, grad_s, grad_v, grad_last, decay, threshold, v_reset, v0, config,
             param_grads: bool):
    """The contract of ``numba_kernels.backward``; reads ``v`` and ``v0`` (not ``x``)."""
    T, N = v.shape
    gv = grad_v if grad_v is not None else v.new_zeros(1, N)
    gx = v.new_empty(T, N)
    gd, gth, gvr, gv0 = (v.new_empty(N) for _ in range(4))
    block = block_for(N)
    _lif_bwd[grid(N, block)](v, grad_s, gv, grad_last, decay, threshold, v_reset, v0, gx, gd, gth, gvr, gv0, T, N,
                             N if grad_s.shape[0] == T else 0, N if gv.shape[0] == T else 0,
                             float(config.surrogate_param), ZERO_RESET=bool(config.zero_reset),
                             DETACH=bool(config.detach), CODE=int(config.surrogate_code), BLOCK=block, **LAUNCH)
    return gx, gd, gth, gvr, gv0
