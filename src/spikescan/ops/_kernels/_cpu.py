"""Run a numba kernel over disjoint ranges of neurons on a small thread pool.

The kernels are compiled serial (``nogil=True``), not with numba's ``parallel=True``: a serial
kernel compiles in about a second instead of five to ten (the tests start cold), needs no numba
threading layer, and splitting the neurons ourselves is all the parallelism they need.  The
number of threads follows ``torch.get_num_threads()``.  The pool is recreated after a fork.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_key: tuple[int, int] | None = None

# Below this many (t, neuron) elements a call runs on the calling thread (pool overhead ~50 us).
_MIN_PARALLEL = 1 << 16
_CHUNKS_PER_THREAD = 4
_MIN_CHUNK = 2048  # neurons: shorter row segments stream worse


def _get_executor(threads: int) -> ThreadPoolExecutor:
    global _executor, _executor_key
    key = (os.getpid(), threads)
    with _lock:
        if _executor is None or _executor_key != key:
            _executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="spikescan-kernel")
            _executor_key = key
        return _executor


def parallel_for(N: int, work: int, fn: Callable[[int, int, int], None], max_block: int = 4096) -> None:
    """Call ``fn(lo, hi, block)`` on disjoint neuron ranges covering ``0 .. N-1``.

    ``work`` (about T * N) decides whether threads pay off.  Ranges start at multiples of 64
    neurons so that no two threads write the same cache line.  ``block`` (neurons a kernel
    processes together, at most ``max_block``) is as large as allowed: every step of a block
    touches a contiguous row segment of each [T, N] array, and longer segments stream better
    (B=32, N=256, T=1000: LIF backward 6.5 ms with blocks of 512, 4.6 ms with 4096).

    The range is cut into up to ``_CHUNKS_PER_THREAD`` chunks per thread (none below
    ``_MIN_CHUNK`` neurons) that the threads take from a shared counter, so on a machine whose
    cores are shared with other processes a descheduled thread does not hold the others up:
    with one static range per thread the call lasts as long as its slowest thread.
    """
    threads = max(1, torch.get_num_threads())
    if threads == 1 or work < _MIN_PARALLEL or N < 128:
        fn(0, N, min(N, max_block))
        return
    per_thread = 64 * (-(-N // (64 * threads)))
    chunk = max(64 * (-(-N // (64 * threads * _CHUNKS_PER_THREAD))), min(_MIN_CHUNK, per_thread))
    ranges = [(lo, min(N, lo + chunk)) for lo in range(0, N, chunk)]
    block = min(max_block, chunk)
    run_ranges(ranges, lambda lo, hi: fn(lo, hi, block), threads)


def run_ranges(ranges: list[tuple[int, int]], fn: Callable[[int, int], None], threads: int) -> None:
    """Call ``fn(lo, hi)`` for every range, the ranges taken from a shared counter by ``threads``
    threads (the calling one included)."""
    counter = itertools.count()  # next() on it is atomic under the GIL

    def worker() -> None:
        for i in iter(counter.__next__, None):
            if i >= len(ranges):
                return
            fn(*ranges[i])

    futures = [_get_executor(threads).submit(worker) for _ in range(min(threads, len(ranges)) - 1)]
    try:
        worker()  # the calling thread works too
    finally:
        for f in futures:
            f.result()


# --------------------------------------------------------------------------------------------
# output buffers
# --------------------------------------------------------------------------------------------
#
# A fresh large CPU tensor is mmap'ed memory that the kernel faults in page by page on first
# write, zeroing each page.  On the development VM that costs more than the fused kernels
# themselves (512 MiB: 127 ms to allocate and fill with 4 KiB pages, 30 ms with 2 MiB pages;
# B=32, N=256, T=1000 LIF training step, three 31 MiB outputs: 42 ms median with plain
# torch.empty, 23-28 ms with huge pages, its two kernels alone 8-9 ms).  Hence two measures for the fused
# ops' own large outputs (>= 8 MiB):
#
# * transparent huge pages (madvise(MADV_HUGEPAGE), what PyTorch does for every allocation when
#   THP_MEM_ALLOC_ENABLE=1) where the kernel allows it;
# * a small pool that reuses a buffer once no tensor uses it any more (a training loop asks for
#   the same sizes every step), like PyTorch's CUDA caching allocator.  Buffers are numpy arrays
#   handed out through torch.from_numpy; a tensor's storage holds a reference to its array, so
#   an array whose reference count is back to the pool's own is free -- no view, saved tensor or
#   .numpy() of it is alive.  At most _POOL_MAX_BYTES (2 GiB or RAM/8) of buffers are kept (free
#   ones are dropped oldest first).  SPIKESCAN_CPU_POOL=0 turns the pool off.
#   Measured (same step, OMP_WAIT_POLICY=PASSIVE): 11-14 ms median with the pool, 23 ms without,
#   11-12 ms without it but with glibc told to keep freed memory (MALLOC_MMAP_MAX_=0
#   MALLOC_TRIM_THRESHOLD_=1e11, which the pool makes unnecessary).

_HUGE = 2 << 20
_MADV_HUGEPAGE = 14
_MIN_BIG = 8 << 20
_libc = None  # ctypes libc, False when unavailable

_POOL_ENABLED = os.environ.get("SPIKESCAN_CPU_POOL", "1").strip().lower() not in ("0", "false", "no", "off")


def _pool_cap() -> int:
    """2 GiB, or an eighth of the physical memory where that is less."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 16 << 30
    return min(2 << 30, ram // 8)


_POOL_MAX_BYTES = _pool_cap()
_buffers: list = []  # numpy uint8 buffers, oldest first
_buffers_lock = threading.Lock()


def _thp_libc():
    global _libc
    if _libc is None:
        _libc = False
        try:
            with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as fh:
                mode = fh.read()
            if "[never]" not in mode:
                import ctypes

                lib = ctypes.CDLL(None, use_errno=True)
                lib.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
                _libc = lib
        except (OSError, AttributeError):
            pass
    return _libc


def _advise_huge(address: int, nbytes: int) -> None:
    lib = _thp_libc()
    if lib:
        start = (address + _HUGE - 1) & ~(_HUGE - 1)
        end = (address + nbytes) & ~(_HUGE - 1)
        if end > start:
            lib.madvise(start, end - start, _MADV_HUGEPAGE)  # advisory: failure is harmless


def _refs(buffers: list, i: int) -> int:
    """Reference count of ``buffers[i]``; compared only with :data:`_FREE_REFS`, measured by this
    same function, so the interpreter's own temporary references cancel out."""
    return sys.getrefcount(buffers[i])


_FREE_REFS = _refs([np.empty(1, np.uint8)], 0)  # a buffer referenced by nothing but its list


def _take(nbytes: int):
    """A free pooled buffer of exactly ``nbytes`` (moved to the end: most recently used), or None."""
    for i in range(len(_buffers)):
        if _buffers[i].nbytes == nbytes and _refs(_buffers, i) == _FREE_REFS:
            _buffers.append(_buffers.pop(i))
            return _buffers[-1]
    return None


def _make_room(nbytes: int) -> bool:
    """Drop free buffers, oldest first, until ``nbytes`` more fit under the cap."""
    total = sum(a.nbytes for a in _buffers)
    i = 0
    while total + nbytes > _POOL_MAX_BYTES and i < len(_buffers):
        if _refs(_buffers, i) == _FREE_REFS:
            total -= _buffers.pop(i).nbytes
        else:
            i += 1
    return total + nbytes <= _POOL_MAX_BYTES


def empty(shape, like: torch.Tensor) -> torch.Tensor:
    """``torch.empty(shape)`` with ``like``'s dtype and device; see the comment above for what
    large CPU buffers get (huge pages, reuse)."""
    dtype, device = like.dtype, like.device
    nbytes = math.prod(shape) * like.element_size()
    if device.type != "cpu" or nbytes < _MIN_BIG:
        return torch.empty(shape, dtype=dtype, device=device)
    if _POOL_ENABLED:
        with _buffers_lock:
            arr = _take(nbytes)
            if arr is None and _make_room(nbytes):
                arr = np.empty(nbytes, dtype=np.uint8)
                _advise_huge(arr.ctypes.data, nbytes)
                _buffers.append(arr)
            if arr is not None:
                return torch.from_numpy(arr).view(dtype).view(shape)
    t = torch.empty(shape, dtype=dtype, device=device)
    _advise_huge(t.data_ptr(), t.nbytes)
    return t
