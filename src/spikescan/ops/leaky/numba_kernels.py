"""Time-fused leaky integration on the CPU (numba): one pass forward, one reverse pass backward.

Forward, per neuron::

    u[t] = d * u[t-1] + (c * x[t])          u[-1] = v0

(``c * x[t]`` rounded first, then the multiply-add in two roundings: the same operations as the
reference ``leaky_integrate``, so the results agree bit for bit).

Backward, reverse time, ``r`` = total derivative wrt ``u[t]`` carried in a local::

    r      = gu[t] + d * r
    gx[t]  = c * r
    gd    += r * u[t-1]        (u[-1] = v0)
    gc    += r * x[t]
    gv0    = d * r             after t = 0

Memory kept for the backward: ``u`` (the output itself) when the decay needs a gradient and ``x``
(the input itself) when the scale does; nothing else.  ``u``/``x`` may be passed as a single row
(``[1, N]``) when their gradient is not needed, which the kernel then reads from L1 instead of
memory; likewise ``gu`` when the incoming gradient is broadcast over time.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = dict(fastmath=False, cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def scan_forward(x, decay, scale, v0, lo0, hi0, block, u):
    T = x.shape[0]
    for lo in range(lo0, hi0, block):
        hi = min(lo + block, hi0)
        m = hi - lo
        d = decay[lo:hi]
        c = scale[lo:hi]
        st = v0[lo:hi].copy()
        for t in range(T):
            xt = x[t, lo:hi]
            ut = u[t, lo:hi]
            for k in range(m):
                y = c[k] * xt[k]
                uv = d[k] * st[k] + y
                st[k] = uv
                ut[k] = uv


@njit(**_JIT)
def scan_backward(gu, u, x, decay, scale, v0, lo0, hi0, block, gx, gd, gc, gv0):
    T = gx.shape[0]
    g_step = 1 if gu.shape[0] == T else 0
    u_step = 1 if u.shape[0] == T else 0
    x_step = 1 if x.shape[0] == T else 0
    for lo in range(lo0, hi0, block):
        hi = min(lo + block, hi0)
        m = hi - lo
        d = decay[lo:hi]
        c = scale[lo:hi]
        r = np.zeros(m, gu.dtype)
        acc_d = np.zeros(m, gu.dtype)
        acc_c = np.zeros(m, gu.dtype)
        for t in range(T - 1, -1, -1):
            gut = gu[t * g_step, lo:hi]
            gxt = gx[t, lo:hi]
            xt = x[t * x_step, lo:hi]
            prev = v0[lo:hi] if t == 0 else u[(t - 1) * u_step, lo:hi]
            for k in range(m):
                rv = gut[k] + d[k] * r[k]
                r[k] = rv
                gxt[k] = c[k] * rv
                acc_d[k] += rv * prev[k]
                acc_c[k] += rv * xt[k]
        gd[lo:hi] = acc_d
        gc[lo:hi] = acc_c
        for k in range(m):
            gv0[lo + k] = d[k] * r[k]


# host launchers (same names and keyword arguments as ``triton_kernels``)


def forward(*, x, decay, scale, v0):
    """``u`` ``[T, N]``: ``u[t] = decay * u[t-1] + scale * x[t]``, ``u[-1] = v0``, for ``x``
    ``[T, N]`` (contiguous float32/float64) and per-neuron ``[N]`` parameters."""
    from .._kernels._host import empty, numpy_views, run_cpu

    T, N = x.shape
    u = empty((T, N), x)
    args = numpy_views(x, decay, scale, v0)
    un = u.numpy()
    run_cpu(N, T, lambda lo, hi, bs: scan_forward(*args, lo, hi, bs, un))
    return u


def backward(*, steps: int, grad_u, u, x, decay, scale, v0):
    """``(gx [steps, N], g_decay, g_scale, g_v0 [N])``.  ``grad_u`` is ``[T, N]`` or one ``[1, N]``
    row shared by every step; ``u`` (read for ``g_decay``) and ``x`` (for ``g_scale``) are
    ``[T, N]``, or one row of zeros when that gradient is not needed."""
    from .._kernels._host import empty, numpy_views, run_cpu

    N = decay.shape[0]
    T = steps
    gx = empty((T, N), decay)
    gd, gc, gv0 = (decay.new_empty(N) for _ in range(3))
    args = numpy_views(grad_u, u, x, decay, scale, v0)
    outs = numpy_views(gx, gd, gc, gv0)
    run_cpu(N, T, lambda lo, hi, bs: scan_backward(*args, lo, hi, bs, *outs))
    return gx, gd, gc, gv0
