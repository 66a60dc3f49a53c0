"""The parallel-over-time backends of leaky integration: FFT convolution and chunked scans.

Both compute the linear recurrence ``u[t] = decay * u[t-1] + y[t]`` (``y = scale * x``) in
parallel over time and share one backward, :class:`LinearScan`: the gradient of a causal
convolution is the anti-causal convolution with the same kernel, i.e. the *reverse-time* scan
``g_rev[t] = grad_u[t] + decay * g_rev[t+1]``, computed by the same kernel on flipped time.  Then
``grad(scale*x) = g_rev``, ``grad(v0) = decay * g_rev[0]`` and ``grad(decay) = sum_t g_rev[t] *
u[t-1]`` (with ``u[-1] = v0``), each summed back to the parameter's own shape.  The backward
calls the scan through autograd again, so double backward works too.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .fused import scan_kernel as _fused_scan_kernel
from .reference import leaky_reference

# Chunk length of the "chunked" backend when ``chunk_size`` is not given.  Measured on the
# development CPU (CPU time of 1 thread, float32, B*F = 32*128, per-neuron decay, forward +
# backward, T = 100 / 1000 / 10000 in ms): C = 8: 2.1 / 20.4 / 593, 16: 1.9 / 18.8 / 615,
# 32: 2.0 / 18.4 / 597, 64: 3.2 / 20.1 / 598, 128: 2.7 / 20.9 / 603 -- flat from 8 to 128 with
# the CPU's loop inner scan.  32 is also a natural tile for the GPU matmul (not measured).
_DEFAULT_CHUNK = 32


# --------------------------------------------------------------------------------------------
# Forward kernels.  Contract shared by every entry of ``_BACKENDS``:
#   y      [T, *rest] floating tensor (the already scaled input, ``scale * x``), T >= 1;
#   decay  tensor of y's dtype and device with exactly ``len(rest)`` dims, each 1 or equal to
#          rest's (per-neuron decay broadcast in the usual way), values in [0, 1];
#   v0     None or a tensor shaped like ``decay`` (dims 1 or equal to rest's);
#   chunk_size  None or an int >= 2 (a hint; kernels without chunks ignore it).
# Returns u [T, *rest] of y's dtype with u[t] = decay * u[t-1] + y[t], u[-1] = v0 (or 0).
# Kernels are called under no_grad by ``LinearScan`` (except the autograd-native reference),
# may work in place on their own temporaries, and must never form negative powers of decay.
# --------------------------------------------------------------------------------------------


def _fft_len(n: int) -> int:
    """Smallest 2**a * 3**b * 5**c >= n (sizes the FFT libraries handle fastest)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _scan_fft(y: torch.Tensor, decay: torch.Tensor, v0: Optional[torch.Tensor],
              chunk_size: Optional[int] = None) -> torch.Tensor:
    """Causal convolution with ``h[k] = decay**k`` by real FFTs of length >= 2T (SPSN eq. 13).

    Works in y's dtype (float32 or float64; half inputs arrive upcast to float32).
    Precision: an FFT convolution spreads round-off over the whole sequence, so each output's
    error is absolute, about eps times the size of the largest outputs, not relative to that
    output: outputs far smaller than max|u| (e.g. late steps of a quickly decaying response to
    one large early input) lose relative precision, unlike "sequential"/"chunked".  Measured
    on CPU (torch's MKL FFT), float32, error / max|u| against float64, decay in {0.95, 0.999,
    0.99999, 1}, x ~ N(0, 1) or U(0, 1): <= 4.5e-7 for T <= 10000, <= 5.6e-7 at T = 5e4,
    <= 7.6e-7 at T = 1e5 and 1e6 -- well inside 1e-5, so float32 needs no float64 upcast.
    cuFFT (CUDA) is not measured; its float32 accuracy is documented as comparable.
    """
    T = y.shape[0]
    if y.numel() == 0:  # MKL rejects empty batches
        return y.clone()
    n = _fft_len(2 * T)
    k = torch.arange(T, dtype=y.dtype, device=y.device).reshape((T,) + (1,) * decay.dim())
    h = decay.unsqueeze(0) ** k  # [T, *decay.shape]; 0**0 == 1, exponents never negative
    spec = torch.fft.rfft(y, n=n, dim=0)
    spec *= torch.fft.rfft(h, n=n, dim=0)
    u = torch.fft.irfft(spec, n=n, dim=0)[:T].clone()  # clone: don't keep the 2T buffer alive
    if v0 is not None:
        u += (decay * h) * v0  # decay**(t+1) * v0
    return u


