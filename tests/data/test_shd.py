import os

import numpy as np
import pytest
import torch

from spikescan.data.shd import SHD, SSC, SpikeHDF5, write_spike_hdf5

TIMES = [[0.0005, 0.0015, 0.0016, 0.0035, 0.0095, 0.0030], [], [0.0101, 0.0001, 0.0002]]
UNITS = [[0, 1, 1, 699, 5, 4], [], [2, 3, 3]]
LABELS = [3, 7, 19]


def _expected_full():
    """Hand-made [T=10, C=700] grids of the three samples for dt = 1 ms, max_time = 10 ms."""
    x = torch.zeros(3, 10, 700)
    x[0, 0, 0] = 1
    x[0, 1, 1] = 2  # two spikes in the same bin and channel
    x[0, 3, 699] = 1
    x[0, 9, 5] = 1
    x[0, 3, 4] = 1  # t = 3.0 ms exactly: on the edge, goes to bin 3
    x[2, 0, 3] = 2  # 0.0101 s is past the window and dropped
    return x


@pytest.fixture
def shd_file(tmp_path):
    return write_spike_hdf5(tmp_path / "shd_train.h5", TIMES, UNITS, LABELS, time_dtype="float32",
                            speakers=[1, 2, 3])


@pytest.mark.parametrize("lazy", [False, True])
def test_round_trip_exact(shd_file, lazy):
    ds = SHD(shd_file, dt=1e-3, max_time=0.01, lazy=lazy)
    assert len(ds) == 3 and ds.num_steps == 10 and ds.num_classes == 20
    exp = _expected_full()
    for i in range(3):
        x, y = ds[i]
        assert x.dtype == torch.float32 and x.shape == (10, 700)
        assert torch.equal(x, exp[i]) and y == LABELS[i]
    assert ds[-1][1] == 19
    assert ds.speakers.tolist() == [1, 2, 3]
    with pytest.raises(IndexError):
        ds[3]


def test_float16_times_and_default_window(tmp_path):
    p = write_spike_hdf5(tmp_path / "a.h5", [[0.0005, 1.3995]], [[10, 20]], [0])  # float16 like the real files
    x, _ = SHD(p)[0]
    assert x.shape == (1400, 700)
    assert x[0, 10] == 1 and x[1399, 20] == 1 and x.sum() == 2


def test_channel_downsampling_binary_and_clip(shd_file):
    ds = SHD(shd_file, max_time=0.01, channels=350)
    x = ds[0][0]
    assert x.shape == (10, 350)
    assert x[0, 0] == 1 and x[1, 0] == 2 and x[3, 349] == 1 and x[9, 2] == 1 and x[3, 2] == 1
    assert x.sum() == 6
    # channels 4 and 5 fall into group 2 of 350: put spikes in both in one bin
    p = write_spike_hdf5(shd_file.parent / "b.h5", [[0.0001, 0.0002, 0.0003]], [[4, 5, 5]], [0], time_dtype="float32")
    assert SHD(p, max_time=0.01, channels=350)[0][0][0, 2] == 3
    assert SHD(p, max_time=0.01, channels=350, reduce="max")[0][0][0, 2] == 2
    assert SHD(p, max_time=0.01, channels=350, binary=True)[0][0][0, 2] == 1
    assert SHD(p, max_time=0.01, channels=350, max_count=2)[0][0][0, 2] == 2
    assert SHD(p, max_time=0.01, channels=70)[0][0].shape == (10, 70)
    b = SHD(shd_file, max_time=0.01, binary=True)[0][0]
    assert torch.equal(b, (_expected_full()[0] > 0).float())
    assert SHD(shd_file, max_time=0.01, dt=2e-3)[0][0].shape == (5, 700)


def test_trim_gives_variable_length(shd_file):
    ds = SHD(shd_file, max_time=0.01, trim=True)
    assert [ds[i][0].shape[0] for i in range(3)] == [10, 1, 1]
    assert torch.equal(ds[0][0], _expected_full()[0])


def test_transform_is_applied(shd_file):
    ds = SHD(shd_file, max_time=0.01, transform=lambda x: x * 2)
    assert torch.equal(ds[0][0], 2 * _expected_full()[0])


