"""The time-fused exact LIF as ``torch.library`` custom ops: one kernel pass over T each way.

The exact LIF (with reset) is not a linear recurrence, so it cannot be scanned in parallel over
time; what makes it fast is running all ``T`` steps of a layer inside ONE kernel that reads the
input once, keeps each neuron's state in a register (or a cache-resident local), and writes the
spikes once -- and the backward (BPTT) likewise, in reverse time (temporal-parallelization
paper, ``../shared/papers/temporal_parallelization_lif_cuda_jax.txt``: "one thread per neuron
looping over T, saving only the pre-reset membrane"; on the CPU we save less still).

``spikescan::lif_fused_forward`` and ``spikescan::lif_fused_backward`` are custom ops with fake
(meta) kernels and a registered autograd formula, so ``torch.compile`` traces through them
without a graph break and ``torch.library.opcheck`` checks them; in eager mode the same bodies
run through an ``autograd.Function`` (``_host.eager_function``: no compiler import, no
dispatch).  Their implementation is the ``numba_kernels`` (CPU) or ``triton_kernels`` (CUDA)
module of this package, which share one host signature (:class:`LIFKernelConfig` for the
constants).

What the forward keeps for the backward, per (t, neuron): on the CPU the input (the caller's own
tensor when it is contiguous float32/float64) and a post-reset state checkpoint every 32 steps
(0.125 bytes in float32; the backward recomputes each segment's membranes); on CUDA the
pre-reset membrane (4 bytes).  Nothing when no gradient is needed.  The backward is not itself
differentiable (no double backward; the ``"sequential"`` reference supports it).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .._backend import kernel_module, stores_states
from .._kernels import _common as KC
from .._kernels._host import check_neuron_count, eager_function, grad_rows, kernel_dtype, needs_grad, per_neuron


class LIFKernelConfig(NamedTuple):
    """Compile-time constants of the LIF kernels.

    Attributes:
        zero_reset: hard reset to ``v_reset`` (else subtract the threshold).
        detach: the spike inside the reset carries no gradient.
        surrogate_code: ``_kernels._common.SURROGATE_CODES[surrogate.kind]``.
        surrogate_param: the surrogate's ``param`` (slope, alpha or width).
    """

    zero_reset: bool
    detach: bool = False
    surrogate_code: int = 0
    surrogate_param: float = 25.0


_PACKAGE = __package__


def _forward_impl(x: Tensor, decay: Tensor, threshold: Tensor, v_reset: Tensor, v0: Tensor, zero_reset: bool,
                      detach: bool, surrogate_code: int, surrogate_param: float, store_v: bool,
                      need_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(s, v, v_last, checkpoints)`` of the LIF over ``x`` ``[T, N]`` with ``[N]`` parameters."""
    K = kernel_module(_PACKAGE, x.device)
    config = LIFKernelConfig(zero_reset, detach, surrogate_code, surrogate_param)
    return K.forward(x=x, decay=decay, threshold=threshold, v_reset=v_reset, v0=v0, config=config,
                     store_v=store_v, need_grad=need_grad)


lif_fused_forward = torch.library.custom_op("spikescan::lif_fused_forward", _forward_impl, mutates_args=())


