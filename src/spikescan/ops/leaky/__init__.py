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
``"fused"``       the time-fused kernel of :mod:`spikescan.ops.leaky.fused` (numba on the CPU,
                  Triton on CUDA, ``torch.library`` custom ops): one pass over T with the state in
                  a register, and its OWN one-pass reverse-time backward,
                  so no flipped copies and no autograd graph.  Not parallel over time: on a
                  CPU it is the fastest at every T >= 8 measured; on a GPU it needs enough
                  neurons (B*N) to fill the device.  No double backward.
``"auto"``        picks from :data:`AUTO_TABLE` by device, T and B*N, measured on the
                  development machine (CPU) or estimated (CUDA).

Files: ``reference.py`` (the loop), ``parallel.py`` (``fft``, ``chunked`` and their shared
backward), ``fused.py`` (custom ops) over ``numba_kernels.py`` / ``triton_kernels.py``.

The parallel backends share one backward (:class:`~spikescan.ops.leaky.parallel.LinearScan`,
the reverse-time scan by the same kernel; double backward works).  Backends are registered in
:mod:`spikescan.ops._backend` (``spikescan.ops.backends("leaky_integrate")``); a new forward-only
kernel registered with :func:`~spikescan.ops.leaky.parallel.linear_scan` gets the shared
backward.  To let ``"auto"`` use a backend, add rows to :data:`AUTO_TABLE`.  Under
``torch.autocast`` the result has the autocast dtype.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from ..._checks import check_finite, check_time_first
from .._backend import fused_unsupported, register, register_auto, resolve
from .._params import compute_dtype, output_dtype, param
from .fused import leaky_fused
from .parallel import SCAN_KERNELS, linear_scan
from .reference import leaky_reference, leaky_step

__all__ = ["leaky_integrate", "leaky_step", "leaky_reference", "AUTO_TABLE"]


def _sequential(x, decay, scale, v0, chunk_size=None):
    return leaky_reference(x if scale is None else x * scale, decay, v0)


def _parallel(name: str):
    kernel = SCAN_KERNELS[name]

    def run(x, decay, scale, v0, chunk_size=None):
        return linear_scan(kernel, x, decay, scale, v0, chunk_size)

    run.__name__ = f"_{name}"
    return run


# A backend receives x in the compute dtype and the validated parameters aligned to x.shape[1:]
# (scale None for 1, v0 None for 0) and returns u in the compute dtype.
register("leaky_integrate", "sequential", description="Python loop (the reference; autograd through it)")(
    _sequential)
register("leaky_integrate", "fft", description="causal FFT convolution (SPSN eq. 13), O(T log T)")(_parallel("fft"))
register("leaky_integrate", "chunked", description="chunk-local scans joined by a carry scan, O(T)")(
    _parallel("chunked"))
register("leaky_integrate", "fused", unsupported=fused_unsupported,
         description="time-fused kernel, one pass each way (numba CPU / Triton CUDA)")(leaky_fused)


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


# Tried in order: the rows whose device type matches, T <= t_max and B*N >= n_min are the
# preference list of "auto", whose first runnable entry wins (rows naming "fused" are skipped
# where the fused kernel cannot run: no numba / no triton); "chunked" always ends the list.
AUTO_TABLE: tuple[_AutoRow, ...] = (
    _AutoRow("cpu", 4, 0, "sequential"),
    _AutoRow("cpu", math.inf, 0, "fused"),
    _AutoRow("cpu", 32, 0, "sequential"),  # without numba
    _AutoRow("cpu", math.inf, 0, "chunked"),
    _AutoRow("cuda", 64, 0, "fused"),
    _AutoRow("cuda", math.inf, 1 << 16, "fused"),
    _AutoRow("cuda", math.inf, 0, "chunked"),
)




def _preference(x: torch.Tensor, **context) -> list[str]:
    T = x.shape[0]
    n = math.prod(x.shape[1:])
    rows = [row.backend for row in AUTO_TABLE
            if row.device == x.device.type and T <= row.t_max and n >= row.n_min]
    return rows + ["chunked"]


register_auto("leaky_integrate", _preference)


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
        backend: ``"auto"`` or one of ``spikescan.ops.backends("leaky_integrate")``
            (``"sequential"``, ``"fft"``, ``"chunked"``, ``"fused"``); a named backend that cannot
            run the call is an error.
        chunk_size: chunk length for ``"chunked"`` (default ``_DEFAULT_CHUNK``); ignored by the
            others.
        check: scan ``x`` for NaN/Inf (default: only in debug mode, see ``spikescan.debug_mode``).

    Returns:
        ``u`` with the shape and dtype of ``x``.  Gradients flow to ``x``, ``decay``, ``scale``
        and ``v0`` (each summed back to its own shape).
    """
    check_time_first(x, "x")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 2):
        raise ValueError(f"chunk_size must be None or an int >= 2, got {chunk_size!r}")
    impl = resolve("leaky_integrate", backend, x).fn  # before the parameter checks touch x's device
    check_finite(x, "x", check)
    d = param(decay, "decay", x, align=True, low=0.0, high=1.0)
    unit_scale = isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale == 1
    s = None if unit_scale else param(scale, "scale", x, align=True)
    v = None if v0 is None else param(v0, "v0", x, align=True)
    out = output_dtype(x)
    return impl(x.to(compute_dtype(x.dtype)), d, s, v, chunk_size).to(out)
