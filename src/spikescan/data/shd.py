"""Spiking Heidelberg Digits (SHD) and Spiking Speech Commands (SSC) from their HDF5 files.

File layout (Cramer et al. 2020, https://zenkelab.org/datasets/): ``spikes/times`` (one
variable-length float array per sample, seconds), ``spikes/units`` (one variable-length int
array per sample, channel 0..699 of the cochlea model), ``labels`` (one int per sample) and
optionally ``extra/...`` (``extra/speaker`` is exposed as :attr:`SpikeHDF5.speakers`).  The
files are distributed gzipped (``shd_train.h5.gz``); gunzip them first.

Each sample becomes a dense ``[T, C]`` float32 tensor: ``T = ceil(max_time / dt)`` bins of
width ``dt`` (spike at time ``t`` -> bin ``floor(t / dt)``; spikes at ``t >= T * dt`` are
dropped), ``C = channels`` channels (700 divided by an integer factor; neighbouring channels are
merged by summing their counts, or with ``reduce="max"`` by taking the largest).  Entries are spike
counts, clipped at ``max_count`` when given, or 0/1 with ``binary=True``.

Two modes: in memory (default; the whole file is binned once, kept as a compact sparse list of
non-zero bins and densified per item, and optionally cached on disk under ``cache_dir``), or
``lazy=True`` (each item is read from the HDF5 file and binned when asked for).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from ._common import (cache_key, check_labels, check_positive, dense_from_sparse, file_state, load_or_build,
                      num_bins, require_file, time_bins)

__all__ = ["SpikeHDF5", "SHD", "SSC", "bin_spikes", "write_spike_hdf5"]

_LAYOUT = "an HDF5 file with datasets 'spikes/times', 'spikes/units' and 'labels' (SHD/SSC layout)"


def bin_spikes(times, units, *, dt: float, num_steps: int, in_channels: int = 700,
               channels: int | None = None, reduce: str = "sum", binary: bool = False,
               max_count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bin one sample's spikes; returns the non-zero entries ``(flat, value)`` of the ``[T, C]`` grid.

    ``flat = t_bin * C + channel`` (int64, sorted, unique) and ``value`` (float32) is the count
    (summed over merged channels, or with ``reduce="max"`` the largest count of one of them),
    clipped at ``max_count``, or 1 with ``binary`` (then both reductions are a logical OR).
    Spikes outside ``[0, num_steps * dt)`` are dropped.  ``units`` must lie in
    ``[0, in_channels)``; the caller validates them.
    """
    channels = in_channels if channels is None else channels
    factor = in_channels // channels
    t = time_bins(times, dt)
    u = np.asarray(units, dtype=np.int64)
    keep = (t >= 0) & (t < num_steps)
    t, u = t[keep], u[keep]
    if reduce == "max" and factor > 1 and not binary:
        pair, n = np.unique(t * in_channels + u, return_counts=True)  # count per (bin, input channel)
        group = (pair // in_channels) * channels + (pair % in_channels) // factor  # sorted
        flat, start = np.unique(group, return_index=True)
        value = np.maximum.reduceat(n, start) if n.size else n
    else:
        flat, value = np.unique(t * channels + u // factor, return_counts=True)
    if binary:
        value = np.ones_like(value)
    elif max_count is not None:
        value = np.minimum(value, max_count)
    return flat.astype(np.int64), value.astype(np.float32)


class SpikeHDF5(Dataset):
    """A spike data set in the SHD/SSC HDF5 layout; items are ``(x [T, C] float32, label int)``.

    Args:
        path: the ``.h5`` file, or a directory holding ``{prefix}_{split}.h5`` (then give ``split``).
        split: ``"train"`` / ``"test"`` (SSC also ``"valid"``) when ``path`` is a directory.
        dt: bin width in seconds (default 1 ms, as SPSN).
        max_time: window length in seconds; ``T = ceil(max_time / dt)``.  The default 1.4 s covers
            the longest SHD samples, so no spike is dropped; FastSNN uses ``dt=2e-3`` with
            ``T = 700`` (``max_time=1.4``).
        channels: output channels; ``in_channels`` (700) must be a multiple of it.
        reduce: ``"sum"`` adds the counts of merged channels, ``"max"`` keeps the largest.
        binary: 0/1 entries instead of counts (with channel merging: a logical OR).
        max_count: clip counts at this value (ignored with ``binary``).
        lazy: read and bin each item from the file on access instead of binning it all up front.
        cache_dir: in-memory mode only; keep the binned data in ``cache_dir`` as ``.npz``, keyed
            by the sha256 of the file's content and by every binning parameter (a file changed
            in place is never served from the cache, even with its size and mtime kept).
        trim: return each sample only up to its last non-empty bin (variable ``T``; batch with
            :func:`spikescan.data.collate.pad_collate`).
        transform: callable applied to ``x`` (e.g. the SPSN augmentation in
            :mod:`spikescan.data.augment`).
    """

    prefix = "data"
    num_classes: int | None = None
    splits = ("train", "test")

    def __init__(self, path, split: str | None = None, *, dt: float = 1e-3, max_time: float = 1.4,
                 channels: int = 700, reduce: str = "sum", binary: bool = False,
                 max_count: int | None = None, lazy: bool = False, cache_dir=None,
                 trim: bool = False, transform: Callable | None = None, in_channels: int = 700):
        path = Path(path).expanduser()
        if path.is_dir():
            if split not in self.splits:
                raise ValueError(f"split must be one of {list(self.splits)} when path is a directory, got {split!r}")
            path = path / f"{self.prefix}_{split}.h5"
            if not path.is_file() and Path(str(path) + ".gz").is_file():
                raise FileNotFoundError(f"{str(path)!r} not found but {str(path) + '.gz'!r} is: gunzip it first")
        self.path = require_file(path, f"{type(self).__name__} HDF5 file")
        self.dt = check_positive(dt, "dt")
        self.max_time = check_positive(max_time, "max_time")
        self.num_steps = num_bins(max_time, dt)
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if not isinstance(channels, int) or channels < 1 or in_channels % channels:
            raise ValueError(f"channels must be a positive divisor of in_channels={in_channels}, got {channels!r}")
        if reduce not in ("sum", "max"):
            raise ValueError(f"reduce must be 'sum' or 'max', got {reduce!r}")
        if max_count is not None and (not isinstance(max_count, int) or max_count < 1):
            raise ValueError(f"max_count must be None or an int >= 1, got {max_count!r}")
        if lazy and cache_dir is not None:
            raise ValueError("cache_dir caches the in-memory mode; use lazy=False with it")
        self.in_channels, self.channels, self.reduce = in_channels, channels, reduce
        self.binary, self.max_count, self.lazy, self.trim = bool(binary), max_count, bool(lazy), bool(trim)
        self.transform = transform
        self._h5 = None
        self._h5_pid = None
        self.cache_path: Path | None = None
        self.cache_hit = False

        with self._open() as f:
            times, units, labels = self._datasets(f)
            self.labels = check_labels(self._read(lambda: labels[()], "labels"), self.num_classes,
                                       repr(str(self.path)))
            self.speakers = None
            if "extra" in f and "speaker" in f["extra"]:
                self.speakers = self._read(lambda: np.asarray(f["extra"]["speaker"][()]), "extra/speaker")
        if self.lazy:
            return
        unchanged = None
        if cache_dir is not None:
            state = file_state(self.path)  # taken before hashing: a write from now on changes it
            key = cache_key(self.path, self._params())
            self.cache_path = Path(cache_dir).expanduser() / f"{self.path.stem}-{key}.npz"
            unchanged = lambda: file_state(self.path) == state  # noqa: E731
        arrays, self.cache_hit = load_or_build(self.cache_path, self._bin_all, unchanged)
        self._offsets, self._flat, self._value = arrays["offsets"], arrays["flat"], arrays["value"]

    # ------------------------------------------------------------------ file access
    def _params(self) -> dict:
        return {"dt": self.dt, "max_time": self.max_time, "num_steps": self.num_steps,
                "in_channels": self.in_channels, "channels": self.channels, "reduce": self.reduce,
                "binary": self.binary, "max_count": self.max_count}

    def _open(self):
        import h5py

        try:
            return h5py.File(self.path, "r")
        except OSError as e:
            raise ValueError(f"{str(self.path)!r} is not a readable HDF5 file (truncated or not HDF5?); "
                             f"expected {_LAYOUT}; h5py said: {e}") from None

    def _read(self, fn, what: str):
        try:
            return fn()
        except (OSError, KeyError, RuntimeError) as e:
            raise ValueError(f"{str(self.path)!r}: cannot read {what} (truncated or corrupt file?): {e}") from None

    def _datasets(self, f):
        import h5py

        found = {}
        for name in ("spikes/times", "spikes/units", "labels"):
            obj = f.get(name)
            if not isinstance(obj, h5py.Dataset):
                raise ValueError(f"{str(self.path)!r} has no dataset {name!r}; expected {_LAYOUT}")
            found[name] = obj
        times, units, labels = found["spikes/times"], found["spikes/units"], found["labels"]
        n = {len(times), len(units), len(labels)}
        if len(n) != 1:
            raise ValueError(f"{str(self.path)!r}: 'spikes/times' ({len(times)}), 'spikes/units' ({len(units)}) "
                             f"and 'labels' ({len(labels)}) must have one entry per sample")
        return times, units, labels

    def _check_sample(self, i: int, t: np.ndarray, u: np.ndarray) -> None:
        if t.shape != u.shape:
            raise ValueError(f"{str(self.path)!r}: sample {i} has {t.size} spike times but {u.size} units")
        if t.size and not np.isfinite(t).all():
            raise ValueError(f"{str(self.path)!r}: sample {i} has non-finite spike times")
        if u.size and (u.min() < 0 or u.max() >= self.in_channels):
            raise ValueError(f"{str(self.path)!r}: sample {i} has units outside [0, {self.in_channels}): "
                             f"min {u.min()}, max {u.max()}")

    def _bin(self, i: int, t, u) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, dtype=np.float64).ravel()
        u = np.asarray(u).ravel()
        self._check_sample(i, t, u)
        return bin_spikes(t, u, dt=self.dt, num_steps=self.num_steps, in_channels=self.in_channels,
                          channels=self.channels, reduce=self.reduce, binary=self.binary,
                          max_count=self.max_count)

    def _bin_all(self) -> dict:
        with self._open() as f:
            times, units, _ = self._datasets(f)
            all_t = self._read(lambda: times[()], "spikes/times")
            all_u = self._read(lambda: units[()], "spikes/units")
        parts = [self._bin(i, t, u) for i, (t, u) in enumerate(zip(all_t, all_u))]
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([p[0].size for p in parts])
        flat = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        value = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float32)
        # compact: int32 positions when the grid allows, exact integer counts as uint16
        flat_dtype = np.int32 if self.num_steps * self.channels < 2 ** 31 else np.int64
        return {"offsets": offsets, "flat": flat.astype(flat_dtype),
                "value": np.minimum(value, np.iinfo(np.uint16).max).astype(np.uint16)}

    def _file(self):
        """The HDF5 handle of this process (lazy mode; reopened after a fork, e.g. in DataLoader workers)."""
        if self._h5 is None or self._h5_pid != os.getpid():
            self._h5, self._h5_pid = self._open(), os.getpid()
        return self._h5

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"] = state["_h5_pid"] = None
        return state

    # ------------------------------------------------------------------ Dataset
    def __len__(self) -> int:
        return len(self.labels)

    def sparse(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Non-zero entries ``(flat, value)`` of sample ``i``'s ``[T, C]`` grid, ``flat = t * C + c``."""
        if self.lazy:
            f = self._file()
            return self._read(lambda: self._bin(i, f["spikes/times"][i], f["spikes/units"][i]), f"sample {i}")
        a, b = self._offsets[i], self._offsets[i + 1]
        return self._flat[a:b], self._value[a:b]

    def __getitem__(self, i: int):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        i = int(i) % n
        flat, value = self.sparse(i)
        steps = self.num_steps
        if self.trim:
            steps = int(flat[-1]) // self.channels + 1 if flat.size else 1
        x = dense_from_sparse(flat, value, (steps, self.channels))
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])

    def __repr__(self) -> str:
        mode = "lazy" if self.lazy else "in-memory"
        return (f"{type(self).__name__}({str(self.path)!r}, {len(self)} samples, T={self.num_steps}, "
                f"C={self.channels}, dt={self.dt}, {mode})")


