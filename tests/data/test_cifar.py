import pickle

import numpy as np
import pytest
import torch

from spikescan.data.cifar import CIFAR10, CIFAR100, read_cifar_batch, write_cifar_batch


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


@pytest.fixture
def c10(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    imgs = [_images(2, k) for k in range(6)]
    for k in range(5):
        write_cifar_batch(d / f"data_batch_{k + 1}", imgs[k], [k, 9])
    write_cifar_batch(d / "test_batch", imgs[5], [3, 4])
    return tmp_path, imgs


def test_batch_round_trip_and_layout(tmp_path):
    imgs = _images(3, 0)
    p = write_cifar_batch(tmp_path / "b", imgs, [1, 2, 3])
    a, y = read_cifar_batch(p)
    assert np.array_equal(a, imgs) and y.tolist() == [1, 2, 3]
    # the raw row layout: 1024 red values, then green, then blue, each row-major
    raw = pickle.loads(p.read_bytes(), encoding="bytes")[b"data"]
    assert raw[0, 1024 + 32 * 5 + 7] == imgs[0, 1, 5, 7]


def test_cifar10_modes(c10):
    root, imgs = c10
    ds = CIFAR10(root)
    assert len(ds) == 10 and [ds[i][1] for i in range(4)] == [0, 9, 1, 9]
    x, _ = ds[2]  # batch 2, first image
    ref = torch.from_numpy(imgs[1][0]).float() / 255
    assert x.shape == (3, 32, 32) and torch.equal(x, ref)
    row = CIFAR10(root, mode="row")[2][0]
    assert row.shape == (32, 96)
    assert torch.equal(row[5], torch.cat([ref[0, 5], ref[1, 5], ref[2, 5]]))
    col = CIFAR10(root, mode="column")[2][0]
    assert col.shape == (32, 96) and torch.equal(col[7], torch.cat([ref[0, :, 7], ref[1, :, 7], ref[2, :, 7]]))
    st = CIFAR10(root, train=False, mode="static", num_steps=4)[1]
    assert st[0].shape == (4, 3, 32, 32) and st[1] == 4
    assert torch.equal(st[0][3], torch.from_numpy(imgs[5][1]).float() / 255)
    n = CIFAR10(root, normalize=True)[0][0]
    assert abs(float(n[0, 0, 0]) - (imgs[0][0, 0, 0, 0] / 255 - 0.4914) / 0.2470) < 1e-5
    flip = CIFAR10(root, mode="row", transform=lambda im: im.flip(-1))[2][0]
    assert torch.equal(flip[5, :32], ref[0, 5].flip(0))


def test_cifar100(tmp_path):
    imgs = _images(3, 1)
    write_cifar_batch(tmp_path / "train", imgs, [0, 50, 99], label_key="fine_labels")
    write_cifar_batch(tmp_path / "test", imgs[:1], [7], label_key="fine_labels")
    ds = CIFAR100(tmp_path)
    assert ds.num_classes == 100 and [ds[i][1] for i in range(3)] == [0, 50, 99]
    assert len(CIFAR100(tmp_path, train=False)) == 1


def test_errors(tmp_path, c10):
    root, _ = c10
    p = root / "cifar-10-batches-py" / "data_batch_3"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match="data_batch_3.*truncated or corrupt"):
        CIFAR10(root)
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        CIFAR10(root, train=False)
    bad = tmp_path / "evil"
    bad.write_bytes(pickle.dumps({b"data": __import__("os").getcwd}))
    with pytest.raises(ValueError, match="refusing"):
        read_cifar_batch(bad)
    wrong = write_cifar_batch(tmp_path / "w", _images(1, 0), [1], label_key="fine_labels")
    with pytest.raises(ValueError, match="'labels'"):
        read_cifar_batch(wrong)
    with pytest.raises(ValueError, match="mode"):
        CIFAR10(root, mode="diagonal")


def test_out_of_range_label_names_file_value_and_sample(c10):
    root, imgs = c10
    p = write_cifar_batch(root / "cifar-10-batches-py" / "data_batch_2", imgs[1], [4, 10])
    with pytest.raises(ValueError, match=r"data_batch_2.*\[0, 10\).*label 10 at sample 1\b"):
        CIFAR10(root)
    assert read_cifar_batch(p)[1].tolist() == [4, 10]  # no class count given: not checked
    with pytest.raises(ValueError, match=r"data_batch_2.*label 10 at sample 1\b"):
        read_cifar_batch(p, num_classes=10)
    write_cifar_batch(p, imgs[1], [4, -1])
    with pytest.raises(ValueError, match=r"data_batch_2.*label -1 at sample 1\b"):
        CIFAR10(root)
