import json

import pytest
import torch

from spikescan.cli import main
from spikescan.train import train
from spikescan.train.presets import PRESETS, preset_config

from tests.train._fixtures import write_dataset

# shrink every preset to one tiny epoch of at most 40 steps; everything else (network, dt, neuron,
# readout, optimiser, augmentation) as the paper (the full T is exercised by the data tests)
_TINY = dict(epochs=1, max_batches=1, batch_size=2, eval_batch_size=2)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_one_epoch_on_files_of_its_format(name, tmp_path, monkeypatch):
    preset = PRESETS[name]
    data = write_dataset(preset.config["dataset"], tmp_path / "data", monkeypatch)
    tiny = dict(_TINY, num_steps=min(preset.config["num_steps"], 40))
    cfg = preset_config(name, dict(tiny, data_dir=str(data), out_dir=str(tmp_path / "run")))
    final = train(cfg, progress=False, log=lambda *_: None)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    for key, value in preset.config.items():  # the run used the preset's values
        if key not in tiny:
            assert saved[key] == value, key
    assert saved["preset"] == name
    assert 0.0 <= final["test_acc"] <= 1.0 and final["train_loss"] == final["train_loss"]  # not NaN
    assert (tmp_path / "run" / "raster.png").is_file()


def test_flags_override_preset_values():
    cfg = preset_config("spsn-shd-gs-reg", {"lr": 0.5, "hidden": [7]})
    assert (cfg.lr, cfg.hidden) == (0.5, [7])
    assert (cfg.theta_reg, cfg.optimizer, cfg.k_shift, cfg.k_scale, cfg.batch_size) == (0.1, "adamax", 0.1, 0.3, 64)
    with pytest.raises(ValueError, match="preset must be one of"):
        preset_config("spsn-imagenet")


def test_papers_values_are_in_the_presets():
    sb = PRESETS["spsn-shd-sb-reg"].config
    assert (sb["hidden"], sb["tau_mem"], sb["tau_syn"], sb["dt"], sb["lr"], sb["epochs"], sb["theta_reg"]) == \
        ([128, 128, 128], 0.02, 0.02, 1e-3, 1e-3, 200, 0.4)
    assert "theta_reg" not in PRESETS["spsn-shd-sb"].config
    fm, nm, shd = (PRESETS[f"fastsnn-{d}"].config for d in ("fmnist", "nmnist", "shd"))
    assert (fm["num_steps"], fm["dt"], fm["lr"], fm["encoding"]) == (784, 1e-3, 2e-4, "ttfs")
    assert (nm["num_steps"], nm["dt"], nm["lr"]) == (300, 1e-3, 2e-4)
    assert (shd["num_steps"], shd["dt"], shd["lr"], shd["epochs"]) == (700, 2e-3, 1e-3, 200)
    assert fm["hidden"] == [200] and fm["readout"] == "max-membrane" and fm["neuron"] == "single-spike"


def test_cli_presets_lists_every_preset_with_its_source(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name, p in PRESETS.items():
        assert name in out and p.source in out
    assert main(["presets", "--markdown"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| `")]
    assert len(rows) == len(PRESETS)


def test_cli_train_with_preset_and_override(tmp_path):
    data = write_dataset("fmnist", tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "--preset", "fastsnn-fmnist", "--data-dir", str(data), "--epochs", "1",
                 "--max-batches", "1", "--batch-size", "2", "--eval-batch-size", "2", "--num-steps", "50",
                 "--out", str(out), "--no-progress"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["num_steps"], saved["lr"], saved["epochs"], saved["preset"]) == (50, 2e-4, 1, "fastsnn-fmnist")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["model"]["0.weight"].shape == (200, 784)


def test_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--preset", "spsn-shd-sb", "--data-dir", str(tmp_path / "SHD"), "--out",
                 str(tmp_path / "r"), "--no-progress"]) == 1
    msg = capsys.readouterr().err
    assert msg.startswith("error: ") and str(tmp_path / "SHD") in msg and "shd_train.h5" in msg
    assert not (tmp_path / "r").exists()  # the failed start left no run folder
    assert main(["train", "--dataset", "nmnist", "--out", str(tmp_path / "r2"), "--no-progress"]) == 1
    assert "needs --data-dir" in capsys.readouterr().err
