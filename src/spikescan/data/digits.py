"""The embedded default data set: scikit-learn's 8x8 handwritten digits, encoded as spikes.

1797 real 8x8 images (UCI optical digits) that ship inside scikit-learn, so the main job runs on
any machine with no download.  Pixels (0..16) are scaled to [0, 1] and encoded over
``num_steps`` steps with :func:`~spikescan.data.encodings.latency_encode` (one spike per pixel,
bright pixels early) or :func:`~spikescan.data.encodings.rate_encode` (Bernoulli per step).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_choice
from ._common import check_labels
from .encodings import latency_encode, rate_encode

ENCODINGS = ("latency", "rate")
NUM_CLASSES = 10
NUM_INPUTS = 64


class SpikeTensorDataset(Dataset):
    """In-memory spike data: item ``i`` is ``(x[:, i], y[i])`` with ``x`` stored time-first ``[T, N, ...]``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if x.dim() < 2 or x.shape[1] != y.shape[0]:
            raise ValueError(f"x must be [T, N, ...] with N = len(y) = {y.shape[0]}, got {tuple(x.shape)}")
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i):
        return self.x[:, i], int(self.y[i])


def load_digits_split(split_seed: int = 0, test_fraction: float = 0.2):
    """The digits images in [0, 1], ``(x_train, y_train, x_test, y_test)``, stratified split.

    The split depends only on ``split_seed`` (default 0), never on the training seed, so that
    every run and every seed is scored on the same test images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = load_digits()
    images = bunch.data.astype(np.float32) / 16.0
    labels = check_labels(bunch.target, NUM_CLASSES, "scikit-learn load_digits()")
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, random_state=split_seed, stratify=labels)
    return (torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te), torch.from_numpy(y_te))


def encode(images: torch.Tensor, encoding: str, num_steps: int, generator: torch.Generator | None = None):
    check_choice(encoding, "encoding", ENCODINGS)
    if encoding == "latency":
        return latency_encode(images, num_steps)
    return rate_encode(images, num_steps, generator=generator)


def digits_datasets(encoding: str = "latency", num_steps: int = 32, split_seed: int = 0,
                    test_fraction: float = 0.2, seed: int = 0):
    """Train and test :class:`SpikeTensorDataset` of digits encoded as ``[T=num_steps, 64]`` spikes."""
    x_tr, y_tr, x_te, y_te = load_digits_split(split_seed, test_fraction)
    g = torch.Generator().manual_seed(seed)
    return (SpikeTensorDataset(encode(x_tr, encoding, num_steps, g), y_tr),
            SpikeTensorDataset(encode(x_te, encoding, num_steps, g), y_te))
