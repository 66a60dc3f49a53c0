"""Time-fused SPSN step on the GPU (Triton): the equations of ``numba_kernels``.

Unlike the CPU kernel (which checkpoints every 32 steps and recomputes), the GPU forward stores
the currents ``i`` and membranes ``u`` of every step (8 bytes per (t, neuron) in float32) and the
backward reads them back, one row per step; the noise is regenerated from the counter in both
passes, never stored.  The random words are bit-identical to the CPU kernel's.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._kernels._triton_util import LAUNCH, block_for, grid


@triton.jit
def _mix32(h):
    h ^= h >> 16
    h *= 0x7FEB352D
    h ^= h >> 15
    h *= 0x846CA68B
    h ^= h >> 16
    return h


@triton.jit
def uniform(keys_ptr, t, offs):
    """The uniform in (0, 1) of step ``t`` for neurons ``offs`` (float32, exact)."""
    k1 = tl.load(keys_ptr + 2 * t).to(tl.uint32, bitcast=True)
    k2 = tl.load(keys_ptr + 2 * t + 1).to(tl.uint32, bitcast=True)
    h = _mix32(_mix32(offs.to(tl.uint32) ^ k1) ^ k2)
    return (((h >> 9) << 1) | 1).to(tl.float32) * (2.0 ** -24)


@triton.jit
def _uniforms(keys_ptr, out_ptr, T, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    op = out_ptr + offs
    for t in range(T):
        tl.store(op, uniform(keys_ptr, t, offs).to(out_ptr.dtype.element_ty), mask=mask)
        op += N


@triton.jit
def _spsn_fwd(x_ptr, a_ptr, b_ptr, keys_ptr, i0_ptr, u0_ptr, s_ptr, i_ptr, u_ptr, T, N, c,
              GS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    a = tl.load(a_ptr + offs, mask=mask, other=0.0)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0)
    omb = 1.0 - b
    i = tl.load(i0_ptr + offs, mask=mask, other=0.0)
    u = tl.load(u0_ptr + offs, mask=mask, other=0.0)
    xp = x_ptr + offs
    sp = s_ptr + offs
    ip = i_ptr + offs
    up = u_ptr + offs
    for t in range(T):
        i = a * i + tl.load(xp, mask=mask, other=0.0)
        y = omb * i
        u = b * u + y
        U = uniform(keys_ptr, t, offs).to(u.dtype)
        if GS:
            f = c * u + tl.log(U / (1.0 - U)) > 0
        else:
            f = U < 1.0 / (1.0 + tl.exp(-u))
        tl.store(sp, f.to(s_ptr.dtype.element_ty), mask=mask)
        tl.store(ip, i, mask=mask)
        tl.store(up, u, mask=mask)
        xp += N
        sp += N
        ip += N
        up += N


@triton.jit
def _spsn_bwd(gs_ptr, a_ptr, b_ptr, keys_ptr, i_ptr, u_ptr, i0_ptr, u0_ptr, gil_ptr, gul_ptr, gx_ptr, ga_ptr, gb_ptr,
              gi0_ptr, gu0_ptr, T, N, g_stride, c, tau, GS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    a = tl.load(a_ptr + offs, mask=mask, other=0.0)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0)
    omb = 1.0 - b
    # cu / ci carry b * dL/du[t+1] and a * dL/di[t+1]: from the final state's gradients to the initial's
    cu = tl.load(gul_ptr + offs, mask=mask, other=0.0)
    ci = tl.load(gil_ptr + offs, mask=mask, other=0.0)
    i_init = tl.load(i0_ptr + offs, mask=mask, other=0.0)
    u_init = tl.load(u0_ptr + offs, mask=mask, other=0.0)
    acc_a = tl.zeros_like(a)
    acc_b = tl.zeros_like(a)
    last = (T - 1).to(tl.int64) * N
    gq = gs_ptr + (T - 1).to(tl.int64) * g_stride + offs
    iq = i_ptr + last + offs
    uq = u_ptr + last + offs
    gxq = gx_ptr + last + offs
    ic = tl.load(iq, mask=mask, other=0.0)
    uc = tl.load(uq, mask=mask, other=0.0)
    for tt in range(T):
        t = T - 1 - tt
        first = (offs * 0 + t) == 0
        has_prev = mask & (~first)
        ip = tl.where(first, i_init, tl.load(iq - N, mask=has_prev, other=0.0))
        up = tl.where(first, u_init, tl.load(uq - N, mask=has_prev, other=0.0))
        g = tl.load(gq, mask=mask, other=0.0)
        if GS:
            U = uniform(keys_ptr, t, offs).to(uc.dtype)
            q = 1.0 / (1.0 + tl.exp(-((c * uc + tl.log(U / (1.0 - U))) / tau)))
            gu = g * ((c / tau) * q * (1.0 - q))
        else:
            p = 1.0 / (1.0 + tl.exp(-uc))
            gu = g * (p * p * (1.0 - p))
        ru = gu + cu
        acc_b += ru * (up - ic)
        ri = omb * ru + ci
        acc_a += ri * ip
        tl.store(gxq, ri, mask=mask)
        cu = b * ru
        ci = a * ri
        ic = ip
        uc = up
        gq -= g_stride
        iq -= N
        uq -= N
        gxq -= N
    tl.store(ga_ptr + offs, acc_a, mask=mask)
    tl.store(gb_ptr + offs, acc_b, mask=mask)
    tl.store(gi0_ptr + offs, ci, mask=mask)
    tl.store(gu0_ptr + offs, cu, mask=mask)


def uniforms(*, keys, out):
    """The contract of ``numba_kernels.uniforms``."""
    T, N = out.shape
    block = block_for(N)
    _uniforms[grid(N, block)](keys, out, T, N, BLOCK=block, **LAUNCH)
    return out


def forward(*, x, alpha, beta, keys, config, i0, u0):
    """The contract of ``numba_kernels.forward``, but ``state_i``/``state_u`` are the current
    and the membrane of every step, ``[T, N]`` each (the last row is the final state here too)."""
    T, N = x.shape
    s, i, u = x.new_empty(T, N), x.new_empty(T, N), x.new_empty(T, N)
    block = block_for(N)
    _spsn_fwd[grid(N, block)](x, alpha, beta, keys, i0, u0, s, i, u, T, N, float(config.logit_scale),
                              GS=bool(config.gumbel), BLOCK=block, **LAUNCH)
    return s, i, u


def backward(*, x, grad_s, alpha, beta, keys, state_i, state_u, config, param_grads: bool, i0, u0, grad_i,
             grad_u):
    """The contract of ``numba_kernels.backward``; reads the stored states and the initial state,
    not ``x`` (which may be empty), and always computes the parameter sums."""
    T, N = state_u.shape
    gx = state_u.new_empty(T, N)
    ga, gb, gi0, gu0 = (state_u.new_empty(N) for _ in range(4))
    block = block_for(N)
    _spsn_bwd[grid(N, block)](grad_s, alpha, beta, keys, state_i, state_u, i0, u0, grad_i, grad_u, gx, ga, gb, gi0,
                              gu0, T, N, N if grad_s.shape[0] == T else 0, float(config.logit_scale),
                              float(config.tau), GS=bool(config.gumbel), BLOCK=block, **LAUNCH)
    return gx, ga, gb, gi0, gu0
