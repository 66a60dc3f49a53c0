import torch

from spikescan.data.digits import digits_datasets, load_digits_split


def test_digits_split_is_fixed_and_stratified():
    a = load_digits_split()
    b = load_digits_split()
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    x_tr, y_tr, x_te, y_te = a
    assert x_tr.shape == (1437, 64) and x_te.shape == (360, 64)
    assert 0.0 <= float(x_tr.min()) and float(x_tr.max()) <= 1.0
    assert torch.bincount(y_te).min() >= 30  # every class present in the test split


def test_digits_latency_dataset_time_first():
    train, test = digits_datasets("latency", num_steps=10)
    x, y = train[0]
    assert x.shape == (10, 64) and 0 <= y < 10
    assert float(x.sum(0).max()) <= 1.0  # latency: at most one spike per pixel
    assert len(test) == 360


def test_out_of_range_digit_labels_are_refused(monkeypatch):
    import numpy as np
    import pytest
    import sklearn.datasets
    from sklearn.utils import Bunch

    target = np.arange(50) % 10
    target[7] = 10
    fake = Bunch(data=np.zeros((50, 64)), target=target)
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda: fake)
    with pytest.raises(ValueError, match=r"load_digits.*\[0, 10\).*label 10 at sample 7\b"):
        load_digits_split()
