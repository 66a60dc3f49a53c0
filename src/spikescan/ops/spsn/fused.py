"""The time-fused SPSN step as ``torch.library`` custom ops, and the uniforms it draws.

Both integrations, the sigmoid and the Bernoulli / Gumbel draw of every step run in ONE kernel
that reads ``x`` once and writes the spikes once; the backward (BPTT) is one reverse-time kernel.
No random tensor is ever stored: the uniform of step ``t``, neuron ``n`` is a counter-based hash
of ``(seed, t, n)`` (``_kernels._common``), which the backward regenerates.

``spikescan::spsn_fused_forward`` and ``spikescan::spsn_fused_backward`` are custom ops with
fake (meta) kernels and a registered autograd formula, so ``torch.compile`` traces through them
without a graph break and ``torch.library.opcheck`` checks them.  The seed enters them as a 0-dim
int64 tensor (a traced ``torch.randint`` when the caller gives none); the ops turn it into the
per-step keys on the host.  Their implementation is the ``numba_kernels`` (CPU) or
``triton_kernels`` (CUDA) module of this package, which share one host signature
(:class:`SPSNKernelConfig` for the constants).

What the forward keeps for the backward, per (t, neuron): on the CPU the input (the caller's own
tensor when it is contiguous float32/float64) and checkpoints of ``(i, u)`` every 32 steps (0.25
bytes in float32; the backward recomputes each segment); on CUDA the current and the membrane of
every step (8 bytes).  The backward is not itself differentiable (no double backward).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .._backend import kernel_module, stores_states
from .._kernels import _common as KC
from .._kernels._host import check_neuron_count, eager_function, grad_rows, kernel_dtype, per_neuron

_PACKAGE = __package__


class SPSNKernelConfig(NamedTuple):
    """Constants of the SPSN kernels.

    Attributes:
        gumbel: binary Gumbel-softmax firing (``"gs"``), else Sigmoid-Bernoulli (``"sb"``).
        tau: the Gumbel-softmax temperature (> 0; enters the backward only).
        logit_scale: ``c`` of the Gumbel-softmax logit ``c * u + logit(U)`` (> 0).
    """

    gumbel: bool = False
    tau: float = 1.0
    logit_scale: float = 1.0


def seed_tensor(seed: int) -> Tensor:
    """A seed (an int in ``[0, 2**64)``) as the 0-dim int64 tensor of its bit pattern."""
    seed = KC.normalize_seed(seed)
    return torch.tensor(seed - (1 << 64) if seed >= 1 << 63 else seed, dtype=torch.int64)


def random_seed(generator: torch.Generator | None = None, device="cpu") -> Tensor:
    """A fresh seed drawn from ``generator`` (or torch's global generator) as a 0-dim int64 tensor."""
    return torch.randint(0, 2**62, (), generator=generator, device=device)


def step_keys(seed: Tensor | int, T: int, device: torch.device, t0: Tensor | int | None = None) -> Tensor:
    """The two 32-bit keys of steps ``t0 .. t0 + T - 1``, ``[T, 2]`` int32 on ``device`` (read on the host)."""
    seed = int(seed.item()) if isinstance(seed, Tensor) else seed
    t0 = 0 if t0 is None else int(t0.item()) if isinstance(t0, Tensor) else int(t0)
    return torch.from_numpy(KC.step_keys(KC.normalize_seed(seed), T, t0)).to(device)


def spsn_uniforms(seed: int, shape, *, dtype: torch.dtype = torch.float32, device="cpu", t0: int = 0) -> Tensor:
    """The uniforms ``U[t, ...]`` in (0, 1) that the fused SPSN step draws for ``seed`` and ``shape``.

    ``U[t, n] = (2 * (h >> 9) + 1) * 2**-24`` with ``h = mix32(mix32(n ^ k1[t]) ^ k2[t])`` and
    ``(k1[t], k2[t])`` the SplitMix64 keys of ``(seed, t0 + t)`` (``_kernels._common``; ``n`` is
    the flat index of a neuron in ``shape[1:]``, ``t0`` the absolute index of the first step):
    2**23 equally spaced values in the open interval, the same numbers in float32 and float64.
    Materialised by the same kernel code (numba on CPU, Triton on CUDA) for tests and for
    reproducing a sample with the unfused ops: ``sigmoid_bernoulli(u, noise=U)`` and
    ``gumbel_spike(u, noise=torch.logit(U))`` see the same draws as the fused step.
    """
    seed = KC.normalize_seed(seed)
    shape = torch.Size(shape)
    if len(shape) < 1 or shape[0] < 1:
        raise ValueError(f"shape must be time-first [T, ...] with T >= 1, got {tuple(shape)}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    device = torch.device(device)
    T, N = shape[0], math.prod(shape[1:])
    check_neuron_count(N)
    out = torch.empty(T, N, dtype=dtype, device=device)
    kernel_module(_PACKAGE, device).uniforms(keys=step_keys(seed, T, device, t0), out=out)
    return out.view(shape)


def _forward_impl(x: Tensor, alpha: Tensor, beta: Tensor, seed: Tensor, gumbel: bool, tau: float,
                  logit_scale: float, i0: Tensor | None = None, u0: Tensor | None = None,
                  t0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(s, state_i, state_u)`` of the SPSN step over ``x`` ``[T, N]`` with ``[N]`` decays, from
    the state ``(i0, u0)`` ``[N]`` (``None``: 0) at absolute step ``t0`` (a 0-dim int64; ``None``: 0).
    The last rows of ``state_i``/``state_u`` are the final state."""
    K = kernel_module(_PACKAGE, x.device)
    keys = step_keys(seed, x.shape[0], x.device, t0)
    N = x.shape[1]
    return K.forward(x=x, alpha=alpha, beta=beta, keys=keys, config=SPSNKernelConfig(gumbel, tau, logit_scale),
                     i0=x.new_zeros(N) if i0 is None else i0, u0=x.new_zeros(N) if u0 is None else u0)


spsn_fused_forward = torch.library.custom_op("spikescan::spsn_fused_forward", _forward_impl, mutates_args=())


@spsn_fused_forward.register_fake
def _(x, alpha, beta, seed, gumbel, tau, logit_scale, i0=None, u0=None, t0=None):
    T, N = x.shape
    rows = T if stores_states(x.device) else -(-T // KC.SEGMENT) + 1
    return x.new_empty(T, N), x.new_empty(rows, N), x.new_empty(rows, N)


def _backward_impl(x: Tensor, grad_s: Tensor, alpha: Tensor, beta: Tensor, seed: Tensor, state_i: Tensor,
                   state_u: Tensor, gumbel: bool, tau: float, logit_scale: float, param_grads: bool,
                   i0: Tensor | None = None, u0: Tensor | None = None, t0: Tensor | None = None,
                   grad_i: Tensor | None = None,
                   grad_u: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(grad_x [T, N], grad_alpha [N], grad_beta [N], grad_i0 [N], grad_u0 [N])``; ``grad_s`` is
    ``[T, N]``, ``grad_i``/``grad_u`` ``[N]`` the gradients of the final state (``None``: 0)."""
    T, N = grad_s.shape
    K = kernel_module(_PACKAGE, grad_s.device)
    zeros = alpha.new_zeros(N)
    return K.backward(x=x, grad_s=grad_rows(grad_s, T, N, alpha.dtype), alpha=alpha, beta=beta,
                      keys=step_keys(seed, T, grad_s.device, t0), state_i=state_i, state_u=state_u,
                      config=SPSNKernelConfig(gumbel, tau, logit_scale), param_grads=param_grads,
                      i0=zeros if i0 is None else i0, u0=zeros if u0 is None else u0,
                      grad_i=zeros if grad_i is None else grad_i.to(alpha.dtype).contiguous(),
                      grad_u=zeros if grad_u is None else grad_u.to(alpha.dtype).contiguous())


spsn_fused_backward = torch.library.custom_op("spikescan::spsn_fused_backward", _backward_impl, mutates_args=())


@spsn_fused_backward.register_fake
def _(x, grad_s, alpha, beta, seed, state_i, state_u, gumbel, tau, logit_scale, param_grads, i0=None, u0=None,
      t0=None, grad_i=None, grad_u=None):
    T, N = grad_s.shape
    return grad_s.new_empty(T, N), alpha.new_empty(N), alpha.new_empty(N), alpha.new_empty(N), alpha.new_empty(N)


def _setup_context(ctx, inputs, output):
    x, alpha, beta, seed, gumbel, tau, logit_scale, *init = inputs
    i0, u0, t0 = (*init, None, None, None)[:3]
    s, state_i, state_u = output
    keep_x = x.new_empty(0, x.shape[1]) if stores_states(x.device) else x  # the kernels that read it
    ctx.save_for_backward(keep_x, alpha, beta, seed, state_i, state_u, i0, u0, t0)
    ctx.config = (gumbel, tau, logit_scale)
    ctx.steps = x.shape[0]


def _backward(ctx, g_s, g_state_i, g_state_u, backward_op=spsn_fused_backward):
    x, alpha, beta, seed, state_i, state_u, i0, u0, t0 = ctx.saved_tensors
    N = alpha.shape[0]
    gs = alpha.new_zeros(1, N).expand(ctx.steps, N) if g_s is None else g_s
    need = ctx.needs_input_grad
    need_a, need_b = need[1:3]
    # the final state is the last row of the states (the other rows are internal checkpoints)
    g_i = None if g_state_i is None else g_state_i[-1]
    g_u = None if g_state_u is None else g_state_u[-1]
    gx, ga, gb, gi0, gu0 = backward_op(x, gs, alpha, beta, seed, state_i, state_u, *ctx.config, need_a or need_b,
                                       i0, u0, t0, g_i, g_u)
    grads = (gx, ga if need_a else None, gb if need_b else None, None, None, None, None,
             gi0 if len(need) > 7 and need[7] else None, gu0 if len(need) > 8 and need[8] else None, None)
    return grads[:len(need)]


spsn_fused_forward.register_autograd(_backward, setup_context=_setup_context)
_SPSNFusedEager = eager_function("spsn_fused_forward", _forward_impl, _setup_context,
                                 lambda ctx, *grads: _backward(ctx, *grads, backward_op=_backward_impl))


def spsn_fused(x: Tensor, alpha: Tensor, beta: Tensor, seed: Tensor, *, gumbel: bool, tau: float,
               logit_scale: float, i0: Tensor | None = None, u0: Tensor | None = None,
               t0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The ``"fused"`` backend of :func:`spikescan.ops.spsn.spsn_step` (arguments validated there).

    Returns ``(s, i_last, u_last)``: the spikes in ``x.dtype`` and the final state
    ``x.shape[1:]`` in the compute dtype; half inputs are computed in float32.  The decays and
    the initial state, broadcast to ``x.shape[1:]``, enter the kernels as per-neuron vectors;
    autograd sums their gradients back to their own shapes.
    """
    T, rest = x.shape[0], x.shape[1:]
    N = math.prod(rest)
    check_neuron_count(N)
    kdtype = kernel_dtype(x.dtype)
    xf = x.to(kdtype).reshape(T, N).contiguous()
    a, b = per_neuron(alpha, rest, kdtype), per_neuron(beta, rest, kdtype)
    i0 = None if i0 is None else per_neuron(i0, rest, kdtype)
    u0 = None if u0 is None else per_neuron(u0, rest, kdtype)
    op = spsn_fused_forward if torch.compiler.is_compiling() else _SPSNFusedEager.apply
    s, st_i, st_u = op(xf, a, b, seed, bool(gumbel), float(tau), float(logit_scale), i0, u0, t0)
    return s.view(x.shape).to(x.dtype), st_i[-1].view(rest), st_u[-1].view(rest)