@lif_fused_forward.register_fake
def _(x, decay, threshold, v_reset, v0, zero_reset, detach, surrogate_code, surrogate_param, store_v, need_grad):
    T, N = x.shape
    keep_v = store_v or (need_grad and stores_states(x.device))
    ck_rows = -(-T // KC.SEGMENT) if need_grad and not stores_states(x.device) else 0
    return (x.new_empty(T, N), x.new_empty(T if keep_v else 0, N), x.new_empty(N), x.new_empty(ck_rows, N))


def _backward_impl(x: Tensor, v: Tensor, checkpoints: Tensor, grad_s: Tensor, grad_v: Tensor | None,
                       grad_last: Tensor, decay: Tensor, threshold: Tensor, v_reset: Tensor, v0: Tensor,
                       zero_reset: bool, detach: bool, surrogate_code: int, surrogate_param: float,
                       param_grads: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(grad_x [T, N], grad_decay, grad_threshold, grad_v_reset, grad_v0 [N])``."""
    T, N = x.shape
    K = kernel_module(_PACKAGE, x.device)
    config = LIFKernelConfig(zero_reset, detach, surrogate_code, surrogate_param)
    kdtype = x.dtype
    return K.backward(x=x, v=v, checkpoints=checkpoints, grad_s=grad_rows(grad_s, T, N, kdtype),
                      grad_v=None if grad_v is None else grad_rows(grad_v, T, N, kdtype),
                      grad_last=grad_last.contiguous(), decay=decay, threshold=threshold, v_reset=v_reset, v0=v0,
                      config=config, param_grads=param_grads)


lif_fused_backward = torch.library.custom_op("spikescan::lif_fused_backward", _backward_impl, mutates_args=())


@lif_fused_backward.register_fake
def _(x, v, checkpoints, grad_s, grad_v, grad_last, decay, threshold, v_reset, v0, zero_reset, detach,
      surrogate_code, surrogate_param, param_grads):
    T, N = x.shape
    return (x.new_empty(T, N), *(x.new_empty(N) for _ in range(4)))


def _setup_context(ctx, inputs, output):
    x, decay, threshold, v_reset, v0, zero_reset, detach, code, param, store_v, need_grad = inputs
    s, v, v_last, checkpoints = output
    keep_v = v if stores_states(x.device) else v.new_empty(0, v.shape[1])
    ctx.save_for_backward(x, keep_v, checkpoints, decay, threshold, v_reset, v0)
    ctx.config = (zero_reset, detach, code, param)


def _backward(ctx, g_s, g_v, g_last, g_ck, backward_op=lif_fused_backward):
    x, v, checkpoints, decay, threshold, v_reset, v0 = ctx.saved_tensors
    T, N = x.shape
    gs = x.new_zeros(1, N) if g_s is None else g_s
    gv = None if g_v is None or g_v.numel() == 0 else g_v
    gl = x.new_zeros(N) if g_last is None else g_last
    grads = backward_op(x, v, checkpoints, gs, gv, gl, decay, threshold, v_reset, v0, *ctx.config,
                               any(ctx.needs_input_grad[1:4]))
    return (*grads, None, None, None, None, None, None)


lif_fused_forward.register_autograd(_backward, setup_context=_setup_context)
_LIFFusedEager = eager_function("lif_fused_forward", _forward_impl, _setup_context,
                                lambda ctx, *grads: _backward(ctx, *grads, backward_op=_backward_impl))


def lif_fused(x: Tensor, decay: Tensor, threshold: Tensor, v_reset: Tensor, v0: Tensor | None, *,
              reset: str, surrogate, detach_reset: bool, need_membrane: bool = True):
    """The ``"fused"`` backend of :func:`spikescan.ops.lif.lif` (arguments validated there).

    Returns ``(s, v, v_post[T-1])`` in ``x.dtype``; ``v`` is empty unless ``need_membrane``.
    Half inputs are computed in float32.  Parameters broadcast to ``x.shape[1:]`` enter the
    kernels as per-neuron vectors; autograd sums their gradients back to their own shapes.
    """
    T, rest = x.shape[0], x.shape[1:]
    N = x[0].numel()
    check_neuron_count(N)
    code, sparam = KC.surrogate_constants(surrogate.kind, surrogate.param)
    kdtype = kernel_dtype(x.dtype)
    xf = x.to(kdtype).reshape(T, N).contiguous()
    d, th, vr = (per_neuron(p, rest, kdtype) for p in (decay, threshold, v_reset))
    v0v = xf.new_zeros(N) if v0 is None else per_neuron(v0, rest, kdtype)
    need_grad = needs_grad(x, decay, threshold, v_reset, v0)
    op = lif_fused_forward if torch.compiler.is_compiling() else _LIFFusedEager.apply
    s, v, last, _ = op(xf, d, th, vr, v0v, reset == "zero", bool(detach_reset), code, sparam,
                                      bool(need_membrane), need_grad)
    out = x.dtype
    v = v.view(x.shape).to(out) if need_membrane else v.new_empty(0, dtype=out)
    return s.view(x.shape).to(out), v, last.view(rest).to(out)
