"""The SPSN step composed of the unfused ops: the reference the fused kernel is tested against.

Two sequential leaky integrations, then the firing op fed with the uniforms the fused kernel
draws for the same seed (:func:`~spikescan.ops.spsn.fused.spsn_uniforms`), so both compute the
same spikes -- up to a draw lying within rounding of the firing boundary, where the kernel's
``exp``/``log`` and torch's may decide differently -- and the same gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._params import compute_dtype
from ..firing import gumbel_spike, sigmoid_bernoulli
from ..leaky import leaky_integrate
from .fused import spsn_uniforms


def spsn_reference(x: Tensor, alpha: Tensor, beta: Tensor, seed: Tensor, *, gumbel: bool, tau: float,
                   logit_scale: float, i0: Tensor | None = None, u0: Tensor | None = None,
                   t0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The ``"reference"`` backend of :func:`spikescan.ops.spsn.spsn_step` (arguments validated there)::

        i = leaky_integrate(x, alpha, v0=i0)                i[t] = alpha i[t-1] + x[t]
        u = leaky_integrate(i, beta, scale=1 - beta, v0=u0) u[t] = beta u[t-1] + (1 - beta) i[t]
        s = sigmoid_bernoulli(u, noise=U)                   "sb"
        s = gumbel_spike(u, tau, logit_scale, noise=logit(U))   "gs"

    with ``U = spsn_uniforms(seed, x.shape, t0=t0)``.  Autograd through every op (double backward
    works); materialises ``U`` and every intermediate ``[T, ...]`` tensor.  Returns ``(s, i[T-1],
    u[T-1])``: the spikes in ``x.dtype``, the final state in the compute dtype.
    """
    dtype = compute_dtype(x.dtype)
    start = 0 if t0 is None else int(t0.item())
    U = spsn_uniforms(int(seed.item()), x.shape, dtype=dtype, device=x.device, t0=start)
    with torch.autocast(x.device.type, enabled=False):  # the states stay in the compute dtype
        i = leaky_integrate(x.to(dtype), alpha, v0=i0, backend="sequential")
        u = leaky_integrate(i, beta, scale=1.0 - beta, v0=u0, backend="sequential")
        if gumbel:
            s = gumbel_spike(u, tau=tau, logit_scale=logit_scale, noise=torch.logit(U))
        else:
            s = sigmoid_bernoulli(u, noise=U)
    return s.to(x.dtype), i[-1], u[-1]
