"""Leaky integration (a first-order linear recurrence) over time, computed in parallel.

    u[t] = decay * u[t-1] + scale * x[t],    t = 0 .. T-1,    u[-1] = v0 (default 0)

This is the leaky-integrator half of the Stochastic Parallelizable Spiking Neuron (SPSN paper,
eq. 8-15): with no reset the recurrence is a linear time-invariant system, so its solution is a
causal convolution of the input with the kernel ``h[k] = decay**k`` (eq. 10-12),

    u[t] = sum_{k=0..t} decay**(t-k) * scale * x[k]  +  decay**(t+1) * v0,

which can be evaluated in parallel over time.  The SPSN's two-stage integrator (eq. 5-7,
``i[t] = a*i[t-1] + x[t]``, ``u[t] = b*u[t-1] + (1-b)*i[t]``) is two calls::

    i = leaky_integrate(x, a)
    u = leaky_integrate(i, b, scale=1 - b)

(the paper's eq. 15 multiplies both kernels in one FFT; two calls compute the same thing).

Backends (``backend=``), all behind one public function :func:`leaky_integrate`:

``"sequential"``  the reference: a Python loop over t that follows the equation; autograd
                  differentiates through the loop.  O(T) steps of O(N) work, T kernel launches.
``"fft"``         the paper's method: causal (linear, not circular) convolution by
                  ``torch.fft.rfft``/``irfft`` zero-padded to >= 2T; ``v0`` adds
                  ``decay**(t+1) * v0``.  O(T log T).  See :func:`_scan_fft` for precision.
``"chunked"``     T is cut into chunks of C steps; inside a chunk a C x C lower-triangular matrix
                  ``L[i, j] = decay**(i-j)`` (one per distinct decay value) is applied with a
                  matmul, and the chunks are joined by a carry recurrence over T/C chunks (itself
                  computed by the same chunked scan with decay**C, so the depth is log_C(T)).
                  O(T*C) work.  On CPU the inside-chunk scan is instead a C-step loop over all
                  chunks at once (measured 5-13x faster there; see ``_CHUNKED_INTRA``).
``"fused"``       the time-fused kernel of :mod:`spikescan.ops.fused` (numba on the CPU, Triton
                  on CUDA): one pass over T with the state in a register, and its OWN one-pass
                  reverse-time backward (:func:`spikescan.ops.fused.leaky_integrate_backend`),
                  so no flipped copies and no autograd graph.  Not parallel over time: on a
                  CPU it is the fastest at every T >= 8 measured; on a GPU it needs enough
                  neurons (B*N) to fill the device.  No double backward.
``"auto"``        picks from :data:`_AUTO_TABLE` by device, T and B*N, measured on the
                  development machine (CPU) or estimated (CUDA).

The parallel backends share one backward (:class:`_LinearScan`): the gradient of a causal
convolution is the anti-causal convolution with the same kernel, i.e. the *reverse-time* scan
``g_rev[t] = grad_u[t] + decay * g_rev[t+1]``, computed by the same backend on flipped time.
Then ``grad(scale*x) = g_rev``, ``grad(v0) = decay * g_rev[0]`` and
``grad(decay) = sum_t g_rev[t] * u[t-1]`` (with ``u[-1] = v0``), each summed back to the
parameter's own shape.  The backward calls the scan through autograd again, so double backward
works too.

Extension point: :data:`_BACKENDS` maps a backend name to a *forward kernel*
``kernel(y, decay, v0, chunk_size) -> u`` (contract in the comment above it).  A new kernel only
has to compute the forward recurrence; registering it in ``_BACKENDS`` makes it a valid
``backend=`` and gives it the shared backward.  A backend with its own autograd function
(``"fused"``) is listed in :data:`_OWN_BACKWARD` as well; :func:`leaky_integrate` then calls
that instead (its ``_BACKENDS`` entry, the bare forward kernel, stays usable with the shared
backward).  To let ``"auto"`` use a backend, add rows to :data:`_AUTO_TABLE`.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch

from .._checks import as_param_tensor, check_choice, check_finite, check_time_first, compute_dtype

__all__ = ["leaky_integrate"]

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
# Kernels are called under no_grad by ``_LinearScan`` (except the autograd-native reference),
# may work in place on their own temporaries, and must never form negative powers of decay.
# --------------------------------------------------------------------------------------------


def _scan_sequential(y: torch.Tensor, decay: torch.Tensor, v0: Optional[torch.Tensor],
                     chunk_size: Optional[int] = None) -> torch.Tensor:
    """Reference: the recurrence as written, one step at a time (autograd runs through it)."""
    u = v0 if v0 is not None else y.new_zeros(())
    out = []
    for y_t in y.unbind(0):  # unbind, not y[t]: each y[t]'s backward would build a full [T, ...] grad
        u = decay * u + y_t
        out.append(u)
    return torch.stack(out)


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


def _scan_fused(y: torch.Tensor, decay: torch.Tensor, v0: Optional[torch.Tensor],
                chunk_size: Optional[int] = None) -> torch.Tensor:
    """Forward of the time-fused kernel (:func:`spikescan.ops.fused.scan_kernel`), imported on first use.

    Only the bare forward kernel: :func:`leaky_integrate` runs ``backend="fused"`` through the
    kernel's own autograd function (see :data:`_OWN_BACKWARD`), not through this entry.
    """
    from .fused import scan_kernel

    return scan_kernel(y, decay, v0, chunk_size)


Kernel = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[int]], torch.Tensor]

# name -> forward kernel (contract above).
_BACKENDS: dict[str, Kernel] = {
    "sequential": _scan_sequential,
    "fft": _scan_fft,
    "chunked": _scan_chunked,
    "fused": _scan_fused,
}
# Backends differentiated by autograd through their own ops instead of the shared backward
# (only the reference, so that the tests compare the shared backward against plain autograd).
_AUTOGRAD_NATIVE = frozenset({"sequential"})


def _leaky_fused(x: torch.Tensor, decay: torch.Tensor, scale: Optional[torch.Tensor],
                 v0: Optional[torch.Tensor]) -> torch.Tensor:
    from .fused import leaky_integrate_backend

    return leaky_integrate_backend(x, decay, scale, v0)


# Backends with their own autograd function: name -> fn(x, decay, scale, v0) -> u, called with
# the validated parameters (compute dtype, aligned to x.shape[1:]; scale None for 1, v0 None
# for 0).  The fused kernel's single reverse-time pass is 9x faster than the shared backward's
# flipped scans (B*N = 4096, T = 10000, forward + backward: 55 ms against 500 ms for chunked).
_OWN_BACKWARD: dict[str, Callable] = {"fused": _leaky_fused}


class _LinearScan(torch.autograd.Function):
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
        g_rev = _LinearScan.apply(ctx.kernel, grad_u.flip(0), decay, None, ctx.chunk_size).flip(0)
        grad_decay = grad_v0 = None
        if ctx.needs_input_grad[2]:
            gd = (g_rev[1:] * u[:-1]).sum(0)
            if v0 is not None:
                gd = gd + g_rev[0] * v0
            grad_decay = gd.sum_to_size(decay.shape)
        if v0 is not None and ctx.needs_input_grad[3]:
            grad_v0 = (decay * g_rev[0]).sum_to_size(v0.shape)
        return None, g_rev, grad_decay, grad_v0, None


# "auto" choices.  CPU rows measured on the development machine (2 cores, idle during the run),
# torch 2.13, 1 torch thread (the fused kernel then runs on 1 thread too), OMP_WAIT_POLICY=PASSIVE,
# float32, forward + backward, x [T, B*N/128, 128] and per-neuron decay [128] both requiring
# grad, backward with a random grad_out; min over up to 7 repeats, ms:
#
#   B*N     T    fused  chunked      fft  sequential
#   128     1    0.263    0.279    0.341    0.146
#   128     8    0.242    0.374    0.353    0.245
#   128    32    0.239    0.652    0.409    0.540
#   128   100    0.249    0.859    0.666    1.374
#   128  1000    0.345    1.485    4.589   13.55
#   128 10000    2.550   10.02    55.20   168.2
#   1024    1    0.262    0.275    0.368    0.152
#   1024    8    0.275    0.383    0.500    0.279
#   1024   32    0.285    0.707    1.007    0.649
#   1024  100    0.330    0.996    2.768    1.755
#   1024 1000    1.109    4.176   38.94    18.27
#   1024 10000  12.15   129.6    805.6    262.7
#   4096    1    0.270    0.281    0.472    0.153
#   4096    8    0.286    0.409    0.933    0.301
#   4096   32    0.376    0.810    2.868    0.745
#   4096  100    0.535    1.433    9.823    2.173
#   4096 1000    5.942   13.50    174.7     25.74
#   4096 10000  55.15   499.8   3381     499.9
#   32768    1    0.349    0.304    1.547    0.172
#   32768    8    0.507    0.610    5.147    0.538
#   32768   32    1.467    2.523   23.47      2.261
#   32768  100    5.000    8.254  111.1       7.754
#   32768 1000   47.16   387.6   2561      237.0
#   32768 10000 507.3  6491      (skip)  4662
#
# (fft at B*N = 32768, T = 10000 not run: ~25 s extrapolated.)  The fused kernel wins from
# T = 8 up at every B*N (2-11x over the next best from T = 1000 up); at T = 1 all
# are dominated by fixed costs and the plain loop (one multiply-add) is 0.1-0.2 ms faster than
# the kernel's dispatch.  A second run at T = 2 / 4 (B*N = 128 .. 32768): sequential
# 0.16-0.23 / 0.19-0.34 ms, fused 0.24-0.38 / 0.25-0.43, chunked 0.29-0.37 / 0.32-0.46; at
# T = 8 fused and sequential tie (0.24-0.52 ms), so the loop is picked up to T = 4.
# fft is the slowest everywhere on this CPU and is never auto-selected.  Without numba (the
# fused kernel unavailable) the older rows apply: sequential up to T = 32, then chunked.
# Half types compute in float32 and follow the float32 rows.
#
# CUDA rows are an ESTIMATE (no GPU on the development machine).  The fused Triton kernel runs
# one program per block of 64-256 neurons looping over T: it moves the minimum bytes but
# parallelises over neurons only, so with few neurons each step waits on memory latency
# (~T x 0.5-1 us in all), while chunked is parallel over T too but makes ~10 passes over memory
# and ~20 launches.  For an H100-class GPU (3 TB/s) that puts the crossover near B*N = 2**16
# neurons at any T (both costs grow with T), and below T ~ 64 the launches of chunked cost more
# than the fused loop at any B*N.  Re-measure (``spikescan bench speed-vs-t``) when a GPU is lent.


class _AutoRow(NamedTuple):
    device: str  # torch device type
    t_max: float  # rows apply for T <= t_max ...
    n_min: int  # ... and B*N (elements per time step) >= n_min
    backend: str


# Tried in order; the first row whose device type matches, T <= t_max and B*N >= n_min wins,
# rows naming "fused" are skipped where the fused kernel cannot run (no numba / no triton); no
# match means "chunked".
_AUTO_TABLE: tuple[_AutoRow, ...] = (
    _AutoRow("cpu", 4, 0, "sequential"),
    _AutoRow("cpu", math.inf, 0, "fused"),
    _AutoRow("cpu", 32, 0, "sequential"),  # without numba
    _AutoRow("cpu", math.inf, 0, "chunked"),
    _AutoRow("cuda", 64, 0, "fused"),
    _AutoRow("cuda", math.inf, 1 << 16, "fused"),
    _AutoRow("cuda", math.inf, 0, "chunked"),
)


def _fused_available(device: torch.device) -> bool:
    from .fused import is_available

    return is_available(device)


def _auto_backend(x: torch.Tensor) -> str:
    T = x.shape[0]
    n = math.prod(x.shape[1:])
    fused_ok = None
    for row in _AUTO_TABLE:
        if row.device != x.device.type or T > row.t_max or n < row.n_min:
            continue
        if row.backend == "fused":
            if fused_ok is None:
                fused_ok = _fused_available(x.device)
            if not fused_ok:
                continue
        return row.backend
    return "chunked"


def _check_fused_device(x: torch.Tensor) -> None:
    if not _fused_available(x.device):
        need = {"cpu": "numba (pip install numba)", "cuda": "triton and a visible CUDA device"}.get(
            x.device.type, "a CPU (numba) or CUDA (Triton) tensor")
        raise ValueError(f"backend='fused' cannot run on {x.device}: it needs {need}; use backend='chunked' "
                         f"or 'auto'")


_compute_dtype = compute_dtype  # float32 for the half types, else the input's own dtype


def _param(value, name: str, x: torch.Tensor, compute: torch.dtype, **bounds) -> torch.Tensor:
    """Validated parameter tensor in the compute dtype, aligned to ``x.shape[1:]``'s rank.

    Python numbers are built directly in the compute dtype (0.999 must not round to float16).
    """
    rest = x.shape[1:]
    t = as_param_tensor(value, name, x, dtype=compute, **bounds)  # also rejects shapes that would enlarge x's
    return t.to(compute).reshape((1,) * (len(rest) - t.dim()) + tuple(t.shape))


def leaky_integrate(x, decay, *, scale=1.0, v0=None, backend: str = "auto",
                    chunk_size: Optional[int] = None, check: Optional[bool] = None) -> torch.Tensor:
    """Leaky integration over time: ``u[t] = decay * u[t-1] + scale * x[t]``, ``u[-1] = v0``.

    SPSN paper eq. 8-15 (the LTI recurrence computed in parallel over time); see the module
    docstring for the backends and the gradients.

    Args:
        x: input ``[T, *rest]`` (time first, T >= 1), floating dtype.  float16/bfloat16 are
            computed in float32 and the result cast back.
        decay: float or tensor broadcastable to ``x.shape[1:]`` (e.g. ``[F]`` per neuron for
            ``x`` of ``[T, B, F]``), values in ``[0, 1]``; may require grad.
        scale: float or tensor broadcastable to ``x.shape[1:]``; may require grad.
        v0: initial state ``u[-1]``: None (zero) or float / tensor broadcastable to
            ``x.shape[1:]``; may require grad.
        backend: ``"auto"`` or a key of ``_BACKENDS`` (``"sequential"``, ``"fft"``, ``"chunked"``,
            ``"fused"``).
        chunk_size: chunk length for ``"chunked"`` (default ``_DEFAULT_CHUNK``); ignored by the
            others.
        check: scan ``x`` for NaN/Inf (default: only in debug mode, see ``spikescan.debug_mode``).

    Returns:
        ``u`` with the shape and dtype of ``x``.  Gradients flow to ``x``, ``decay``, ``scale``
        and ``v0`` (each summed back to its own shape).
    """
    check_time_first(x, "x")
    check_choice(backend, "backend", ("auto", *_BACKENDS))
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 2):
        raise ValueError(f"chunk_size must be None or an int >= 2, got {chunk_size!r}")
    if backend == "fused":
        _check_fused_device(x)  # before the parameter checks touch x's device
    check_finite(x, "x", check)
    compute = _compute_dtype(x.dtype)
    d = _param(decay, "decay", x, compute, low=0.0, high=1.0)
    unit_scale = isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale == 1
    s = None if unit_scale else _param(scale, "scale", x, compute)
    v = None if v0 is None else _param(v0, "v0", x, compute)

    name = _auto_backend(x) if backend == "auto" else backend
    if name in _OWN_BACKWARD:
        return _OWN_BACKWARD[name](x, d, s, v)
    y = x.to(compute)
    if s is not None:
        y = y * s
    kernel = _BACKENDS[name]
    if name in _AUTOGRAD_NATIVE:
        u = kernel(y, d, v, chunk_size)
    else:
        u = _LinearScan.apply(kernel, y, d, v, chunk_size)
    return u.to(x.dtype)
