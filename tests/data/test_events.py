"""EncodedSpikes: a split encoded once as events gives the same samples as the per-item loaders,
and batches built in one step equal the stacked dense samples."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from spikescan.data import EncodedSpikes, EventBatch, build_datasets, supports_events
from spikescan.data.idx import FashionMNIST, MNIST
from spikescan.data.nmnist import NMNIST
from tests.train._fixtures import write_dataset

REAL = Path(os.environ.get("SPIKESCAN_REAL_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def _dense_batch(ds, idx):
    return torch.stack([ds[i][0] for i in idx], 1), torch.tensor([ds[i][1] for i in idx])


def _check_same_samples(per_item, encoded, idx):
    assert len(per_item) == len(encoded)
    for i in idx:
        x, y = per_item[i]
        xe, ye = encoded[i]
        assert torch.equal(x, xe) and y == ye, i
    batch = encoded.__getitems__(list(idx))
    assert isinstance(batch, EventBatch)
    want_x, want_y = _dense_batch(per_item, idx)
    assert torch.equal(batch.x.dense(), want_x) and torch.equal(batch.y, want_y)


@pytest.mark.parametrize("encoding,kwargs", [("ttfs", {"dt": 1e-3}), ("ttfs", {"dt": 2e-3, "theta": 0.1}),
                                             ("ttfs", {"rounding": "nearest"}), ("ttfs-code", {}),
                                             ("latency", {})])
def test_images_encoded_once_equal_the_per_item_code(tmp_path, encoding, kwargs):
    root = write_dataset("mnist", tmp_path / "mnist")
    per_item = MNIST(root, True, encoding=encoding, num_steps=100, **kwargs)
    enc = EncodedSpikes.from_images(per_item.images.numpy(), per_item.labels.numpy(), encoding, 100, **kwargs)
    _check_same_samples(per_item, enc, [0, 3, 1, 2])


def test_a_threshold_pixel_and_extremes_are_coded_as_the_encoder_does():
    images = np.array([[0, 51, 52, 255, 128, 1]], dtype=np.uint8)  # 51/255 = theta exactly: no spike
    enc = EncodedSpikes.from_images(images, [3], "ttfs", 784, dt=1e-3)
    from spikescan.data.encodings import ttfs_encode

    want = ttfs_encode(torch.from_numpy(images[0]).double() / 255.0, 784)
    assert torch.equal(enc[0][0], want) and enc.num_events == 3


@pytest.mark.parametrize("name", ["nmnist", "shd", "digits"])
def test_other_datasets_encoded_once_equal_their_items(tmp_path, name):
    root = write_dataset(name, tmp_path / name)
    per_item = build_datasets(name, root, num_steps=40 if name != "digits" else 16)
    encoded = build_datasets(name, root, num_steps=40 if name != "digits" else 16, events=True)
    for split in (0, 1):
        n = len(per_item[split])
        _check_same_samples(per_item[split], encoded[split], list(range(min(n, 5)))[::-1])
    assert encoded[2:] == per_item[2:]


def test_loader_batches_through_getitems_without_collate_work(tmp_path):
    from spikescan.train.loop import _collate

    root = write_dataset("mnist", tmp_path / "m")
    _, test, _, _ = build_datasets("mnist", root, num_steps=50, events=True)
    loader = DataLoader(test, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(0),
                        collate_fn=_collate)
    seen = []
    for x, y in loader:
        assert x.shape[:2] == (50, len(y))
        seen += y.tolist()
    assert sorted(seen) == sorted(test.labels.tolist())


def test_batch_rows_keep_each_sample_s_event_order():
    # the kernels sum a row's events in CSR order, so a batch must keep the order in which each
    # sample stores them (several events per (step, channel) row and values included): the CSR
    # equals the one a stable argsort of the rows t * B + b builds
    rng = np.random.default_rng(3)
    T, C, n = 6, 5, 7
    counts = rng.integers(0, 9, n)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    steps = rng.integers(0, T, offsets[-1])
    channels = rng.integers(0, C, offsets[-1])
    values = rng.normal(size=offsets[-1]).astype(np.float32)
    ds = EncodedSpikes(offsets, steps, channels, np.arange(n) % 3, num_steps=T, num_channels=C, values=values)
    idx = [4, 0, 6, 4, -1, 2]
    batch = ds.__getitems__(idx)
    pos = np.concatenate([np.arange(offsets[i % n], offsets[i % n + 1]) for i in idx])
    rows = steps[pos] * len(idx) + np.repeat(np.arange(len(idx)), [counts[i % n] for i in idx])
    order = pos[np.argsort(rows, kind="stable")]
    assert np.array_equal(batch.x.crow.numpy(), np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=T * len(idx)))]))
    assert np.array_equal(batch.x.channels.numpy(), channels[order])
    assert np.array_equal(batch.x.values.numpy(), values[order])
    assert batch.y.tolist() == [i % n % 3 for i in idx]
    assert torch.equal(batch.x.dense(), torch.stack([ds[i][0] for i in idx], 1))
    with pytest.raises(IndexError, match="indices must lie"):
        ds.__getitems__([0, n])


def test_what_cannot_be_events_says_so():
    assert supports_events("fmnist", "ttfs") and not supports_events("fmnist", "rate")
    assert not supports_events("cifar10") and not supports_events("shd", train_transform=lambda x: x)
    with pytest.raises(ValueError, match="cannot be served as events"):
        build_datasets("fmnist", "/nowhere", encoding="rate", events=True)
    with pytest.raises(ValueError, match="rate code"):
        EncodedSpikes.from_images(np.zeros((1, 4), np.uint8), [0], "rate", 10)
    with pytest.raises(ValueError, match="labels"):
        EncodedSpikes.from_images(np.zeros((1, 4), np.uint8), [12], "ttfs", 10, num_classes=10)
    with pytest.raises(ValueError, match="steps must lie"):
        EncodedSpikes([0, 1], [9], [0], [0], num_steps=5, num_channels=3)


@pytest.mark.parametrize("cls,folder", [(FashionMNIST, "fashion-mnist"), (MNIST, "mnist")])
def test_real_images_as_events(cls, folder):
    root = REAL / folder
    if not root.is_dir():
        pytest.skip(f"real data not found: {str(root)!r} (set SPIKESCAN_REAL_DATA)")
    per_item = cls(root, False, encoding="ttfs", num_steps=784)
    enc = EncodedSpikes.from_images(per_item.images.numpy(), per_item.labels.numpy(), "ttfs", 784, dt=1e-3,
                                    num_classes=10)
    # every pixel brighter than theta = 0.2 fires exactly once, at step <= 79 (52/255 is the dimmest)
    fired = int((per_item.images > 51).sum())
    assert enc.num_events == fired and int(enc.steps.max()) <= 79
    _check_same_samples(per_item, enc, [0, 1, 9999, 4242])
    # the authors' code: every raw value >= 41 fires once, on steps 16-98
    code = build_datasets(folder.replace("fashion-", "f"), root, encoding="ttfs-code", num_steps=100,
                          events=True, test_only=True)[1]
    assert code.num_events == int((per_item.images >= 41).sum())
    assert (int(code.steps.min()), int(code.steps.max())) == (16, 98)


def test_real_nmnist_as_events():
    root = REAL / "nmnist"
    if not root.is_dir():
        pytest.skip(f"real data not found: {str(root)!r} (set SPIKESCAN_REAL_DATA)")
    per_item = NMNIST(root, False, merge_polarity=True, flatten=True, binary=True)
    enc = EncodedSpikes.from_dataset(per_item, num_classes=10)
    assert len(enc) == 100 and enc.values is None  # binary frames
    _check_same_samples(per_item, enc, [0, 50, 99])
