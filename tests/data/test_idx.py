import gzip
import math

import numpy as np
import pytest
import torch

from spikescan.data.idx import FashionMNIST, MNIST, MNISTLike, read_idx, write_idx


def test_header_bytes_by_hand(tmp_path):
    p = tmp_path / "lbl"
    p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9]))
    a = read_idx(p, 2049)
    assert a.dtype == np.uint8 and a.tolist() == [7, 0, 9]
    p.write_bytes(bytes([0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))
    assert read_idx(p).tolist() == [[258, -2]]  # big-endian int16


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path, dtype, gz):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype) if dtype != np.uint8 else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = write_idx(tmp_path / ("a.gz" if gz else "a"), a)
    b = read_idx(p)
    assert b.dtype == a.dtype and np.array_equal(a, b)


def test_errors(tmp_path):
    img = write_idx(tmp_path / "img", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="img.*magic number 2051, expected 2049"):
        read_idx(img, 2049)
    data = img.read_bytes()
    img.write_bytes(data[:-1])
    with pytest.raises(ValueError, match="img.*truncated.*expected 1584"):
        read_idx(img)
    img.write_bytes(data + b"\0")
    with pytest.raises(ValueError, match="img.*longer"):
        read_idx(img)
    img.write_bytes(data[:10])
    with pytest.raises(ValueError, match="img.*truncated"):
        read_idx(img)
    img.write_bytes(b"PK\3\4whatever")
    with pytest.raises(ValueError, match="img.*not an IDX file"):
        read_idx(img)
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(data)[:-8])
    with pytest.raises(ValueError, match="x.gz.*gzip"):
        read_idx(gz)
    with pytest.raises(FileNotFoundError, match="missing"):
        read_idx(tmp_path / "missing")


def _make_root(root, n=3, gz=True, sub=""):
    d = root / sub if sub else root
    d.mkdir(parents=True, exist_ok=True)
    imgs = np.zeros((n, 28, 28), np.uint8)
    imgs[:, 0, 0] = 255  # p = 1  -> TTFS step 4
    imgs[:, 0, 1] = 64  # p = 0.251 -> step 32
    imgs[:, 27, 27] = 51  # p = 0.2 = theta -> silent
    labels = np.arange(n, dtype=np.uint8) % 10
    ext = ".gz" if gz else ""
    for split in ("train", "t10k"):
        write_idx(d / f"{split}-images-idx3-ubyte{ext}", imgs)
        write_idx(d / f"{split}-labels-idx1-ubyte{ext}", labels)
    return imgs, labels


def test_dataset_ttfs(tmp_path):
    _make_root(tmp_path)
    ds = FashionMNIST(tmp_path)
    assert len(ds) == 3 and ds.num_steps == 784
    x, y = ds[2]
    assert x.shape == (784, 784) and y == 2
    step = math.floor(0.02 * math.log((64 / 255) / (64 / 255 - 0.2)) / 1e-3)
    assert x[4, 0] == 1 and x[step, 1] == 1 and x.sum() == 2


def test_dataset_other_encodings_and_layouts(tmp_path):
    _make_root(tmp_path, gz=False, sub="FashionMNIST/raw")
    lat = FashionMNIST(tmp_path, train=False, encoding="latency", num_steps=10, flatten=False)
    x, _ = lat[0]
    assert x.shape == (10, 1, 28, 28) and x[0, 0, 0, 0] == 1 and x.sum() == 3
    torch.manual_seed(0)
    r = FashionMNIST(tmp_path, encoding="rate", num_steps=5)[0][0]
    assert r.shape == (5, 784) and bool((r[:, 0] == 1).all()) and r[:, 2:27 * 28].sum() == 0
    img = FashionMNIST(tmp_path, encoding=None)[0][0]
    assert img.shape == (784,) and img[0] == 1
    with pytest.raises(ValueError, match="num_steps"):
        FashionMNIST(tmp_path, encoding="rate")
    with pytest.raises(ValueError, match="encoding"):
        FashionMNIST(tmp_path, encoding="phase")
    with pytest.raises(ValueError, match="theta"):
        FashionMNIST(tmp_path, theta=2.0)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        MNIST(tmp_path)


def test_dataset_mismatch(tmp_path):
    _make_root(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="3 images.*5 labels"):
        MNISTLike(tmp_path)


@pytest.mark.parametrize("cls, bad", [(MNIST, 10), (FashionMNIST, 255)])
def test_out_of_range_label_names_file_value_and_sample(tmp_path, cls, bad):
    _make_root(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, bad, 3], np.uint8))
    with pytest.raises(ValueError, match=rf"train-labels-idx1-ubyte.*\[0, 10\).*label {bad} at sample 1\b"):
        cls(tmp_path)
    assert len(cls(tmp_path, train=False)) == 3  # the test split's labels are fine


def test_corrupt_or_truncated_files_are_refused_with_the_file_named(tmp_path):
    _make_root(tmp_path, gz=True)
    img = tmp_path / "train-images-idx3-ubyte.gz"
    good = img.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # one flipped byte in the deflate stream
    for data in (bytes(bad), good[: len(good) // 2], good[:5], b""):
        img.write_bytes(data)
        with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*(gzip|truncated)"):
            MNIST(tmp_path)
    img.write_bytes(good)
    lbl = tmp_path / "t10k-labels-idx1-ubyte.gz"
    lbl.write_bytes(gzip.compress(gzip.decompress(lbl.read_bytes())[:-1]))  # a valid gzip of a short file
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz.*truncated"):
        MNIST(tmp_path, train=False)
    raw = tmp_path / "raw"
    raw.write_bytes(b"")
    with pytest.raises(ValueError, match=r"raw.*truncated: 0 bytes"):
        read_idx(raw)
