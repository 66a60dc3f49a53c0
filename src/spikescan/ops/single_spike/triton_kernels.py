"""Time-fused FastSNN single-spike LIF on the GPU (Triton): the contract of ``numba_kernels``.

One program per block of neurons loops over ``T`` with the membrane in registers.  The forward
reads ``x`` and writes ``s``, the first-spike times and, when stored (a gradient will be needed,
or the caller asked), ``v``.  The reverse-time backward reads ``v`` (``v[t-1]`` is carried to the
next iteration), ``gs`` and ``gv`` (``[T, N]`` or one row read at every step: stride 0) and ``x``
(for the scale's sum) and writes ``gx``; the running sums ``A``, ``B`` of phi's adjoint are
float64, rounded to the kernel dtype at every step, as on the CPU (equations in
``numba_kernels``' docstring).  The max-membrane readout likewise, storing ``v`` for its
backward.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._kernels._triton_util import LAUNCH, block_for, grid, surrogate


@triton.jit
def _ss_fwd(x_ptr, d_ptr, c_ptr, th_ptr, v0_ptr, s_ptr, v_ptr, tf_ptr, T, N, STORE_V: tl.constexpr,
            BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    d = tl.load(d_ptr + offs, mask=mask, other=0.0)
    c = tl.load(c_ptr + offs, mask=mask, other=0.0)
    th = tl.load(th_ptr + offs, mask=mask, other=1.0)
    v = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    first = tl.zeros([BLOCK], dtype=tl.int32) + T
    xp = x_ptr + offs
    sp = s_ptr + offs
    vq = v_ptr + offs
    for t in range(T):
        v = d * v + c * tl.load(xp, mask=mask, other=0.0)
        hit = (v >= th) & (first == T)
        tl.store(sp, hit.to(s_ptr.dtype.element_ty), mask=mask)
        first = tl.where(hit, t, first)
        if STORE_V:
            tl.store(vq, v, mask=mask)
            vq += N
        xp += N
        sp += N
    tl.store(tf_ptr + offs, first, mask=mask)


@triton.jit
def _ss_bwd(v_ptr, x_ptr, gs_ptr, gv_ptr, d_ptr, c_ptr, th_ptr, v0_ptr, lim_ptr, gx_ptr, gd_ptr, gc_ptr, gth_ptr,
            gv0_ptr, T, N, gs_stride, gv_stride, p, CODE: tl.constexpr, HAS_GV: tl.constexpr,
            PGRAD: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    d = tl.load(d_ptr + offs, mask=mask, other=0.0)
    c = tl.load(c_ptr + offs, mask=mask, other=0.0)
    th = tl.load(th_ptr + offs, mask=mask, other=1.0)
    v0 = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    lim = tl.load(lim_ptr + offs, mask=mask, other=0)
    r = tl.zeros_like(d)
    acc_d = tl.zeros_like(d)
    acc_c = tl.zeros_like(d)
    acc_th = tl.zeros_like(d)
    A = tl.zeros([BLOCK], dtype=tl.float64)
    B = tl.zeros([BLOCK], dtype=tl.float64)
    last = (T - 1).to(tl.int64) * N
    vq = v_ptr + last + offs
    xq = x_ptr + last + offs
    gsq = gs_ptr + (T - 1).to(tl.int64) * gs_stride + offs
    gvq = gv_ptr + (T - 1).to(tl.int64) * gv_stride + offs
    gxq = gx_ptr + last + offs
    cur = tl.load(vq, mask=mask, other=0.0)
    for tt in range(T):
        t = T - 1 - tt
        has_prev = (offs * 0 + t) > 0
        prev = tl.where(has_prev, tl.load(vq - N, mask=mask & has_prev, other=0.0), v0)
        gz = tl.where((offs * 0 + t) < lim, tl.load(gsq, mask=mask, other=0.0), 0.0)
        A += gz.to(tl.float64)
        B += A.to(d.dtype).to(tl.float64)
        q = B.to(d.dtype) * surrogate(cur - th, p, CODE)
        if HAS_GV:
            dv = q + tl.load(gvq, mask=mask, other=0.0)
        else:
            dv = q
        r = dv + d * r
        tl.store(gxq, c * r, mask=mask)
        if PGRAD:
            acc_d += r * prev
            acc_c += r * tl.load(xq, mask=mask, other=0.0)
            acc_th += q
        cur = prev
        vq -= N
        xq -= N
        gsq -= gs_stride
        gvq -= gv_stride
        gxq -= N
    if PGRAD:
        tl.store(gd_ptr + offs, acc_d, mask=mask)
        tl.store(gc_ptr + offs, acc_c, mask=mask)
        tl.store(gth_ptr + offs, acc_th, mask=mask)
    tl.store(gv0_ptr + offs, d * r, mask=mask)


@triton.jit
def _ro_fwd(x_ptr, d_ptr, c_ptr, v0_ptr, v_ptr, mx_ptr, cnt_ptr, T, N, STORE_V: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    d = tl.load(d_ptr + offs, mask=mask, other=0.0)
    c = tl.load(c_ptr + offs, mask=mask, other=0.0)
    v = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    m = tl.full([BLOCK], float("-inf"), dtype=v.dtype)
    n = tl.zeros_like(v)
    xp = x_ptr + offs
    vq = v_ptr + offs
    for _t in range(T):
        v = d * v + c * tl.load(xp, mask=mask, other=0.0)
        n = tl.where(v > m, 1.0, tl.where(v == m, n + 1.0, n))
        m = tl.maximum(m, v)
        if STORE_V:
            tl.store(vq, v, mask=mask)
            vq += N
        xp += N
    tl.store(mx_ptr + offs, m, mask=mask)
    tl.store(cnt_ptr + offs, n, mask=mask)


@triton.jit
def _ro_bwd(v_ptr, x_ptr, gm_ptr, d_ptr, c_ptr, v0_ptr, mx_ptr, cnt_ptr, gx_ptr, gd_ptr, gc_ptr, gv0_ptr, T, N,
            PGRAD: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    d = tl.load(d_ptr + offs, mask=mask, other=0.0)
    c = tl.load(c_ptr + offs, mask=mask, other=0.0)
    v0 = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    m = tl.load(mx_ptr + offs, mask=mask, other=0.0)
    w = tl.load(gm_ptr + offs, mask=mask, other=0.0) / tl.load(cnt_ptr + offs, mask=mask, other=1.0)
    r = tl.zeros_like(d)
    acc_d = tl.zeros_like(d)
    acc_c = tl.zeros_like(d)
    last = (T - 1).to(tl.int64) * N
    vq = v_ptr + last + offs
    xq = x_ptr + last + offs
    gxq = gx_ptr + last + offs
    cur = tl.load(vq, mask=mask, other=0.0)
    for tt in range(T):
        t = T - 1 - tt
        has_prev = (offs * 0 + t) > 0
        prev = tl.where(has_prev, tl.load(vq - N, mask=mask & has_prev, other=0.0), v0)
        r = tl.where(cur == m, w, 0.0) + d * r
        tl.store(gxq, c * r, mask=mask)
        if PGRAD:
            acc_d += r * prev
            acc_c += r * tl.load(xq, mask=mask, other=0.0)
        cur = prev
        vq -= N
        xq -= N
        gxq -= N
    if PGRAD:
        tl.store(gd_ptr + offs, acc_d, mask=mask)
        tl.store(gc_ptr + offs, acc_c, mask=mask)
    tl.store(gv0_ptr + offs, d * r, mask=mask)


def forward(*, x, decay, scale, threshold, v0, config, store_v: bool, need_grad: bool):
    """The contract of ``numba_kernels.forward``; ``v`` is written whenever ``store_v`` or
    ``need_grad`` (the backward reads it), ``checkpoints`` is always ``[0, N]``."""
    import torch

    T, N = x.shape
    keep_v = bool(store_v or need_grad)
    s = x.new_empty(T, N)
    v = x.new_empty(T, N) if keep_v else x.new_empty(1, N)
    first = torch.empty(N, dtype=torch.int32, device=x.device)
    block = block_for(N)
    _ss_fwd[grid(N, block)](x, decay, scale, threshold, v0, s, v, first, T, N, STORE_V=keep_v, BLOCK=block, **LAUNCH)
    return s, (v if keep_v else x.new_empty(0, N)), first, x.new_empty(0, N)


def backward(*, x, v, checkpoints, first, grad_s, grad_v, decay, scale, threshold, v0, config, param_grads: bool):
    """The contract of ``numba_kernels.backward``; reads ``v``, ``x`` and ``v0`` (not the checkpoints)."""
    import torch

    T, N = v.shape
    has_gv = grad_v is not None
    gv = grad_v if has_gv else v.new_zeros(1, N)
    lim = torch.full_like(first, T) if config.straight_through else first
    gx = v.new_empty(T, N)
    gd, gc, gth = (v.new_zeros(N) for _ in range(3))  # zeros: written only when param_grads
    gv0 = v.new_empty(N)
    block = block_for(N)
    _ss_bwd[grid(N, block)](v, x, grad_s, gv, decay, scale, threshold, v0, lim, gx, gd, gc, gth, gv0, T, N,
                            N if grad_s.shape[0] == T else 0, N if gv.shape[0] == T else 0,
                            float(config.surrogate_param), CODE=int(config.surrogate_code), HAS_GV=has_gv,
                            PGRAD=bool(param_grads), BLOCK=block, **LAUNCH)
    return gx, gd, gc, gth.neg_(), gv0


def readout_forward(*, x, decay, scale, v0, need_grad: bool):
    """The contract of ``numba_kernels.readout_forward``; ``v`` ``[T, N]`` when ``need_grad`` (the
    backward reads it), ``checkpoints`` always ``[0, N]``."""
    T, N = x.shape
    v = x.new_empty(T, N) if need_grad else x.new_empty(1, N)
    mx, cnt = x.new_empty(N), x.new_empty(N)
    block = block_for(N)
    _ro_fwd[grid(N, block)](x, decay, scale, v0, v, mx, cnt, T, N, STORE_V=bool(need_grad), BLOCK=block, **LAUNCH)
    return mx, cnt, (v if need_grad else x.new_empty(0, N)), x.new_empty(0, N)


def readout_backward(*, x, v, checkpoints, grad_max, decay, scale, v0, maximum, count, param_grads: bool):
    """The contract of ``numba_kernels.readout_backward``; reads ``v``, ``x`` and ``v0``."""
    T, N = v.shape
    gx = v.new_empty(T, N)
    gd, gc = v.new_zeros(N), v.new_zeros(N)  # zeros: written only when param_grads
    gv0 = v.new_empty(N)
    block = block_for(N)
    _ro_bwd[grid(N, block)](v, x, grad_max, decay, scale, v0, maximum, count, gx, gd, gc, gv0, T, N,
                            PGRAD=bool(param_grads), BLOCK=block, **LAUNCH)
    return gx, gd, gc, gv0
