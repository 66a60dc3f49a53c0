import sys
import types

import numpy as np
import pytest
import torch

from spikescan.data.dvs import DVSCIFAR10, events_to_frames


def test_split_by_number_exact():
    # 7 events, 3 frames: runs of 7 // 3 = 2, last frame takes 3
    x = np.array([0, 1, 2, 0, 1, 2, 2])
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p = np.array([0, 1, 0, 1, 0, 1, 1])
    t = np.array([0, 5, 6, 100, 101, 102, 900])
    f = events_to_frames(x, y, p, t, (3, 2, 2), 3)
    exp = torch.zeros(3, 2, 2, 3)
    exp[0, 0, 0, 0] = 1
    exp[0, 1, 0, 1] = 1
    exp[1, 0, 0, 2] = 1
    exp[1, 1, 1, 0] = 1
    exp[2, 0, 1, 1] = 1
    exp[2, 1, 1, 2] = 2
    assert f.dtype == torch.float32 and torch.equal(f, exp)


def test_split_by_time_exact():
    t = np.array([10, 12, 13, 19, 20, 40])  # w = (40 - 10) // 4 = 7: [10,17) [17,24) [24,31) [31,..]
    z = np.zeros(6, int)
    f = events_to_frames(z, z, z, t, (1, 1, 1), 4, split_by="time")
    assert f.flatten().tolist() == [3, 2, 0, 1]
    with pytest.raises(ValueError, match="non-decreasing"):
        events_to_frames(z, z, z, t[::-1], (1, 1, 1), 4, split_by="time")


def test_edge_cases_and_errors():
    e = np.zeros(0)
    assert events_to_frames(e, e, e, e, (4, 3, 2), 5).shape == (5, 2, 3, 4)
    one = np.array([1])
    assert events_to_frames(one, one, one, one, (2, 2, 2), 3)[2, 1, 1, 1] == 1  # fewer events than frames
    assert events_to_frames(one, one, one, one, (2, 2, 2), 3, split_by="time")[0, 1, 1, 1] == 1
    with pytest.raises(ValueError, match="x must lie"):
        events_to_frames(np.array([2]), one, one, one, (2, 2, 2), 3)
    with pytest.raises(ValueError, match="n_frames"):
        events_to_frames(one, one, one, one, (2, 2, 2), 0)
    with pytest.raises(ValueError, match="one length"):
        events_to_frames(np.array([1, 1]), one, one, one, (2, 2, 2), 1)


def test_without_tonic(monkeypatch):
    monkeypatch.setitem(sys.modules, "tonic", None)  # makes `import tonic` raise ImportError
    with pytest.raises(ImportError, match=r"pip install spikescan\[tonic\]"):
        DVSCIFAR10("/nowhere")


def test_with_a_stand_in_tonic(monkeypatch):
    dtype = np.dtype([("x", np.int16), ("y", np.int16), ("p", bool), ("t", np.int64)])

    class FakeCIFAR10DVS:
        sensor_size = (128, 128, 2)

        def __init__(self, save_to):
            self.save_to = save_to
            self.targets = [k // 3 for k in range(30)]  # 3 samples per class

        def __getitem__(self, i):
            ev = np.zeros(20, dtype=dtype)
            ev["x"], ev["y"], ev["p"], ev["t"] = i, 5, np.arange(20) % 2, np.arange(20) * 1000
            return ev, self.targets[i]

    fake = types.ModuleType("tonic")
    fake.datasets = types.SimpleNamespace(CIFAR10DVS=FakeCIFAR10DVS)
    monkeypatch.setitem(sys.modules, "tonic", fake)
    ds = DVSCIFAR10("/data/dvs", n_frames=10)
    assert len(ds) == 30 and ds.source.save_to == "/data/dvs"
    x, y = ds[4]
    assert x.shape == (10, 2, 128, 128) and y == 1 and x.sum() == 20 and x[0, 0, 5, 4] == 1 and x[0, 1, 5, 4] == 1
    tr, te = DVSCIFAR10("/d", train=True), DVSCIFAR10("/d", train=False)
    assert len(tr) == 30 and len(te) == 0  # ceil(3 * 0.9) = 3 per class
    tr, te = DVSCIFAR10("/d", train=True, train_fraction=0.5), DVSCIFAR10("/d", train=False, train_fraction=0.5)
    assert tr.indices.tolist()[:4] == [0, 1, 3, 4] and te.indices.tolist()[:2] == [2, 5]
    small = DVSCIFAR10("/d", n_frames=4, size=48)[0][0]
    assert small.shape == (4, 2, 48, 48) and abs(float(small.sum()) - 20 * (48 / 128) ** 2) < 1.0


def _stand_in_tonic(monkeypatch, targets, served=None):
    class FakeCIFAR10DVS:
        sensor_size = (4, 4, 2)

        def __init__(self, save_to):
            self.targets = list(targets)

        def __getitem__(self, i):
            ev = np.zeros(2, dtype=[("x", np.int16), ("y", np.int16), ("p", bool), ("t", np.int64)])
            return ev, (served or self.targets)[i]

    fake = types.ModuleType("tonic")
    fake.datasets = types.SimpleNamespace(CIFAR10DVS=FakeCIFAR10DVS)
    monkeypatch.setitem(sys.modules, "tonic", fake)


def test_out_of_range_targets_name_the_folder_value_and_sample(monkeypatch):
    _stand_in_tonic(monkeypatch, [0, 9, 10, 3])
    with pytest.raises(ValueError, match=r"CIFAR10DVS.*/data/dvs.*\[0, 10\).*label 10 at sample 2\b"):
        DVSCIFAR10("/data/dvs", n_frames=2)
    _stand_in_tonic(monkeypatch, [0, 9, 1, 3], served=[0, 9, 12, 3])  # a sample disagrees with targets
    ds = DVSCIFAR10("/data/dvs", n_frames=2)
    assert ds[1][1] == 9
    with pytest.raises(ValueError, match=r"/data/dvs.*sample 2 has label 12.*targets\[2\] = 1"):
        ds[2]