class SHD(SpikeHDF5):
    """Spiking Heidelberg Digits: 20 classes (English and German spoken digits), 700 channels."""

    prefix = "shd"
    num_classes = 20


class SSC(SpikeHDF5):
    """Spiking Speech Commands: 35 classes, 700 channels, splits train / valid / test."""

    prefix = "ssc"
    num_classes = 35
    splits = ("train", "valid", "test")


def write_spike_hdf5(path, times, units, labels, *, time_dtype="float16", unit_dtype="uint16",
                     speakers=None) -> Path:
    """Write samples in the SHD/SSC layout (for tests and synthetic data sets).

    ``times[i]`` (seconds) and ``units[i]`` are the spikes of sample ``i``; ``labels[i]`` its class.
    ``speakers``, if given, goes to ``extra/speaker``.  Returns the path.
    """
    import h5py

    if not len(times) == len(units) == len(labels):
        raise ValueError(f"times ({len(times)}), units ({len(units)}) and labels ({len(labels)}) "
                         "must have one entry per sample")
    path = Path(path)
    with h5py.File(path, "w") as f:
        spikes = f.create_group("spikes")
        td = spikes.create_dataset("times", (len(times),), dtype=h5py.vlen_dtype(np.dtype(time_dtype)))
        ud = spikes.create_dataset("units", (len(units),), dtype=h5py.vlen_dtype(np.dtype(unit_dtype)))
        for i, (t, u) in enumerate(zip(times, units)):
            td[i] = np.asarray(t, dtype=time_dtype)
            ud[i] = np.asarray(u, dtype=unit_dtype)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
        if speakers is not None:
            f.create_group("extra").create_dataset("speaker", data=np.asarray(speakers, dtype=np.uint16))
    return path
