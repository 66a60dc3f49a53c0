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


def test_cli_new_neurons_datasets_and_subcommands_parse(capsys):
    from spikescan.cli import build_parser

    p = build_parser()
    args = p.parse_args(["train", "--neuron", "single-spike", "--dataset", "fmnist", "--readout", "max-membrane",
                         "--tau-syn", "none", "--k-shift", "0.1"])
    assert (args.neuron, args.dataset, args.readout, args.tau_syn, args.k_shift) == \
        ("single-spike", "fmnist", "max-membrane", None, 0.1)
    assert not hasattr(p.parse_args(["train"]), "lr")  # unset flags never override a preset
    assert p.parse_args(["eval", "runs/x", "--trials", "5"]).trials == 5
    with pytest.raises(SystemExit):
        p.parse_args(["compare", "--seeds", "0"])  # --neurons and --out are required
    with pytest.raises(SystemExit):
        main(["compare", "--neurons", "hodgkin-huxley", "--out", "x"])


def test_cli_info(capsys):
    assert main(["info"]) == 0
    assert "torch" in capsys.readouterr().out
