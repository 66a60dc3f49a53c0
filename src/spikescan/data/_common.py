"""Helpers shared by the dataset loaders: file and label checks, time binning, the on-disk cache."""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .._io import atomic_write

_CACHE_VERSION = 2  # 2: keyed by content (1: by path, size and mtime)


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


def check_labels(labels, num_classes: int | None, source: str, *, names=None) -> np.ndarray:
    """``labels`` as int64 after checking that they are integer class indices in ``[0, num_classes)``.

    ``source`` says where the labels come from (a quoted file name, as the loaders write it);
    ``names[i]``, if given, names sample ``i`` (e.g. its file).  ``num_classes=None`` only
    requires labels ``>= 0``.  A ``ValueError`` lists the first bad labels with their sample
    indices and the expected range.
    """
    a = np.asarray(labels)
    if a.ndim != 1:
        raise ValueError(f"{source}: labels must be one integer per sample (1-D), got shape {list(a.shape)}")
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{source}: labels must be integers, got dtype {a.dtype}")
    if num_classes is None:
        expected = "integer class indices >= 0"
    else:
        expected = f"integer class indices in [0, {num_classes}) ({num_classes} classes)"
    with np.errstate(invalid="ignore"):
        bad = (a < 0) if num_classes is None else (a < 0) | (a >= num_classes)
        if a.dtype.kind == "f":
            bad |= ~np.isfinite(a) | (a != np.floor(a))
    if bad.any():
        idx = np.flatnonzero(bad)
        shown = ", ".join(f"label {a[i].item()!r} at sample {i}" + (f" ({names[i]})" if names is not None else "")
                          for i in idx[:5])
        more = f" and {idx.size - 5} more" if idx.size > 5 else ""
        raise ValueError(f"{source}: {idx.size} of {a.size} labels are out of range, expected {expected}: "
                         f"{shown}{more}")
    return a.astype(np.int64)


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
def file_sha256(path: Path) -> str:
    """sha256 of every byte of ``path``."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def file_state(path: Path) -> tuple[int, int, int, int]:
    """``(size, mtime_ns, ctime_ns, inode)``: changes when the file is written, replaced or touched."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def cache_key(source: Path, params: dict) -> str:
    """Hash of the source file's content (sha256 of all of it) and the binning parameters.

    The whole file is hashed, not its size and mtime (a file rewritten in place can keep both)
    nor a sample of its blocks (which can miss a change).  sha256 runs about as fast as the file
    can be read, a small part of the time that binning the same file takes, so a cache hit stays
    cheap.  The path is not part of the key: a moved or copied file with the same name still hits.
    """
    ident = {"sha256": file_sha256(source), "version": _CACHE_VERSION, **params}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


def save_npz_atomic(path: Path, arrays: dict) -> None:
    """Write ``arrays`` to ``path`` (.npz) through a temporary file and ``os.replace``."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_or_build(cache_path: Path | None, build: Callable[[], dict],
                  unchanged: Callable[[], bool] | None = None) -> tuple[dict, bool]:
    """Arrays from ``cache_path`` if it holds a readable cache, else ``build()`` (and save it).

    Returns ``(arrays, hit)``.  A cache file that cannot be read is rebuilt and overwritten.
    ``unchanged()``, if given, is asked after ``build()``: when it says the source changed
    meanwhile, the arrays are returned but not saved (the key was computed from the old content).
    """
    if cache_path is not None and cache_path.is_file():
        try:
            with np.load(cache_path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}, True
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            pass
    arrays = build()
    if cache_path is not None and (unchanged is None or unchanged()):
        save_npz_atomic(cache_path, arrays)
    return arrays, False
