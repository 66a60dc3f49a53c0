"""Tiny data sets in the real on-disk formats, written with the loaders' own writers."""

from __future__ import annotations

import sys
import types

import numpy as np

from spikescan.data import write_cifar_batch, write_idx, write_nmnist_events, write_spike_hdf5
from spikescan.data.nmnist import EVENT_DTYPE


def write_shd(root, prefix="shd", n=4, classes=20, splits=("train", "test"), seed=0):
    """``{prefix}_{split}.h5`` in the SHD layout: ``n`` samples of 30 spikes in the first 0.3 s."""
    rng = np.random.default_rng(seed)
    for split in splits:
        times = [np.sort(rng.uniform(0, 0.3, 30)) for _ in range(n)]
        units = [rng.integers(0, 700, 30) for _ in range(n)]
        write_spike_hdf5(root / f"{prefix}_{split}.h5", times, units, [k % classes for k in range(n)])
    return root


def write_nmnist(root, per_split=2, seed=0):
    """``Train/<digit>/*.bin`` and ``Test/<digit>/*.bin`` with 40 events in the first 0.2 s each."""
    rng = np.random.default_rng(seed)
    for split in ("Train", "Test"):
        for k in range(per_split):
            d = root / split / str(k % 10)
            d.mkdir(parents=True, exist_ok=True)
            ev = np.zeros(40, dtype=EVENT_DTYPE)
            ev["x"], ev["y"] = rng.integers(0, 34, 40), rng.integers(0, 34, 40)
            ev["p"], ev["t"] = rng.integers(0, 2, 40), np.sort(rng.integers(0, 200_000, 40))
            write_nmnist_events(d / f"{k:05d}.bin", ev)
    return root


def write_mnist_idx(root, n=4, seed=0):
    """The four MNIST IDX files (uncompressed) with ``n`` random images each split."""
    rng = np.random.default_rng(seed)
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    return root


def write_cifar(root, hundred=False, per_file=2, seed=0):
    """CIFAR-10 (``cifar-10-batches-py/``) or CIFAR-100 (``cifar-100-python/``) python batches."""
    rng = np.random.default_rng(seed)
    if hundred:
        folder, names, key, classes = root / "cifar-100-python", ("train", "test"), "fine_labels", 100
    else:
        folder, key, classes = root / "cifar-10-batches-py", "labels", 10
        names = tuple(f"data_batch_{k}" for k in range(1, 6)) + ("test_batch",)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        imgs = rng.integers(0, 256, (per_file, 3, 32, 32), dtype=np.uint8)
        write_cifar_batch(folder / name, imgs, [k % classes for k in range(per_file)], label_key=key)
    return root


def install_fake_tonic(monkeypatch, n=100):
    """A stand-in ``tonic`` whose ``CIFAR10DVS`` serves ``n`` short event streams (10 per class: 9 train, 1 test)."""
    dtype = np.dtype([("x", np.int16), ("y", np.int16), ("p", bool), ("t", np.int64)])

    class FakeCIFAR10DVS:
        sensor_size = (128, 128, 2)

        def __init__(self, save_to):
            self.save_to = save_to
            self.targets = [k % 10 for k in range(n)]

        def __getitem__(self, i):
            ev = np.zeros(30, dtype=dtype)
            ev["x"], ev["y"], ev["p"], ev["t"] = (i * 7) % 128, 5, np.arange(30) % 2, np.arange(30) * 1000
            return ev, self.targets[i]

    fake = types.ModuleType("tonic")
    fake.datasets = types.SimpleNamespace(CIFAR10DVS=FakeCIFAR10DVS)
    monkeypatch.setitem(sys.modules, "tonic", fake)


def write_dataset(name, root, monkeypatch=None):
    """Write a tiny copy of data set ``name`` under ``root``; returns the ``data_dir`` to use."""
    root.mkdir(parents=True, exist_ok=True)
    if name == "shd":
        return write_shd(root)
    if name == "ssc":
        return write_shd(root, prefix="ssc", classes=35)
    if name == "nmnist":
        return write_nmnist(root)
    if name in ("mnist", "fmnist"):
        return write_mnist_idx(root)
    if name in ("cifar10", "scifar10"):
        return write_cifar(root)
    if name == "cifar100":
        return write_cifar(root, hundred=True)
    if name == "dvs-cifar10":
        install_fake_tonic(monkeypatch)
        return root
    if name == "digits":
        return None
    raise ValueError(name)
