"""Definitions shared by the numba (CPU) and Triton (GPU) kernels; imports neither compiler.

Layout.  Every kernel works on time-first, C-contiguous ``[T, N]`` arrays: ``N`` is the
product of the per-step shape (``B * features``), so row ``t`` holds all neurons of step ``t``
and consecutive neurons are adjacent in memory.  Per-neuron parameters (decay, threshold, ...)
arrive expanded to contiguous ``[N]`` vectors.  A kernel walks over ``t`` once, keeping each
neuron's state in a register (Triton: one program per block of neurons) or in a small local
array of one block of neurons (numba: ranges of blocks on a thread pool, ``_cpu.parallel_for``;
inner loop over the contiguous neurons of the block so that it vectorizes).

Surrogates are passed as ``(code, param)``: :data:`SURROGATE_CODES` maps
``spikescan.surrogate`` kinds to the integer the kernels branch on.  The formulas are those of
:func:`spikescan.surrogate.surrogate_grad`.

Random numbers (fused SPSN).  A counter-based generator: the uniform of step ``t``, neuron
``n`` is a pure function of ``(seed, t, n)``, so no random tensor is stored and the backward
regenerates exactly what the forward drew.  Two 32-bit keys per step come from SplitMix64 of
the seed and ``t`` (:func:`step_keys`, computed once on the host for all ``T`` steps); then per
element ``h = mix32(mix32(n ^ k1[t]) ^ k2[t])`` with ``mix32`` the "lowbias32" integer hash
(C. Wellons, hash-prospector: ``x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15;
x *= 0x846ca68b; x ^= x >> 16``), a bijection of 32-bit words with low avalanche bias.  Only
32-bit multiplies, shifts and xors, so it vectorizes on CPUs and maps to Triton's uint32 ops;
both back ends produce bit-identical words.  The uniform is ``(2 * (h >> 9) + 1) * 2**-24``:
2**23 equally spaced values in the open interval (0, 1) (so ``logit(U)`` is finite, and
``1 - U`` is exact), each exactly representable in float32 and float64 alike, so both dtypes
draw the same numbers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# spikescan.surrogate kind -> code used inside the kernels
SURROGATE_CODES = {"fast_sigmoid": 0, "atan": 1, "sigmoid": 2, "triangle": 3}


class SurrogateConsts(NamedTuple):
    """A surrogate's constants in the kernel dtype, passed by value (registers inside the loops)."""

    one: float
    param: float  # slope (fast_sigmoid, sigmoid), alpha (atan) or width (triangle)
    half_param: float  # atan: alpha / 2
    atan_scale: float  # atan: pi / 2 * alpha
    inv_param: float  # triangle: 1 / width


def surrogate_consts(dtype: str, param: float) -> SurrogateConsts:
    """:class:`SurrogateConsts` of ``param`` as numpy scalars of ``dtype`` ("float32"/"float64")."""
    scalar = np.dtype(dtype).type
    p = float(param)
    return SurrogateConsts(scalar(1.0), scalar(p), scalar(p / 2.0), scalar(math.pi / 2.0 * p), scalar(1.0 / p))


RESET_CODES = {"subtract": 0, "zero": 1}

FIRING_CODES = {"sb": 0, "gs": 1}

# Steps between the state checkpoints of the CPU LIF and SPSN kernels (their backwards recompute
# each segment of this many steps from a checkpoint instead of storing the states of every
# step).  A multiple of 4: the forwards advance 4 steps per sweep.
SEGMENT = 32

_M64 = (1 << 64) - 1
_GOLDEN64 = 0x9E3779B97F4A7C15


def surrogate_constants(kind: str, param: float) -> tuple[int, float]:
    """``(code, param)`` for a built-in surrogate kind; ``ValueError`` for any other."""
    try:
        return SURROGATE_CODES[kind], float(param)
    except KeyError:
        raise ValueError(
            f"the fused kernels implement the built-in surrogates {sorted(SURROGATE_CODES)}, got kind "
            f"{kind!r}; use backend='sequential' for a custom surrogate"
        ) from None


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (z + np.uint64(_GOLDEN64)).astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def normalize_seed(seed) -> int:
    """A seed as a non-negative int below 2**64 (``TypeError`` for anything but an int)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return int(seed) & _M64


def step_keys(seed: int, T: int, t0: int = 0) -> np.ndarray:
    """``[T, 2]`` int32 array: the two 32-bit keys of steps ``t0 .. t0 + T - 1`` (bit patterns of
    uint32).  The keys depend on the absolute step, so a sequence run in chunks (``t0`` the
    chunk's first step) draws what the whole sequence draws."""
    s = np.uint64(normalize_seed(seed))
    base = _splitmix64(np.array([s], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        z = _splitmix64(np.arange(t0, t0 + T, dtype=np.uint64) * np.uint64(_GOLDEN64) ^ base)
    keys = np.empty((T, 2), dtype=np.uint32)
    keys[:, 0] = (z & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    keys[:, 1] = (z >> np.uint64(32)).astype(np.uint32)
    return keys.view(np.int32)


def mix32_reference(x: np.ndarray) -> np.ndarray:
    """Pure-numpy ``lowbias32`` on uint32 arrays (the reference of the kernels' hash)."""
    x = x.astype(np.uint32)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
    return x


def uniforms_reference(seed: int, T: int, N: int) -> np.ndarray:
    """Pure-numpy ``[T, N]`` float64 uniforms of the kernels' generator (slow; for tests)."""
    keys = step_keys(seed, T).view(np.uint32)
    n = np.arange(N, dtype=np.uint32)[None, :]
    h = mix32_reference(mix32_reference(n ^ keys[:, :1]) ^ keys[:, 1:])
    return ((h >> np.uint32(9)).astype(np.float64) * 2.0 + 1.0) * 2.0 ** -24