def test_directory_and_split(tmp_path, shd_file):
    assert len(SHD(tmp_path, "train", max_time=0.01)) == 3
    with pytest.raises(ValueError, match="split"):
        SHD(tmp_path)
    with pytest.raises(FileNotFoundError, match="shd_test.h5"):
        SHD(tmp_path, "test")
    (tmp_path / "ssc_valid.h5.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="gunzip"):
        SSC(tmp_path, "valid")
    ssc = SSC(write_spike_hdf5(tmp_path / "ssc_valid.h5", TIMES, UNITS, LABELS), "valid", max_time=0.01)
    assert ssc.num_classes == 35 and len(ssc) == 3


def test_cache_hit_identical_and_invalidated(tmp_path, shd_file, monkeypatch):
    cache = tmp_path / "cache"
    a = SHD(shd_file, max_time=0.01, cache_dir=cache)
    assert not a.cache_hit and a.cache_path.is_file()
    assert [p.suffix for p in cache.iterdir()] == [".npz"]  # no temp file left behind

    def boom(self):
        raise AssertionError("re-binned on a cache hit")

    with monkeypatch.context() as m:
        m.setattr(SpikeHDF5, "_bin_all", boom)
        b = SHD(shd_file, max_time=0.01, cache_dir=cache)
    assert b.cache_hit and b.cache_path == a.cache_path
    for i in range(3):
        assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]

    for kw in ({"dt": 2e-3}, {"max_time": 0.02}, {"channels": 350}, {"binary": True}, {"max_count": 1}):
        c = SHD(shd_file, max_time=kw.pop("max_time", 0.01), cache_dir=cache, **kw)
        assert not c.cache_hit and c.cache_path != a.cache_path
    assert len(list(cache.iterdir())) == 6

    # the source file changes: new key
    write_spike_hdf5(shd_file, TIMES[:2], UNITS[:2], LABELS[:2], time_dtype="float32")
    st = shd_file.stat()
    os.utime(shd_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    d = SHD(shd_file, max_time=0.01, cache_dir=cache)
    assert not d.cache_hit and len(d) == 2

    # a corrupt cache file is rebuilt, not trusted
    d.cache_path.write_bytes(b"garbage")
    e = SHD(shd_file, max_time=0.01, cache_dir=cache)
    assert not e.cache_hit and torch.equal(e[0][0], a[0][0])


def test_lazy_in_dataloader_workers(shd_file):
    ds = SHD(shd_file, max_time=0.01, lazy=True)
    ds[0]  # opens a handle in this process; workers must reopen their own
    dl = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    x, y = next(iter(dl))
    assert torch.equal(x, _expected_full()) and y.tolist() == LABELS


# ------------------------------------------------------------------------------ errors
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        SHD(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    p = tmp_path / "text.h5"
    p.write_text("hello")
    with pytest.raises(ValueError, match="text.h5.*not a readable HDF5"):
        SHD(p)


def test_truncated(shd_file):
    data = shd_file.read_bytes()
    shd_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="shd_train.h5"):
        SHD(shd_file)


def test_missing_dataset_and_mismatch(tmp_path):
    import h5py

    p = tmp_path / "bad.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("labels", data=np.zeros(2))
    with pytest.raises(ValueError, match="bad.h5.*'spikes/times'"):
        SHD(p)
    p = write_spike_hdf5(tmp_path / "bad2.h5", TIMES, UNITS, LABELS)
    with h5py.File(p, "a") as f:
        del f["labels"]
        f.create_dataset("labels", data=np.zeros(2))
    with pytest.raises(ValueError, match="bad2.h5.*one entry per sample"):
        SHD(p)


def test_bad_samples(tmp_path):
    import h5py

    p = write_spike_hdf5(tmp_path / "bad3.h5", [[0.1, 0.2]], [[1, 2]], [0])
    with h5py.File(p, "a") as f:
        f["spikes/units"][0] = np.array([1], dtype=np.uint16)
    with pytest.raises(ValueError, match="bad3.h5.*sample 0 has 2 spike times but 1 units"):
        SHD(p)
    ds = SHD(p, lazy=True)  # lazy mode finds it at access
    with pytest.raises(ValueError, match="sample 0"):
        ds[0]
    p = write_spike_hdf5(tmp_path / "bad4.h5", [[0.1]], [[700]], [0])
    with pytest.raises(ValueError, match=r"bad4.h5.*outside \[0, 700\)"):
        SHD(p)


def test_bad_parameters(shd_file):
    with pytest.raises(ValueError, match="channels"):
        SHD(shd_file, channels=300)
    with pytest.raises(ValueError, match="dt"):
        SHD(shd_file, dt=0)
    with pytest.raises(ValueError, match="reduce"):
        SHD(shd_file, reduce="mean")
    with pytest.raises(ValueError, match="cache_dir"):
        SHD(shd_file, lazy=True, cache_dir="x")


# ------------------------------------------------------------------------------ labels
@pytest.mark.parametrize("lazy", [False, True])
def test_out_of_range_label_names_file_value_and_sample(tmp_path, lazy):
    p = write_spike_hdf5(tmp_path / "bad_labels.h5", TIMES, UNITS, [3, 57, 19])
    with pytest.raises(ValueError, match=r"bad_labels.h5.*\[0, 20\).*label 57 at sample 1\b"):
        SHD(p, max_time=0.01, lazy=lazy)
    with pytest.raises(ValueError, match=r"\[0, 35\).*label 57 at sample 1\b"):
        SSC(p, max_time=0.01, lazy=lazy)
    ok = write_spike_hdf5(tmp_path / "ssc_ok.h5", TIMES, UNITS, [0, 34, 19])
    assert SSC(ok, max_time=0.01, lazy=lazy)[1][1] == 34  # the last class is in range
    assert SpikeHDF5(p, max_time=0.01, lazy=lazy)[1][1] == 57  # the generic loader has no class count


def test_negative_or_fractional_labels_are_refused(tmp_path):
    import h5py

    for name, labels in (("neg.h5", np.array([0, -1, 2], np.int16)), ("frac.h5", np.array([0.0, 1.5, 2.0]))):
        p = write_spike_hdf5(tmp_path / name, TIMES, UNITS, [0, 1, 2])
        with h5py.File(p, "a") as f:
            del f["labels"]
            f.create_dataset("labels", data=labels)
        with pytest.raises(ValueError, match=rf"{name}.*label {labels[1].item()!r} at sample 1\b"):
            SpikeHDF5(p, max_time=0.01)


def test_cache_follows_content_not_size_and_mtime(tmp_path):
    """A file rewritten in place with the same size and its old mtime must not be served from the cache."""
    p = write_spike_hdf5(tmp_path / "shd_train.h5", TIMES, UNITS, LABELS, time_dtype="float32")
    st = p.stat()
    cache = tmp_path / "cache"
    a = SHD(p, max_time=0.01, cache_dir=cache)
    assert not a.cache_hit
    moved = [[t + 0.001 for t in ts] for ts in TIMES]  # every spike one bin later; same counts, same layout
    write_spike_hdf5(p, moved, UNITS, LABELS, time_dtype="float32")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (p.stat().st_size, p.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)  # what an old key saw
    b = SHD(p, max_time=0.01, cache_dir=cache)
    assert not b.cache_hit
    assert torch.equal(b[0][0], SHD(p, max_time=0.01)[0][0])  # the new content, binned afresh
    assert not torch.equal(b[0][0], a[0][0])
    # touching the file without changing it keeps the cache
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert SHD(p, max_time=0.01, cache_dir=cache).cache_hit


def test_cache_not_saved_when_the_file_changes_while_binning(tmp_path, shd_file, monkeypatch):
    cache = tmp_path / "cache"
    real = SpikeHDF5._bin_all

    def bin_then_write(self):
        out = real(self)
        st = shd_file.stat()
        os.utime(shd_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a writer got in meanwhile
        return out

    monkeypatch.setattr(SpikeHDF5, "_bin_all", bin_then_write)
    a = SHD(shd_file, max_time=0.01, cache_dir=cache)
    assert not a.cache_hit and not a.cache_path.exists()
    monkeypatch.setattr(SpikeHDF5, "_bin_all", real)
    assert not SHD(shd_file, max_time=0.01, cache_dir=cache).cache_hit
    assert SHD(shd_file, max_time=0.01, cache_dir=cache).cache_hit


@pytest.mark.parametrize("keep", ["none", "8 bytes", "a tenth", "all but one byte"])
@pytest.mark.parametrize("lazy", [False, True])
def test_truncated_anywhere_is_refused_with_the_file_named(shd_file, keep, lazy):
    data = shd_file.read_bytes()
    n = {"none": 0, "8 bytes": 8, "a tenth": len(data) // 10, "all but one byte": len(data) - 1}[keep]
    shd_file.write_bytes(data[:n])
    with pytest.raises(ValueError, match=r"shd_train\.h5.*not a readable HDF5"):
        SHD(shd_file, lazy=lazy)


def test_corrupt_superblock_is_refused_with_the_file_named(shd_file):
    data = bytearray(shd_file.read_bytes())
    data[:8] = b"\0" * 8  # the HDF5 signature
    shd_file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"shd_train\.h5.*not a readable HDF5"):
        SHD(shd_file)
