"""The loaders on the real files in ``../shared/data`` (override with ``SPIKESCAN_REAL_DATA``).

Every expected value here is known independently of our decoders: published sample and class
counts, the first labels of MNIST and Fashion-MNIST as every tutorial prints them, the N-MNIST
sensor size and recording length (Orchard et al. 2015), and the N-MNIST subset's MANIFEST.tsv
(event counts and last timestamps written by ``shared/data/verify.py``, a decoder of its own).
Each test skips, saying why, when the data is not there.
"""

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from spikescan.data.idx import FashionMNIST, MNIST
from spikescan.data.nmnist import NMNIST, read_nmnist_events

REAL = Path(os.environ.get("SPIKESCAN_REAL_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def _real(sub: str) -> Path:
    d = REAL / sub
    if not d.is_dir():
        pytest.skip(f"real data not found: {str(d)!r} (the shared data folder next to the repository, "
                    f"or set SPIKESCAN_REAL_DATA)")
    return d


# ------------------------------------------------------------------------------ MNIST / Fashion-MNIST
IDX_FACTS = {  # (class, folder, split): (samples, first ten labels, samples per class 0..9)
    (MNIST, "mnist", True): (60000, [5, 0, 4, 1, 9, 2, 1, 3, 1, 4],
                             [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]),
    (MNIST, "mnist", False): (10000, [7, 2, 1, 0, 4, 1, 4, 9, 5, 9],
                              [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]),
    (FashionMNIST, "fashion-mnist", True): (60000, [9, 0, 0, 3, 0, 2, 7, 2, 5, 5], [6000] * 10),
    (FashionMNIST, "fashion-mnist", False): (10000, [9, 2, 1, 1, 6, 1, 4, 6, 5, 7], [1000] * 10),
}


@pytest.mark.parametrize("cls, folder, train", list(IDX_FACTS), ids=lambda v: getattr(v, "__name__", str(v)))
def test_idx_counts_shapes_and_first_labels(cls, folder, train):
    n, first, per_class = IDX_FACTS[(cls, folder, train)]
    ds = cls(_real(folder), train, encoding=None, flatten=False)
    assert ds.images_path.name.endswith(".gz")  # the files as published, gzipped
    assert len(ds) == n and tuple(ds.images.shape) == (n, 28, 28)
    assert ds.labels[:10].tolist() == first
    assert np.bincount(ds.labels.numpy(), minlength=10).tolist() == per_class  # also: every label in 0..9
    x, y = ds[0]
    assert tuple(x.shape) == (1, 28, 28) and y == first[0]
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.0


def test_mnist_first_sample_through_the_default_encoding():
    x, y = MNIST(_real("mnist"))[0]
    assert y == 5 and tuple(x.shape) == (784, 784)  # TTFS: 784 steps (FastSNN Table 1) x 784 pixels
    assert set(x.unique().tolist()) <= {0.0, 1.0} and float(x.sum(0).max()) == 1.0  # at most one spike a pixel


# ------------------------------------------------------------------------------ N-MNIST
def _manifest(root: Path) -> dict:
    with open(root / "MANIFEST.tsv", newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f, delimiter="\t")}


@pytest.mark.parametrize("train, n", [(True, 1000), (False, 100)])
def test_nmnist_counts_shapes_and_labels(train, n):
    root = _real("nmnist")
    ds = NMNIST(root, train)
    assert len(ds) == n and ds.labels.min() >= 0 and ds.labels.max() <= 9
    assert len(np.unique(ds.labels)) == 10
    manifest = _manifest(root)
    for path, label in zip(ds.files, ds.labels):
        assert int(manifest[path.relative_to(root).as_posix()]["label"]) == label
    x, y = ds[0]
    assert tuple(x.shape) == (300, 2, 34, 34) and y == 0 and float(x.sum()) > 0  # files in label order


def test_nmnist_labels_equal_the_mnist_labels_of_the_same_digits():
    """The subset's file ids are MNIST indices (id k = MNIST sample k - 1): two data sets, one truth."""
    root = _real("nmnist")
    mnist_train = MNIST(_real("mnist"), True, encoding=None).labels
    mnist_test = MNIST(_real("mnist"), False, encoding=None).labels
    for train, mnist in ((True, mnist_train), (False, mnist_test)):
        ds = NMNIST(root, train)
        ids = np.array([int(p.stem) for p in ds.files])
        assert np.array_equal(mnist.numpy()[ids - 1], ds.labels)
    assert (root / "Train" / "5" / "00001.bin").is_file()  # the first MNIST digit is a 5


def test_nmnist_every_file_decodes_like_its_manifest():
    root = _real("nmnist")
    manifest = _manifest(root)
    assert sum(rel.startswith(("Train/", "Test/")) for rel in manifest) == 1100  # and the tonic sample
    for rel, row in manifest.items():
        ev = read_nmnist_events(root / rel)
        assert ev.size == int(row["events"]) and int(ev["t"][-1]) == int(row["t_max_us"]), rel
        assert ev["x"].max() < 34 and ev["y"].max() < 34 and set(np.unique(ev["p"])) == {0, 1}, rel
        assert np.all(np.diff(ev["t"]) >= 0), rel
        assert 250_000 <= ev["t"][-1] <= 350_000, rel  # three saccades of about 100 ms


def test_nmnist_tonic_sample():
    ev = read_nmnist_events(_real("nmnist") / "tonic_sample_nmnist.bin")
    assert ev.size == 4325 and ev["x"].max() < 34 and ev["y"].max() < 34  # 4325: the data's README