def _chunk_matmul(L: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
    """``out[n, i, *rest] = sum_j L[i, j, *D] * yc[n, j, *rest]`` as one batched matmul.

    The dims where the decay varies (D > 1) become the matmul batch, everything else (chunks
    and the dims the decay is shared over) the matmul columns.  (``torch.einsum`` with the
    broadcast ``...`` computes the same but was 30x slower on CPU.)  Returns a permuted view.
    """
    n_chunks, C = yc.shape[:2]
    rest = yc.shape[2:]
    vary = [k for k in range(len(rest)) if L.shape[2 + k] != 1]
    shared = [k for k in range(len(rest)) if L.shape[2 + k] == 1]
    batch = math.prod(rest[k] for k in vary)
    lhs = L.permute([2 + k for k in vary] + [0, 1] + [2 + k for k in shared]).reshape(batch, C, C)
    order = [2 + k for k in vary] + [1, 0] + [2 + k for k in shared]
    rhs = yc.permute(order).reshape(batch, C, n_chunks * math.prod(rest[k] for k in shared))
    out = torch.bmm(lhs, rhs).reshape([yc.shape[k] for k in order])
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return out.permute(inverse)


def _local_matmul(yc: torch.Tensor, decay: torch.Tensor, p: torch.Tensor, out: torch.Tensor) -> None:
    """Chunk-local scan from a zero state by the C x C matrix ``L[i, j] = decay**(i-j)``, j <= i."""
    C = yc.shape[1]
    ones = (1,) * decay.dim()
    idx = torch.arange(C, device=yc.device)
    diff = idx[:, None] - idx[None, :]
    L = p[diff.clamp(min=0)] * (diff >= 0).to(yc.dtype).reshape((C, C) + ones)  # [C, C, *D]
    if all(s == 1 for s in decay.shape):  # one matrix for every neuron: a plain matmul, no copies
        cols = math.prod(yc.shape[2:])
        torch.matmul(L.reshape(C, C), yc.reshape(yc.shape[0], C, cols), out=out.view(out.shape[0], C, cols))
    else:  # one matrix per distinct decay value, batched (needs a transposing copy each way)
        out.copy_(_chunk_matmul(L, yc))


def _local_loop(yc: torch.Tensor, decay: torch.Tensor, p: torch.Tensor, out: torch.Tensor) -> None:
    """Chunk-local scan from a zero state, C steps each over all chunks at once."""
    out[:, 0].copy_(yc[:, 0])
    for i in range(1, yc.shape[1]):
        torch.addcmul(yc[:, i], decay, out[:, i - 1], out=out[:, i])


# How "chunked" computes the scan inside a chunk, per device type.  "matmul" is the C x C
# decay-matrix product (tensor-core friendly, one launch per level: the choice for GPUs, not
# measured here).  "loop" runs the C steps of the recurrence, each over all T/C chunks at once:
# O(T) work instead of O(T*C) and no layout change.  On the development CPU (1 thread, T = 10000,
# B*F = 32*128, forward only) the per-neuron matmul took ~1200 ms, almost all of it in the
# transposing copies that put the neuron dim in the matmul batch, the shared-decay matmul
# ~460 ms, and the loop ~95 ms for either; hence "loop" on CPU.  Both are tested on CPU.
_CHUNKED_INTRA = {"cpu": "loop", "cuda": "matmul"}
_LOCAL_SCANS = {"matmul": _local_matmul, "loop": _local_loop}


def _scan_chunked(y: torch.Tensor, decay: torch.Tensor, v0: Optional[torch.Tensor],
                  chunk_size: Optional[int] = None) -> torch.Tensor:
    """Chunked scan: chunk-local scans of C steps, joined by a carry scan over the chunks.

    With ``e[n]`` the chunk-local (zero-start) value at the end of chunk n, the state entering
    chunk n+1 is ``c[n] = decay**C * c[n-1] + e[n]`` (``c[-1] = v0``), a scan of length T/C
    computed by this same function with decay**C (depth log_C(T)); step i of chunk n then gains
    ``decay**(i+1) * c[n-1]``.  The chunk-local scan is ``_CHUNKED_INTRA[device]``: the C x C
    matrix product (O(T*C) work) or the C-step loop over all chunks (O(T)).  A last partial
    chunk is handled as a shorter chunk, no padding.  All powers are ``decay**k`` with
    0 <= k <= C, so nothing overflows and decay in {0, 1} is exact; each output sums at most
    C terms plus log_C(T) carries, so round-off stays at the level of the sequential loop.
    """
    T = y.shape[0]
    rest = y.shape[1:]
    C = min(chunk_size or _DEFAULT_CHUNK, T)
    n_full, tail = divmod(T, C)
    n_chunks = n_full + (tail > 0)
    local = _LOCAL_SCANS[_CHUNKED_INTRA.get(y.device.type, "matmul")]
    p = decay.unsqueeze(0) ** torch.arange(C + 1, dtype=y.dtype, device=y.device).reshape(
        (C + 1,) + (1,) * decay.dim())  # p[k] = decay**k
    u = torch.empty((T,) + rest, dtype=y.dtype, device=y.device)
    full = u[: n_full * C].view((n_full, C) + rest)
    if n_full:
        local(y[: n_full * C].reshape((n_full, C) + rest), decay, p, full)
    if tail:
        local(y[n_full * C:].unsqueeze(0), decay, p[: tail + 1], u[n_full * C:].unsqueeze(0))

    if n_chunks > 1:
        # Carry into chunks 1 .. n-1 = state at the end of chunks 0 .. n-2.
        carry = _scan_chunked(u[C - 1: (n_chunks - 1) * C: C], p[C], v0, chunk_size)
        full[1:].addcmul_(p[1:].unsqueeze(0), carry[: n_full - 1].unsqueeze(1))
        if tail:
            u[n_full * C:].addcmul_(p[1: tail + 1], carry[-1])
    if v0 is not None:
        first = min(C, T)
        u[:first].addcmul_(p[1: first + 1], v0)
    return u



Kernel = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[int]], torch.Tensor]

