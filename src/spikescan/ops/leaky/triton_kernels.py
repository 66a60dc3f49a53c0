"""Time-fused leaky integration on the GPU (Triton): the contract of ``numba_kernels``."""

from __future__ import annotations

import triton
import triton.language as tl

from .._kernels._triton_util import LAUNCH, block_for, grid


@triton.jit
def _scan_fwd(x_ptr, d_ptr, c_ptr, v0_ptr, u_ptr, T, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    d = tl.load(d_ptr + offs, mask=mask, other=0.0)
    c = tl.load(c_ptr + offs, mask=mask, other=0.0)
    u = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    xp = x_ptr + offs
    up = u_ptr + offs
    for _t in range(T):
        y = c * tl.load(xp, mask=mask, other=0.0)
        u = d * u + y
        tl.store(up, u, mask=mask)
        xp += N
        up += N


@triton.jit
def _scan_bwd(gu_ptr, u_ptr, x_ptr, d_ptr, c_ptr, v0_ptr, gx_ptr, gd_ptr, gc_ptr, gv0_ptr, T, N, g_stride,
              NEED_U: tl.constexpr, NEED_X: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    d = tl.load(d_ptr + offs, mask=mask, other=0.0)
    c = tl.load(c_ptr + offs, mask=mask, other=0.0)
    v0 = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    r = tl.zeros_like(d)
    acc_d = tl.zeros_like(d)
    acc_c = tl.zeros_like(d)
    last = (T - 1).to(tl.int64) * N
    gq = gu_ptr + (T - 1).to(tl.int64) * g_stride + offs
    uq = u_ptr + last + offs
    xq = x_ptr + last + offs
    gxq = gx_ptr + last + offs
    for tt in range(T):
        t = T - 1 - tt
        r = tl.load(gq, mask=mask, other=0.0) + d * r
        tl.store(gxq, c * r, mask=mask)
        if NEED_U:
            has_prev = (offs * 0 + t) > 0
            prev = tl.where(has_prev, tl.load(uq - N, mask=mask & has_prev, other=0.0), v0)
            acc_d += r * prev
        if NEED_X:
            acc_c += r * tl.load(xq, mask=mask, other=0.0)
        gq -= g_stride
        uq -= N
        xq -= N
        gxq -= N
    tl.store(gd_ptr + offs, acc_d, mask=mask)
    tl.store(gc_ptr + offs, acc_c, mask=mask)
    tl.store(gv0_ptr + offs, d * r, mask=mask)


def forward(*, x, decay, scale, v0):
    """``u`` ``[T, N]`` of the recurrence (contract of ``numba_kernels.forward``)."""
    T, N = x.shape
    u = x.new_empty(T, N)
    block = block_for(N)
    _scan_fwd[grid(N, block)](x, decay, scale, v0, u, T, N, BLOCK=block, **LAUNCH)
    return u


def backward(*, steps: int, grad_u, u, x, decay, scale, v0):
    """``(gx, g_decay, g_scale, g_v0)`` (contract of ``numba_kernels.backward``)."""
    T, N = steps, decay.shape[0]
    gx = x.new_empty(T, N)
    gd, gc, gv0 = (x.new_empty(N) for _ in range(3))
    block = block_for(N)
    _scan_bwd[grid(N, block)](grad_u, u, x, decay, scale, v0, gx, gd, gc, gv0, T, N, N if grad_u.shape[0] == T else 0,
                              NEED_U=u.shape[0] == T, NEED_X=x.shape[0] == T, BLOCK=block, **LAUNCH)
    return gx, gd, gc, gv0
