"""Run a numba kernel over disjoint ranges of neurons on a small thread pool.

The kernels are compiled serial (``nogil=True``), not with numba's ``parallel=True``: a serial
kernel compiles in about a second instead of five to ten (the tests start cold), needs no numba
threading layer, and splitting the neurons ourselves is all the parallelism they need.  The
number of threads follows ``torch.get_num_threads()``.  The pool is recreated after a fork.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None

# Below this many (t, neuron) elements a call runs on the calling thread (pool overhead ~50 us).
_MIN_PARALLEL = 1 << 16


def _get_pool(threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_key
    key = (os.getpid(), threads)
    with _lock:
        if _pool is None or _pool_key != key:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="spikescan-kernel")
            _pool_key = key
        return _pool


def parallel_for(N: int, work: int, fn: Callable[[int, int, int], None], max_block: int = 4096) -> None:
    """Call ``fn(lo, hi, block)`` on disjoint neuron ranges covering ``0 .. N-1``.

    ``work`` (about T * N) decides whether threads pay off.  Ranges start at multiples of 64
    neurons so that no two threads write the same cache line.  ``block`` (neurons a kernel
    processes together, at most ``max_block``) is as large as allowed: every step of a block
    touches a contiguous row segment of each [T, N] array, and longer segments stream better
    (B=32, N=256, T=1000: LIF backward 6.5 ms with blocks of 512, 4.6 ms with 4096).
    """
    threads = max(1, torch.get_num_threads())
    if threads == 1 or work < _MIN_PARALLEL or N < 128:
        fn(0, N, min(N, max_block))
        return
    parts = min(threads, N // 64)
    step = 64 * (-(-N // (64 * parts)))
    ranges = [(lo, min(N, lo + step)) for lo in range(0, N, step)]
    block = min(max_block, step)
    futures = [_get_pool(threads).submit(fn, lo, hi, block) for lo, hi in ranges[1:]]
    fn(ranges[0][0], ranges[0][1], block)  # the calling thread takes the first range
    for f in futures:
        f.result()


# --------------------------------------------------------------------------------------------
# output buffers
# --------------------------------------------------------------------------------------------
#
# A fresh large CPU tensor is mmap'ed memory that the kernel faults in 4 KiB page by page on
# first write.  On the development VM that costs more than the kernel itself (512 MiB: 127 ms to
# allocate and fill, 30 ms with 2 MiB pages; 32 MiB: 6.8 ms vs 2.5 ms).  So the fused ops ask
# for transparent huge pages on their own large outputs (madvise(MADV_HUGEPAGE), what PyTorch
# does for every allocation when THP_MEM_ALLOC_ENABLE=1), where the kernel allows it.

_HUGE = 2 << 20
_MADV_HUGEPAGE = 14
_MIN_ADVISE = 8 << 20
_libc = None  # ctypes libc, False when unavailable


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


def empty(shape, like: torch.Tensor) -> torch.Tensor:
    """``torch.empty(shape)`` with ``like``'s dtype and device; large CPU buffers get huge pages."""
    t = torch.empty(shape, dtype=like.dtype, device=like.device)
    if t.device.type == "cpu" and t.nbytes >= _MIN_ADVISE:
        lib = _thp_libc()
        if lib:
            start = (t.data_ptr() + _HUGE - 1) & ~(_HUGE - 1)
            end = (t.data_ptr() + t.nbytes) & ~(_HUGE - 1)
            if end > start:
                lib.madvise(start, end - start, _MADV_HUGEPAGE)  # advisory: failure is harmless
    return t
