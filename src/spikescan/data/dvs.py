"""DVS-CIFAR10 (Li et al. 2017) through ``tonic``, framed to a fixed number of frames.

``tonic`` is optional (``pip install spikescan[tonic]``) and imported only when a
:class:`DVSCIFAR10` is built.  The framing itself is :func:`events_to_frames`, a pure function
that follows SpikingJelly's ``integrate_events_by_fixed_frames_number`` (which PSU's scripts use):

- ``split_by="number"``: the event stream (in file order) is cut into ``n_frames`` runs of
  ``N // n_frames`` events, the last run taking the remainder;
- ``split_by="time"``: with integer ``w = (t_last - t_first) // n_frames``, frame ``k`` holds the
  events with ``t_first + k*w <= t < t_first + (k+1)*w`` and the last frame everything after.

Each frame counts the events per ``(polarity, y, x)``: the result is ``[n_frames, P, H, W]``.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ._common import check_labels, dense_counts

__all__ = ["events_to_frames", "DVSCIFAR10"]

_TONIC_HINT = "DVS-CIFAR10 is read through tonic, which is not installed: pip install spikescan[tonic]"


def events_to_frames(x, y, p, t, sensor_size, n_frames: int, *, split_by: str = "number") -> torch.Tensor:
    """Frame an event stream: ``[n_frames, P, H, W]`` float32 counts; ``sensor_size = (W, H, P)``.

    ``x, y, p, t`` are 1-D arrays of one length (pixel column, row, polarity in ``[0, P)``,
    timestamps, non-decreasing for ``split_by="time"``).  See the module docstring for the two
    ways of cutting the stream.  An empty stream gives all-zero frames.
    """
    if not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be an int >= 1, got {n_frames!r}")
    if split_by not in ("number", "time"):
        raise ValueError(f"split_by must be 'number' or 'time', got {split_by!r}")
    if len(sensor_size) != 3:
        raise ValueError(f"sensor_size must be (width, height, polarities), got {sensor_size!r}")
    width, height, pols = (int(v) for v in sensor_size)
    x, y, p, t = (np.asarray(v).ravel() for v in (x, y, p, t))
    n = x.size
    if not (y.size == p.size == t.size == n):
        raise ValueError(f"x, y, p, t must have one length, got {x.size}, {y.size}, {p.size}, {t.size}")
    x, y, p = x.astype(np.int64), y.astype(np.int64), p.astype(np.int64)
    for name, v, hi in (("x", x, width), ("y", y, height), ("p", p, pols)):
        if n and (v.min() < 0 or v.max() >= hi):
            raise ValueError(f"{name} must lie in [0, {hi}) for sensor_size {tuple(sensor_size)}, "
                             f"got [{v.min()}, {v.max()}]")
    if split_by == "number":
        per = n // n_frames
        frame = np.minimum(np.arange(n) // per, n_frames - 1) if per else np.full(n, n_frames - 1)
    elif n:
        if np.any(np.diff(t) < 0):
            raise ValueError("t must be non-decreasing for split_by='time'")
        rel = t - t[0]
        w = (t[-1] - t[0]) // n_frames
        frame = np.minimum(rel // w, n_frames - 1).astype(np.int64) if w > 0 else np.zeros(n, np.int64)
    else:
        frame = np.zeros(0, np.int64)
    shape = (n_frames, pols, height, width)
    return dense_counts(((frame * pols + p) * height + y) * width + x, math.prod(shape), shape)


class DVSCIFAR10(Dataset):
    """DVS-CIFAR10 via ``tonic.datasets.CIFAR10DVS(save_to=root)``; items ``(x [T, 2, H, W], label)``.

    Args:
        root: the folder tonic keeps the data set in (it must already hold it: nothing is
            downloaded here).
        n_frames: ``T`` (PSU: 10).
        split_by: ``"number"`` (SpikingJelly's default, PSU) or ``"time"``; see :func:`events_to_frames`.
        size: resize frames to ``size x size`` (bilinear, antialiased; PSU: 48), or ``None`` for 128.
        train: ``None`` for all 10 000 samples; ``True`` / ``False`` for SpikingJelly's fixed
            split: per class, the first ``ceil(train_fraction * n)`` samples train, the rest test.
        transform: applied to ``x``.
    """

    num_classes = 10

    def __init__(self, root, *, n_frames: int = 10, split_by: str = "number", size: int | None = None,
                 train: bool | None = None, train_fraction: float = 0.9, transform: Callable | None = None):
        try:
            import tonic
        except ImportError:
            raise ImportError(_TONIC_HINT) from None
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction!r}")
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be None or an int >= 1, got {size!r}")
        events_to_frames(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), (1, 1, 1), n_frames,
                         split_by=split_by)  # validates n_frames and split_by now
        self.source = tonic.datasets.CIFAR10DVS(save_to=str(root))
        self.sensor_size = tuple(getattr(self.source, "sensor_size", (128, 128, 2)))
        self.n_frames, self.split_by, self.size, self.transform = n_frames, split_by, size, transform
        self._where = f"tonic CIFAR10DVS in {str(root)!r}"
        targets = check_labels(self.source.targets, self.num_classes, self._where)
        if train is None:
            self.indices = np.arange(len(targets))
        else:
            keep = []
            for c in np.unique(targets):
                idx = np.flatnonzero(targets == c)
                cut = math.ceil(len(idx) * train_fraction)
                keep.append(idx[:cut] if train else idx[cut:])
            self.indices = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
        self.targets = targets[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        k = int(self.indices[i])
        events, label = self.source[k]
        if int(label) != int(self.targets[i]):
            raise ValueError(f"{self._where}: sample {k} has label {label!r} but targets[{k}] = {self.targets[i]}")
        x = events_to_frames(events["x"], events["y"], events["p"], events["t"], self.sensor_size,
                             self.n_frames, split_by=self.split_by)
        if self.size is not None:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=True)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(label)
