"""Host-side helpers every fused op shares: kernel dtypes, the ``[T, N]`` layout, numpy views.

Every kernel (numba or Triton) works on C-contiguous ``[T, N]`` arrays with per-neuron ``[N]``
parameter vectors (see ``_common``).  These helpers bring tensors into that layout without a
copy where they already are in it, and hand them to numba as numpy views.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

KERNEL_DTYPES = (torch.float32, torch.float64)


def kernel_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel computes ``dtype`` in: itself for float32/float64, else float32."""
    return dtype if dtype in KERNEL_DTYPES else torch.float32


def empty(shape, like: Tensor) -> Tensor:
    """An uninitialised output buffer (large CPU ones backed by huge pages, see ``_cpu.empty``)."""
    from ._cpu import empty as cpu_empty

    return cpu_empty(shape, like)


def flat(t: Tensor, T: int, N: int, dtype: torch.dtype) -> Tensor:
    """``t`` as a C-contiguous ``[T, N]`` tensor of ``dtype`` (a view when it already is one)."""
    t = t.detach()
    if t.dtype == dtype and t.is_contiguous():
        return t.view(T, N)
    out = empty((T, N), t.new_empty((), dtype=dtype))
    out.view(t.shape).copy_(t)
    return out


def grad_rows(g: Tensor, T: int, N: int, dtype: torch.dtype) -> Tensor:
    """An incoming gradient as ``[T, N]``, or as one ``[1, N]`` row when it is the same at every
    step (e.g. the expanded gradient of ``s.sum()``, or a row of zeros for an output that got no
    gradient), which the kernels then read from cache."""
    if g.dim() > 0 and (g.shape[0] == 1 or g.stride(0) == 0):
        return flat(g[:1], 1, N, dtype)
    return flat(g, T, N, dtype)


def per_neuron(p: Tensor, rest, dtype: torch.dtype) -> Tensor:
    """A parameter broadcastable to ``rest`` as a contiguous per-neuron ``[N]`` vector.

    Differentiable: autograd sums its ``[N]`` gradient back to the parameter's own shape.
    """
    return p.to(dtype).expand(rest).reshape(math.prod(rest)).contiguous()


def needs_grad(*tensors) -> bool:
    """Whether autograd will want a gradient of any of ``tensors`` (``None`` entries ignored)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def numpy_views(*tensors):
    return tuple(t.numpy() for t in tensors)


def numpy_dtype(dtype: torch.dtype) -> str:
    return "float32" if dtype == torch.float32 else "float64"


def scalars(dtype: torch.dtype, values) -> tuple:
    """Kernel constants as a tuple of numpy scalars of ``dtype``.

    A tuple is passed to numba by value, so its items are registers inside a kernel's loops; the
    items of an array argument are loads that LLVM must assume the loop's stores may change,
    which can keep it from vectorizing the loop (see ``_numba_math.exp_consts``).
    """
    scalar = np.dtype(numpy_dtype(dtype)).type
    return tuple(scalar(v) for v in values)


def exp_args(dtype: torch.dtype):
    """``(constants, fast)`` for the kernels' ``exp_row``: the vectorized exp in float32 only."""
    from ._numba_math import exp_consts

    return exp_consts(numpy_dtype(dtype)), dtype == torch.float32


def run_cpu(N: int, T: int, fn, max_block: int = 4096) -> None:
    """Run a numba kernel over neurons ``0 .. N-1`` on the thread pool; an empty batch (``N = 0``)
    has nothing to run (its outputs are empty and its parameter gradients, sums over no neuron, zero)."""
    if N == 0:
        return
    from ._cpu import parallel_for

    parallel_for(N, T * N, fn, max_block)


def check_neuron_count(N: int) -> None:
    if N >= 2**31:
        raise ValueError(f"the fused kernels index neurons with 32-bit integers; got {N} neurons per step")


def eager_function(name: str, forward_impl, setup_context, backward):
    """The eager twin of a fused custom op: an ``autograd.Function`` over the same implementation.

    ``torch.library`` custom ops are what ``torch.compile`` traces, but their first eager call
    imports the compiler stack (~1 s, sympy and dynamo) and each call pays a dispatch; outside a
    compiled region the ops run through this Function instead: the same ``forward_impl`` (the op's
    body), the same ``setup_context`` and the same ``backward`` (given the backward's body, not
    its op).  Gradients that no output received arrive as ``None`` (not materialised zeros).
    """
    from torch.autograd.function import once_differentiable

    def forward(ctx, *inputs):
        ctx.set_materialize_grads(False)
        out = forward_impl(*inputs)
        setup_context(ctx, inputs, out)
        return out

    def backward_(ctx, *grads):
        return backward(ctx, *grads)

    return type(name, (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "backward": staticmethod(once_differentiable(backward_)),
    })
