import json

import pytest

from spikescan.cli import main


def test_cli_train_small_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--hidden", "16", "--num-steps", "8", "--out", str(out),
                 "--no-progress"]) == 0
    assert (out / "curves.png").is_file()
    assert json.loads((out / "config.json").read_text())["epochs"] == 1
    assert "test accuracy" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--neuron", "hodgkin-huxley"])
    with pytest.raises(SystemExit):
        main(["train", "--resume"])


def test_cli_info(capsys):
    assert main(["info"]) == 0
    assert "torch" in capsys.readouterr().out
