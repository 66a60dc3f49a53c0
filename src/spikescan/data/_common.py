"""Helpers shared by the dataset loaders: file checks, time binning, the on-disk cache."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

_CACHE_VERSION = 1


def require_file(path, what: str) -> Path:
    """``Path(path)``; ``FileNotFoundError`` naming the path and what it should be if it is missing."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {str(p)!r}" + (" (it is a directory)" if p.is_dir() else ""))
    return p


def require_dir(path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what} not found: {str(p)!r} is not a directory")
    return p


def check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def num_bins(max_time: float, dt: float) -> int:
    """Number of bins ``ceil(max_time / dt)``, robust to float noise (``1.4 / 1e-3`` -> 1400)."""
    check_positive(max_time, "max_time")
    check_positive(dt, "dt")
    return max(1, math.ceil(round(max_time / dt, 9)))


def time_bins(t: np.ndarray, dt: float) -> np.ndarray:
    """Bin index ``floor(t / dt)`` (int64); a time on a bin edge, up to float noise, goes to the later bin."""
    return np.floor(np.round(np.asarray(t, dtype=np.float64) / dt, 9)).astype(np.int64)


def finish_counts(counts: torch.Tensor, binary: bool, max_count: int | None) -> torch.Tensor:
    if binary:
        return (counts > 0).to(torch.float32)
    if max_count is not None:
        counts = counts.clamp_(max=max_count)
    return counts.to(torch.float32)


def dense_counts(flat: np.ndarray, size: int, shape) -> torch.Tensor:
    """Dense float32 tensor of ``shape`` counting how often each flat index occurs in ``flat``."""
    counts = np.bincount(np.asarray(flat, dtype=np.int64), minlength=size)
    return torch.from_numpy(counts.astype(np.float32)).reshape(shape)


def dense_from_sparse(flat: np.ndarray, value: np.ndarray, shape) -> torch.Tensor:
    """Dense float32 tensor of ``shape`` holding ``value`` at the (unique) flat indices ``flat``."""
    out = np.zeros(int(np.prod(shape)), dtype=np.float32)
    out[flat] = value
    return torch.from_numpy(out).reshape(shape)


# ----------------------------------------------------------------------------- cache
def cache_key(source: Path, params: dict) -> str:
    """Hash of the source file's identity (absolute path, size, mtime) and the binning parameters."""
    st = source.stat()
    ident = {"path": str(source.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             "version": _CACHE_VERSION, **params}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


def save_npz_atomic(path: Path, arrays: dict) -> None:
    """Write ``arrays`` to ``path`` (.npz) through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_or_build(cache_path: Path | None, build: Callable[[], dict]) -> tuple[dict, bool]:
    """Arrays from ``cache_path`` if it holds a readable cache, else ``build()`` (and save it).

    Returns ``(arrays, hit)``.  A cache file that cannot be read is rebuilt and overwritten.
    """
    if cache_path is not None and cache_path.is_file():
        try:
            with np.load(cache_path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}, True
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            pass
    arrays = build()
    if cache_path is not None:
        save_npz_atomic(cache_path, arrays)
    return arrays, False
