import pytest
import torch

from spikescan.data.registry import DATASETS, build_datasets, dataset_spec

from tests.train._fixtures import write_dataset


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_builds_flat_time_first_samples(name, tmp_path, monkeypatch):
    root = write_dataset(name, tmp_path, monkeypatch)
    spec = dataset_spec(name)
    steps = 32 if name == "scifar10" else 6
    train, test, n_in, n_out = build_datasets(name, root, num_steps=steps)
    assert (n_in, n_out) == (spec.n_in, spec.n_classes)
    for ds in (train, test):
        x, y = ds[0]
        assert x.shape == (steps, n_in) and x.dtype == torch.float32
        assert 0 <= y < n_out
    if name not in ("cifar10", "cifar100", "scifar10", "dvs-cifar10"):  # spike data: 0/1 entries
        assert set(torch.unique(train[0][0]).tolist()) <= {0.0, 1.0}


def test_defaults_come_from_the_spec(tmp_path):
    write_dataset("shd", tmp_path)
    train, _, _, _ = build_datasets("shd", tmp_path)
    assert train[0][0].shape == (1400, 700)  # 1.4 s at 1 ms
    train, _, _, _ = build_datasets("shd", tmp_path, num_steps=700, dt=2e-3)  # FastSNN's binning
    assert train[0][0].shape == (700, 700)


def test_train_transform_applies_to_training_samples_only(tmp_path):
    write_dataset("shd", tmp_path)
    calls = []

    def mark(x):
        calls.append(tuple(x.shape))
        return x + 5.0

    train, test, _, _ = build_datasets("shd", tmp_path, num_steps=10, train_transform=mark)
    assert float(train[1][0].min()) == 5.0 and float(test[1][0].min()) == 0.0
    assert calls == [(10, 700)]  # the loader's own sample, before flattening
    train, test, _, _ = build_datasets("digits", train_transform=mark)
    assert float(train[0][0].min()) == 5.0 and float(test[0][0].min()) == 0.0


def test_missing_files_name_the_path_and_the_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"needs --data-dir.*shd_train\.h5"):
        build_datasets("shd", None)
    with pytest.raises(FileNotFoundError) as e:
        build_datasets("shd", tmp_path / "nowhere")
    assert "nowhere" in str(e.value) and "shd_train.h5 and shd_test.h5" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"Train/<digit>/\*\.bin"):
        build_datasets("nmnist", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        build_datasets("fmnist", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        build_datasets("cifar10", tmp_path / "empty")


def test_bad_names_and_encodings():
    with pytest.raises(ValueError, match="dataset must be one of"):
        build_datasets("imagenet")
    with pytest.raises(ValueError, match=r"encoding for dataset 'shd' must be one of \['binary', 'counts'\]"):
        build_datasets("shd", "/x", encoding="ttfs")
    with pytest.raises(ValueError, match="num_steps must be 32"):
        DATASETS["scifar10"].build(None, True, 8, 1e-3, "row", None)
