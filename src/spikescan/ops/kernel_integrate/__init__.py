"""A membrane computed by a causal convolution with a (learnable) kernel over time lags.

``v[t] = sum_{j=0}^{min(t, K-1)} kernel[j] x[t - j]``.  With ``kernel[j] = scale * beta^j`` and
``K = T`` this is exactly leaky integration (:func:`spikescan.ops.leaky_integrate`,
FastSNN eq. 5 unrolled).  The FastSNN authors' code (webstorms/FastSNN ``layers.py``,
``LinearFastLIFNeurons``) computes every membrane this way, as a ``conv2d`` whose kernel, one
per layer, is initialised to ``beta^j`` and is an ``nn.Parameter`` that the optimiser trains; this
op is that layer's membrane, with gradients to ``x`` and to ``kernel``.

Backends (:mod:`spikescan.ops._backend`):

* ``"sequential"``: :func:`~.reference.kernel_integrate_reference`, a loop over steps (the reference).
* ``"toeplitz"``: one matrix product with the ``[T, T]`` lower-triangular Toeplitz matrix of the
  kernel, ``O(T^2)`` per neuron but a single GEMM (``auto`` up to ``T = 2048``).
* ``"fft"``: causal FFT convolution with zero padding to ``2T``, ``O(T log T)``.
"""

from __future__ import annotations

import math

import torch

from ..._checks import check_finite, check_time_first
from .._backend import register, register_auto, resolve
from .._params import compute_dtype, output_dtype
from .reference import kernel_integrate_reference

__all__ = ["kernel_integrate", "kernel_integrate_reference", "exponential_kernel"]

#: above this T the Toeplitz matrix (T^2 entries) gives way to the FFT
TOEPLITZ_MAX_STEPS = 2048


def exponential_kernel(beta: float, num_lags: int, scale: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """``scale * beta^j`` for ``j = 0 .. num_lags - 1``: the kernel of leaky integration."""
    lags = torch.arange(num_lags, dtype=torch.float64)
    return (scale * torch.tensor(beta, dtype=torch.float64) ** lags).to(dtype)


def _toeplitz(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    T, K = x.shape[0], kernel.shape[0]
    t = torch.arange(T, device=x.device)
    lag = t[:, None] - t[None, :]  # [t, s] = t - s
    valid = (lag >= 0) & (lag < K)
    m = torch.where(valid, kernel[lag.clamp(0, K - 1)], kernel.new_zeros(()))  # m[t, s] = kernel[t - s]
    return (m @ x.reshape(T, -1)).reshape(x.shape)


def _fft(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    T, K = x.shape[0], kernel.shape[0]
    n = 1 << math.ceil(math.log2(max(2 * T, 2)))
    k = kernel[:T] if K > T else kernel
    fx = torch.fft.rfft(x, n=n, dim=0)
    fk = torch.fft.rfft(k, n=n).reshape(-1, *(1,) * (x.dim() - 1))
    return torch.fft.irfft(fx * fk, n=n, dim=0)[:T]


register("kernel_integrate", "sequential", description="Python loop over steps (the reference)")(
    kernel_integrate_reference)
register("kernel_integrate", "toeplitz", description="one GEMM with the [T, T] Toeplitz matrix, O(T^2)")(_toeplitz)
register("kernel_integrate", "fft", description="causal FFT convolution, O(T log T)")(_fft)
register_auto("kernel_integrate",
              lambda x, **_: ["toeplitz", "fft"] if x.shape[0] <= TOEPLITZ_MAX_STEPS else ["fft"])


def kernel_integrate(x: torch.Tensor, kernel: torch.Tensor, *, backend: str = "auto",
                     check: bool | None = None) -> torch.Tensor:
    """Causal convolution over time: ``v[t] = sum_{j=0}^{min(t, K-1)} kernel[j] x[t - j]``.

    Args:
        x: input ``[T, *rest]`` (time first, T >= 1), floating; float16/bfloat16 are computed in
            float32 and the result cast back.
        kernel: ``[K]`` weights by lag (``K >= 1``; lags ``>= K`` weigh 0), floating, on ``x``'s
            device; may require grad.
        backend: ``"auto"``, ``"sequential"``, ``"toeplitz"`` or ``"fft"``.
        check: scan ``x`` and ``kernel`` for NaN/Inf (default: debug mode only).

    Returns:
        ``v`` with the shape and dtype of ``x``; gradients flow to ``x`` and ``kernel``.
    """
    check_time_first(x, "x")
    if not isinstance(kernel, torch.Tensor):
        raise TypeError(f"kernel must be a torch.Tensor [K], got {type(kernel).__name__}")
    if kernel.dim() != 1 or kernel.shape[0] < 1:
        raise ValueError(f"kernel must be 1-D [K] with K >= 1 (one weight per time lag), got shape "
                         f"{tuple(kernel.shape)}")
    if not kernel.is_floating_point():
        raise TypeError(f"kernel must be a floating tensor, got {kernel.dtype}")
    if kernel.device != x.device:
        raise ValueError(f"kernel is on {kernel.device} but x is on {x.device}")
    impl = resolve("kernel_integrate", backend, x).fn
    check_finite(x, "x", check)
    check_finite(kernel, "kernel", check)
    dtype = compute_dtype(x.dtype)
    return impl(x.to(dtype), kernel.to(dtype)).to(output_dtype(x))
