"""A data split encoded once and kept as events; batches built in one vectorized step.

Encoding a time-to-first-spike image per item into a dense ``[784, 784]`` tensor and stacking
128 of them costs more than the network's training step.  :class:`EncodedSpikes` encodes the
whole split once and stores only its events (per sample: the step and channel of every nonzero
entry, and its value when it is not 1), about 400 events per F-MNIST image instead of 614 656
dense entries.  ``DataLoader`` calls :meth:`EncodedSpikes.__getitems__` with the indices of a
batch, which gathers their events with a few numpy operations (no per-sample Python work) into
a :class:`~spikescan.ops.events.SpikeEvents` ``[T, B, C]``; ``dataset[i]`` still gives the dense
``([T, C], label)`` sample for code that wants one (plots, other models).

Builders: :meth:`EncodedSpikes.from_images` (TTFS / latency codes of 8-bit images, through a
256-entry table computed by the encoders themselves, so every spike equals the per-item
encoding's) and :meth:`EncodedSpikes.from_dataset` (any deterministic dataset of ``[T, C]``
samples, e.g. N-MNIST or SHD frames; one pass).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..ops.events import SpikeEvents
from ._common import check_labels

__all__ = ["EncodedSpikes", "EventBatch", "ENCODINGS_AS_EVENTS"]

#: image encodings that are deterministic, hence encodable once (rate codes draw anew each epoch)
ENCODINGS_AS_EVENTS = ("ttfs", "ttfs-code", "latency")


class EventBatch(NamedTuple):
    """A batch from :meth:`EncodedSpikes.__getitems__`: events ``x`` ``[T, B, C]`` and labels ``y`` ``[B]``."""

    x: SpikeEvents
    y: torch.Tensor


class EncodedSpikes(Dataset):
    """Spike trains of a split as events: sample ``i`` has events ``offsets[i] .. offsets[i+1]-1``
    at ``(steps[e], channels[e])`` with value ``values[e]`` (1 when ``values`` is None).

    ``source`` names where the spikes came from (for error messages and ``repr``).
    """

    def __init__(self, offsets, steps, channels, labels, num_steps: int, num_channels: int, values=None, *,
                 num_classes: int | None = None, source: str = "events"):
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self.steps = np.ascontiguousarray(steps, dtype=np.int32)
        self.channels = np.ascontiguousarray(channels, dtype=np.int32)
        self.values = None if values is None else np.ascontiguousarray(values, dtype=np.float32)
        self.num_steps, self.num_channels, self.source = int(num_steps), int(num_channels), source
        n = self.offsets.size - 1
        if n < 0 or self.offsets[0] != 0 or self.offsets[-1] != self.steps.size or (np.diff(self.offsets) < 0).any():
            raise ValueError(f"{source}: offsets must rise from 0 to the number of events {self.steps.size}")
        if self.steps.shape != self.channels.shape or (self.values is not None and self.values.shape != self.steps.shape):
            raise ValueError(f"{source}: steps, channels (and values) must have one entry per event")
        for name, a, hi in (("steps", self.steps, self.num_steps), ("channels", self.channels, self.num_channels)):
            if a.size and (a.min() < 0 or a.max() >= hi):
                raise ValueError(f"{source}: {name} must lie in [0, {hi}), got [{a.min()}, {a.max()}]")
        self.labels = torch.from_numpy(check_labels(labels, num_classes, source))
        if self.labels.numel() != n:
            raise ValueError(f"{source}: {n} samples of events but {self.labels.numel()} labels")

    # -- builders -----------------------------------------------------------------------------
    @classmethod
    def from_images(cls, images, labels, encoding: str, num_steps: int, *, num_classes: int | None = None,
                    source: str = "images", **encoding_kwargs) -> "EncodedSpikes":
        """One spike per pixel at most: the ``"ttfs"``, ``"ttfs-code"`` or ``"latency"`` code of uint8 ``images`` ``[N, ...]``.

        Each of the 256 pixel values is encoded once by the encoder itself
        (:mod:`spikescan.data.encodings`, on ``value / 255`` in float64 as the per-item loaders
        do); the images then only index that table.
        """
        from .encodings import latency_encode, ttfs_code_encode, ttfs_encode

        encoders = {"ttfs": ttfs_encode, "ttfs-code": ttfs_code_encode, "latency": latency_encode}
        if encoding not in encoders:
            raise ValueError(f"encoding must be one of {list(encoders)} to be stored as events, got {encoding!r} "
                             "(a rate code is drawn anew every epoch)")
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(f"{source}: images must be uint8, got {images.dtype}")
        table = encoders[encoding](torch.arange(256, dtype=torch.float64) / 255.0, num_steps, **encoding_kwargs)
        fires = table.sum(0) > 0  # [256]
        step_of = torch.where(fires, table.argmax(0), torch.full((256,), -1)).numpy()
        flat = images.reshape(len(images), -1)
        steps = step_of[flat]  # [N, C], -1 where a pixel does not fire
        sample, channel = np.nonzero(steps >= 0)
        offsets = np.zeros(len(flat) + 1, dtype=np.int64)
        np.cumsum(np.bincount(sample, minlength=len(flat)), out=offsets[1:])
        return cls(offsets, steps[sample, channel], channel, labels, num_steps, flat.shape[1],
                   num_classes=num_classes, source=source)

    @classmethod
    def from_dataset(cls, dataset, *, num_classes: int | None = None, source: str | None = None) -> "EncodedSpikes":
        """The events of every sample ``(x [T, C], label)`` of a deterministic ``dataset`` (one pass)."""
        n = len(dataset)
        if n == 0:
            raise ValueError(f"{source or type(dataset).__name__}: the dataset is empty")
        offsets = np.zeros(n + 1, dtype=np.int64)
        steps, channels, values, labels = [], [], [], []
        shape = None
        for i in range(n):
            x, y = dataset[i]
            x = torch.as_tensor(x)
            if x.dim() != 2:
                raise ValueError(f"{source or type(dataset).__name__}: sample {i} has shape {tuple(x.shape)}, "
                                 "expected [T, C]")
            if shape is None:
                shape = tuple(x.shape)
            elif tuple(x.shape) != shape:
                raise ValueError(f"{source or type(dataset).__name__}: sample {i} has shape {tuple(x.shape)}, "
                                 f"sample 0 has {shape}")
            t, c = torch.nonzero(x, as_tuple=True)
            steps.append(t.numpy().astype(np.int32))
            channels.append(c.numpy().astype(np.int32))
            values.append(x[t, c].numpy().astype(np.float32))
            offsets[i + 1] = offsets[i] + t.numel()
            labels.append(int(y))
        vals = np.concatenate(values)
        return cls(offsets, np.concatenate(steps), np.concatenate(channels), labels, shape[0], shape[1],
                   None if (vals == 1).all() else vals, num_classes=num_classes,
                   source=source or type(dataset).__name__)

    # -- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.labels.numel()

    @property
    def num_events(self) -> int:
        return self.steps.size

    def __getitem__(self, i: int):
        """Sample ``i`` dense: ``(x [T, C] float32, label)``."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        i %= n
        lo, hi = self.offsets[i], self.offsets[i + 1]
        x = torch.zeros(self.num_steps, self.num_channels)
        vals = 1.0 if self.values is None else torch.from_numpy(self.values[lo:hi])
        x.index_put_((torch.from_numpy(self.steps[lo:hi]).long(), torch.from_numpy(self.channels[lo:hi]).long()),
                     torch.as_tensor(vals, dtype=torch.float32).expand(hi - lo), accumulate=True)
        return x, int(self.labels[i])

    def __getitems__(self, indices) -> EventBatch:
        """Samples ``indices`` as one batch of events ``[T, B, C]`` (no loop over the samples)."""
        from ..ops._kernels.event_numba import gather_events

        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"indices must lie in [-{n}, {n}) for {n} samples, got {idx.min()} .. {idx.max()}")
        idx = idx % max(n, 1)
        B, T = idx.size, self.num_steps
        total = int((self.offsets[idx + 1] - self.offsets[idx]).sum())
        crow = np.zeros(T * B + 1, dtype=np.int64)
        channels = np.empty(total, dtype=np.int64)
        src = np.empty(total, dtype=np.int64)
        gather_events(self.offsets, self.steps, self.channels, idx, T, crow, channels, src)
        values = None if self.values is None else torch.from_numpy(self.values[src])
        x = SpikeEvents(torch.from_numpy(crow), torch.from_numpy(channels), (T, B, self.num_channels), values,
                        check=False)
        return EventBatch(x, self.labels[torch.from_numpy(idx)])

    def __repr__(self) -> str:
        return (f"EncodedSpikes({self.source}: {len(self)} samples, T={self.num_steps}, C={self.num_channels}, "
                f"{self.num_events} events, {self.num_events / max(len(self), 1):.1f} per sample)")
