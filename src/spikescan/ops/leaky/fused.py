"""Time-fused leaky integration as ``torch.library`` custom ops: one pass forward, one reverse pass backward.

``u[t] = decay * u[t-1] + scale * x[t]`` with the state in a register: one read of ``x``, one
write of ``u``.  The backward is its own reverse-time pass (not the flipped-scan backward the
parallel backends share), computing ``g_rev[t] = grad_u[t] + decay * g_rev[t+1]``,
``grad_x = scale * g_rev``, ``grad_decay = sum_t g_rev[t] u[t-1]``, ``grad_scale = sum_t
g_rev[t] x[t]``, ``grad_v0 = decay * g_rev[0]``.  It keeps ``u`` (the output itself) only when
the decay needs a gradient and ``x`` only when the scale does.  Not differentiable twice.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._backend import kernel_module
from .._kernels._host import check_neuron_count, eager_function, grad_rows, kernel_dtype, per_neuron

_PACKAGE = __package__


def _forward_impl(x: Tensor, decay: Tensor, scale: Tensor, v0: Tensor) -> Tensor:
    """``u`` ``[T, N]`` for ``x`` ``[T, N]`` and per-neuron ``[N]`` parameters."""
    return kernel_module(_PACKAGE, x.device).forward(x=x, decay=decay, scale=scale, v0=v0)


leaky_fused_forward = torch.library.custom_op("spikescan::leaky_fused_forward", _forward_impl, mutates_args=())


@leaky_fused_forward.register_fake
def _(x, decay, scale, v0):
    return torch.empty_like(x)


def _backward_impl(grad_u: Tensor, u: Tensor, x: Tensor, decay: Tensor, scale: Tensor, v0: Tensor,
                         steps: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(grad_x [T, N], grad_decay, grad_scale, grad_v0 [N])``; ``u``/``x`` may be one zero row."""
    N = decay.shape[0]
    return kernel_module(_PACKAGE, decay.device).backward(
        steps=steps, grad_u=grad_rows(grad_u, steps, N, decay.dtype), u=u, x=x, decay=decay, scale=scale, v0=v0)


leaky_fused_backward = torch.library.custom_op("spikescan::leaky_fused_backward", _backward_impl,
                                              mutates_args=())


@leaky_fused_backward.register_fake
def _(grad_u, u, x, decay, scale, v0, steps):
    N = decay.shape[0]
    return decay.new_empty(steps, N), decay.new_empty(N), decay.new_empty(N), decay.new_empty(N)


def _setup_context(ctx, inputs, output):
    x, decay, scale, v0 = inputs
    T, N = x.shape
    row = x.new_zeros(1, N)
    # u only for the decay's gradient, x only for the scale's: otherwise one row of zeros.
    ctx.save_for_backward(output if ctx.needs_input_grad[1] else row, x if ctx.needs_input_grad[2] else row,
                          decay, scale, v0)
    ctx.steps = T


def _backward(ctx, grad_u, backward_op=leaky_fused_backward):
    if grad_u is None:  # the output got no gradient
        return None, None, None, None
    u, x, decay, scale, v0 = ctx.saved_tensors
    return backward_op(grad_u, u, x, decay, scale, v0, ctx.steps)


leaky_fused_forward.register_autograd(_backward, setup_context=_setup_context)
_LeakyFusedEager = eager_function("leaky_fused_forward", _forward_impl, _setup_context,
                                  lambda ctx, grad_u: _backward(ctx, grad_u, backward_op=_backward_impl))


def leaky_fused(x: Tensor, decay: Tensor, scale: Tensor | None, v0: Tensor | None, chunk_size=None) -> Tensor:
    """The ``"fused"`` backend of :func:`spikescan.ops.leaky.leaky_integrate` (arguments validated
    there; ``scale=None`` means 1, ``v0=None`` means 0; ``chunk_size`` is ignored: no chunks)."""
    T, rest = x.shape[0], x.shape[1:]
    N = x[0].numel()
    check_neuron_count(N)
    kdtype = kernel_dtype(x.dtype)
    xf = x.to(kdtype).reshape(T, N).contiguous()
    d = per_neuron(decay, rest, kdtype)
    c = xf.new_ones(N) if scale is None else per_neuron(scale, rest, kdtype)
    v = xf.new_zeros(N) if v0 is None else per_neuron(v0, rest, kdtype)
    op = leaky_fused_forward if torch.compiler.is_compiling() else _LeakyFusedEager.apply
    return op(xf, d, c, v).view(x.shape).to(x.dtype)


def scan_kernel(y: Tensor, decay: Tensor, v0: Tensor | None, chunk_size=None) -> Tensor:
    """The fused forward as a bare scan kernel (``parallel.SCAN_KERNELS`` contract: no autograd of
    its own), so it can also run under the parallel backends' shared reverse-scan backward."""
    with torch.no_grad():
        return leaky_fused(y, decay, None, v0)
