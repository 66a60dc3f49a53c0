import numpy as np
import pytest
import torch

from spikescan.data.nmnist import EVENT_DTYPE, NMNIST, frame_events, read_nmnist_events, write_nmnist_events


def _events(rows):
    ev = np.zeros(len(rows), dtype=EVENT_DTYPE)
    for i, r in enumerate(rows):
        ev[i] = r
    return ev


def test_decode_hand_made_bytes(tmp_path):
    # x=1, y=2, p=1, t=0x012345; then x=33, y=0, p=0, t=7
    p = tmp_path / "a.bin"
    p.write_bytes(bytes([1, 2, 0x81, 0x23, 0x45, 33, 0, 0x00, 0x00, 0x07]))
    ev = read_nmnist_events(p)
    assert ev.dtype == EVENT_DTYPE
    assert ev.tolist() == [(1, 2, 1, 0x012345), (33, 0, 0, 7)]


def test_overflow_marker(tmp_path):
    p = tmp_path / "o.bin"
    # event at t=5, overflow marker (y=240), event at t=5 -> 5 + 2**13
    p.write_bytes(bytes([0, 0, 0, 0, 5, 0, 240, 0, 0, 0, 1, 1, 0, 0, 5]))
    ev = read_nmnist_events(p)
    assert ev["t"].tolist() == [5, 5 + 2 ** 13] and ev["x"].tolist() == [0, 1]


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ev = np.zeros(500, dtype=EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(0, 34, 500), rng.integers(0, 34, 500)
    ev["p"], ev["t"] = rng.integers(0, 2, 500), np.sort(rng.integers(0, 2 ** 23, 500))
    p = write_nmnist_events(tmp_path / "r.bin", ev)
    assert p.stat().st_size == 2500
    assert np.array_equal(read_nmnist_events(p), ev)
    with pytest.raises(ValueError, match="events\\['t'\\]"):
        write_nmnist_events(tmp_path / "bad.bin", {"x": [0], "y": [0], "p": [0], "t": [2 ** 23]})


def test_framing_exact():
    ev = _events([(0, 0, 0, 0), (3, 1, 1, 999), (3, 1, 1, 1000), (3, 1, 1, 1500), (33, 33, 0, 2999),
                  (5, 5, 0, 3000)])
    x = frame_events(ev, dt=1e-3, num_steps=3)
    exp = torch.zeros(3, 2, 34, 34)
    exp[0, 0, 0, 0] = 1
    exp[0, 1, 1, 3] = 1  # [t, p, y, x]
    exp[1, 1, 1, 3] = 2
    exp[2, 0, 33, 33] = 1  # t = 3000 us is bin 3, dropped
    assert torch.equal(x, exp)
    m = frame_events(ev, dt=1e-3, num_steps=3, merge_polarity=True, binary=True)
    assert torch.equal(m, (exp.sum(1, keepdim=True) > 0).float())
    assert frame_events(ev, dt=1e-3, num_steps=3, max_count=1)[1, 1, 1, 3] == 1
    with pytest.raises(ValueError, match="sensor"):
        frame_events(_events([(34, 0, 0, 0)]), dt=1e-3, num_steps=3)


@pytest.fixture
def nmnist_root(tmp_path):
    for split, n in (("Train", 2), ("Test", 1)):
        for d in range(10):
            (tmp_path / split / str(d)).mkdir(parents=True)
            for k in range(n):
                write_nmnist_events(tmp_path / split / str(d) / f"{k:05d}.bin",
                                    _events([(d, k, k % 2, 1000 * d + 10), (d, k, 1, 299_999)]))
    return tmp_path


def test_dataset(nmnist_root):
    ds = NMNIST(nmnist_root, train=True)
    assert len(ds) == 20 and ds.num_steps == 300
    x, y = ds[5]  # digit 2, second file (k = 1)
    assert y == 2 and x.shape == (300, 2, 34, 34) and x.sum() == 2
    assert x[2, 1, 1, 2] == 1 and x[299, 1, 1, 2] == 1
    f = NMNIST(nmnist_root, train=False, merge_polarity=True, flatten=True)
    x, y = f[3]
    assert len(f) == 10 and x.shape == (300, 1156) and y == 3
    assert x[3, 0 * 34 + 3] == 1  # y = 0, x = 3


def test_tonic_layout(nmnist_root, tmp_path_factory):
    outer = tmp_path_factory.mktemp("outer")
    (outer / "NMNIST").symlink_to(nmnist_root, target_is_directory=True)
    assert len(NMNIST(outer, train=False)) == 10


def test_errors(tmp_path, nmnist_root):
    with pytest.raises(FileNotFoundError, match="nothing"):
        read_nmnist_events(tmp_path / "nothing.bin")
    p = next((nmnist_root / "Train" / "0").glob("*.bin"))
    p.write_bytes(p.read_bytes()[:-2])
    with pytest.raises(ValueError, match=f"{p.name}.*not a multiple of 5"):
        read_nmnist_events(p)
    with pytest.raises(ValueError, match=p.name):
        NMNIST(nmnist_root)[0]
    with pytest.raises(FileNotFoundError, match="Train"):
        NMNIST(tmp_path / "Test")
    with pytest.raises(FileNotFoundError, match="missing"):
        NMNIST(tmp_path / "missing")


def test_label_folders_outside_the_ten_digits_are_refused(nmnist_root):
    stray = nmnist_root / "Train" / "10"
    stray.mkdir()
    write_nmnist_events(stray / "00000.bin", _events([(1, 1, 0, 10)]))
    with pytest.raises(ValueError, match=r"Train.*\[0, 10\).*label 10 at sample 20 \(.*10/00000\.bin\)"):
        NMNIST(nmnist_root, train=True)
    stray.rename(nmnist_root / "Train" / "seven")
    with pytest.raises(ValueError, match=r"seven.*not a class label.*0\.\.9"):
        NMNIST(nmnist_root, train=True)
    assert len(NMNIST(nmnist_root, train=False)) == 10  # the Test split is fine
    (nmnist_root / "Train" / "seven" / "00000.bin").unlink()  # a folder with no .bin files is ignored
    assert len(NMNIST(nmnist_root, train=True)) == 20


def test_empty_or_garbage_files_are_refused_with_the_file_named(nmnist_root):
    p = nmnist_root / "Train" / "3" / "00001.bin"
    p.write_bytes(b"")
    with pytest.raises(ValueError, match=r"3/00001\.bin.*empty"):
        read_nmnist_events(p)
    with pytest.raises(ValueError, match="events is empty"):
        write_nmnist_events(p, _events([]))
    ds = NMNIST(nmnist_root)
    with pytest.raises(ValueError, match=r"3/00001\.bin.*empty"):
        ds[7]
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 5 * 40, dtype=np.uint8).tobytes())  # not events
    with pytest.raises(ValueError, match=r"3/00001\.bin.*outside the 34x34 sensor"):
        ds[7]
