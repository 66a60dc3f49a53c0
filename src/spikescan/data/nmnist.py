"""Neuromorphic-MNIST (Orchard et al. 2015) from its binary event files.

Each ``.bin`` file is a stream of 5-byte (40-bit, big-endian) events: byte 0 = x address,
byte 1 = y address, byte 2 bit 7 = polarity, then a 23-bit timestamp in microseconds (byte 2 bits
6..0, byte 3, byte 4).  As in the authors' ``Read_Ndataset.m``, an event with ``y == 240`` is not
a spike but a timestamp-overflow marker that adds ``2**13`` to all later timestamps.  The sensor
is 34 x 34 pixels with 2 polarities.  The data set is laid out as ``Train/<digit>/*.bin`` and
``Test/<digit>/*.bin``.

Samples are framed into ``T = ceil(max_time / dt)`` bins (event at ``t`` us -> bin
``floor(t * 1e-6 / dt)``, events at or after ``T * dt`` dropped) as ``[T, 2, 34, 34]`` count
tensors, ``[T, 1, 34, 34]`` with ``merge_polarity``, or flattened to ``[T, 2312]`` / ``[T, 1156]``.
FastSNN (Table 1) uses ``dt = 1 ms``, ``T = 300`` and 1156 inputs: ``merge_polarity=True,
flatten=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ._common import (check_labels, check_positive, dense_counts, finish_counts, num_bins, require_dir, require_file,
                      time_bins)

__all__ = ["EVENT_DTYPE", "NMNIST", "read_nmnist_events", "write_nmnist_events", "frame_events"]

#: Structured dtype of decoded events: pixel column ``x``, row ``y``, polarity ``p`` (0/1), time ``t`` (us).
EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("p", np.int8), ("t", np.int64)])
SENSOR = (34, 34)  # width, height
_OVERFLOW_Y = 240
_OVERFLOW_STEP = 2 ** 13


def read_nmnist_events(path) -> np.ndarray:
    """Decode one N-MNIST ``.bin`` file into a structured array of :data:`EVENT_DTYPE`.

    An empty file, or one whose size is not a multiple of 5 bytes, raises a ``ValueError`` naming
    it.  (A file cut at an event boundary is a shorter recording and cannot be told apart.)
    """
    path = require_file(path, "N-MNIST event file")
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if raw.size == 0:
        raise ValueError(f"{str(path)!r} is empty (0 bytes): an N-MNIST recording holds 5-byte events "
                         "(truncated or failed download?)")
    if raw.size % 5:
        raise ValueError(f"{str(path)!r} is truncated or not an N-MNIST event file: its size {raw.size} bytes "
                         "is not a multiple of 5 (each event is 40 bits)")
    ev = raw.reshape(-1, 5).astype(np.int64)
    x, y = ev[:, 0], ev[:, 1]
    p = ev[:, 2] >> 7
    t = ((ev[:, 2] & 0x7F) << 16) | (ev[:, 3] << 8) | ev[:, 4]
    overflow = y == _OVERFLOW_Y
    if overflow.any():
        t = t + _OVERFLOW_STEP * np.cumsum(overflow)
    keep = ~overflow
    out = np.empty(int(keep.sum()), dtype=EVENT_DTYPE)
    out["x"], out["y"], out["p"], out["t"] = x[keep], y[keep], p[keep], t[keep]
    return out


def write_nmnist_events(path, events) -> Path:
    """Write events (a structured array, or anything with fields ``x, y, p, t``) as an N-MNIST ``.bin``.

    Timestamps must lie in ``[0, 2**23)`` us (no overflow markers are written).
    """
    x, y, p, t = (np.asarray(events[k], dtype=np.int64) for k in ("x", "y", "p", "t"))
    if x.size == 0:
        raise ValueError("events is empty: an N-MNIST file holds at least one event (empty files are refused)")
    for name, v, hi in (("x", x, 256), ("y", y, 256), ("p", p, 2), ("t", t, 2 ** 23)):
        if v.size and (v.min() < 0 or v.max() >= hi):
            raise ValueError(f"events[{name!r}] must lie in [0, {hi}), got [{v.min()}, {v.max()}]")
    if y.size and (y == _OVERFLOW_Y).any():
        raise ValueError(f"events['y'] == {_OVERFLOW_Y} is reserved for timestamp-overflow markers")
    buf = np.empty((x.size, 5), dtype=np.uint8)
    buf[:, 0], buf[:, 1] = x, y
    buf[:, 2] = (p << 7) | (t >> 16)
    buf[:, 3] = (t >> 8) & 0xFF
    buf[:, 4] = t & 0xFF
    path = Path(path)
    path.write_bytes(buf.tobytes())
    return path


def frame_events(events: np.ndarray, *, dt: float, num_steps: int, sensor_size=SENSOR,
                 merge_polarity: bool = False, binary: bool = False, max_count: int | None = None,
                 name: str = "events") -> torch.Tensor:
    """Bin events by time: ``[num_steps, P, H, W]`` float32 counts (``P = 1`` with ``merge_polarity``).

    Event at ``t`` microseconds goes to bin ``floor(t * 1e-6 / dt)``; later ones are dropped.
    """
    width, height = sensor_size
    x, y, p = (np.asarray(events[k], dtype=np.int64) for k in ("x", "y", "p"))
    if x.size and (x.min() < 0 or x.max() >= width or y.min() < 0 or y.max() >= height):
        raise ValueError(f"{name}: pixel addresses outside the {width}x{height} sensor "
                         f"(x in [{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}])")
    polarities = 1 if merge_polarity else 2
    b = time_bins(np.asarray(events["t"], dtype=np.float64) * 1e-6, dt)
    keep = (b >= 0) & (b < num_steps)
    pol = np.zeros_like(p) if merge_polarity else p
    flat = ((b * polarities + pol) * height + y) * width + x
    shape = (num_steps, polarities, height, width)
    counts = dense_counts(flat[keep], int(np.prod(shape)), shape)
    return finish_counts(counts, binary, max_count)


def _label_folders(split: Path):
    """``(label, folder)`` for each sub-folder of ``split`` that holds ``.bin`` files; the name is the label."""
    out = []
    for sub in split.iterdir():
        if not sub.is_dir() or next(sub.glob("*.bin"), None) is None:
            continue
        if not (sub.name.isascii() and sub.name.isdigit()):
            raise ValueError(f"{str(sub)!r} holds .bin files but its name {sub.name!r} is not a class label "
                             "(expected <digit>/*.bin with digit 0..9)")
        out.append((int(sub.name), sub))
    return out


class NMNIST(Dataset):
    """N-MNIST from ``root/Train/<digit>/*.bin`` or ``root/Test/<digit>/*.bin``; items ``(x, label)``.

    The folder name is the label: a folder of ``.bin`` files named anything but 0..9 is an error.

    ``root`` may also be the folder above an ``NMNIST/`` directory (tonic's layout).  Files are
    read and framed on access (see :func:`frame_events`); ``x`` is ``[T, P, 34, 34]``, or
    ``[T, P * 1156]`` with ``flatten``.  ``transform`` is applied to ``x``.
    """

    num_classes = 10

    def __init__(self, root, train: bool = True, *, dt: float = 1e-3, max_time: float = 0.3,
                 merge_polarity: bool = False, flatten: bool = False, binary: bool = False,
                 max_count: int | None = None, transform: Callable | None = None):
        root = require_dir(root, "N-MNIST root")
        split = "Train" if train else "Test"
        for cand in (root / split, root / "NMNIST" / split):
            if cand.is_dir():
                break
        else:
            raise FileNotFoundError(f"N-MNIST split folder not found: expected {str(root / split)!r} "
                                    f"holding <digit>/*.bin")
        self.folder = cand
        self.dt = check_positive(dt, "dt")
        self.num_steps = num_bins(max_time, dt)
        self.merge_polarity, self.flatten = bool(merge_polarity), bool(flatten)
        self.binary, self.max_count, self.transform = bool(binary), max_count, transform
        self.files: list[Path] = []
        labels = []
        for label, sub in sorted(_label_folders(cand)):
            files = sorted(sub.glob("*.bin"))
            self.files += files
            labels += [label] * len(files)
        if not self.files:
            raise FileNotFoundError(f"no N-MNIST .bin files under {str(cand)!r} (expected <digit>/*.bin)")
        self.labels = check_labels(labels, self.num_classes, repr(str(cand)), names=self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path = self.files[i]
        x = frame_events(read_nmnist_events(path), dt=self.dt, num_steps=self.num_steps,
                         merge_polarity=self.merge_polarity, binary=self.binary,
                         max_count=self.max_count, name=repr(str(path)))
        if self.flatten:
            x = x.reshape(x.shape[0], -1)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])

    def __repr__(self) -> str:
        return f"NMNIST({str(self.folder)!r}, {len(self)} samples, T={self.num_steps}, dt={self.dt})"