# Forward kernels (contract above) that the shared backward can run: the parallel backends, the
# reference (so the tests can compare the shared backward against plain autograd) and the fused
# forward (so its forward can be checked under the shared backward too).
SCAN_KERNELS: dict[str, Kernel] = {
    "sequential": leaky_reference,
    "fft": _scan_fft,
    "chunked": _scan_chunked,
    "fused": _fused_scan_kernel,
}


class LinearScan(torch.autograd.Function):
    """Forward by any kernel; backward by the reverse-time scan with the same kernel."""

    @staticmethod
    def forward(ctx, kernel: Kernel, y, decay, v0, chunk_size):
        u = kernel(y, decay, v0, chunk_size)
        ctx.kernel = kernel
        ctx.chunk_size = chunk_size
        ctx.save_for_backward(decay, v0, u if ctx.needs_input_grad[2] else None)
        return u

    @staticmethod
    def backward(ctx, grad_u):
        decay, v0, u = ctx.saved_tensors
        # g_rev[t] = grad_u[t] + decay * g_rev[t+1]: total derivative of the loss wrt u[t].
        g_rev = LinearScan.apply(ctx.kernel, grad_u.flip(0), decay, None, ctx.chunk_size).flip(0)
        grad_decay = grad_v0 = None
        if ctx.needs_input_grad[2]:
            gd = (g_rev[1:] * u[:-1]).sum(0)
            if v0 is not None:
                gd = gd + g_rev[0] * v0
            grad_decay = gd.sum_to_size(decay.shape)
        if v0 is not None and ctx.needs_input_grad[3]:
            grad_v0 = (decay * g_rev[0]).sum_to_size(v0.shape)
        return None, g_rev, grad_decay, grad_v0, None




def linear_scan(kernel: Kernel, x: torch.Tensor, decay: torch.Tensor, scale: Optional[torch.Tensor],
                v0: Optional[torch.Tensor], chunk_size: Optional[int] = None) -> torch.Tensor:
    """``kernel`` forward with the shared reverse-scan backward; arguments validated and aligned."""
    y = x if scale is None else x * scale
    return LinearScan.apply(kernel, y, decay, v0, chunk_size)
