import importlib
import json

import pytest

from spikescan.cli import main
from spikescan.train import TrainConfig, train
from spikescan.train.evaluate import evaluate

compare_mod = importlib.import_module("spikescan.train.compare")  # the module, not the function it exports

_SMALL = dict(hidden=[16], num_steps=8, epochs=1, batch_size=128)


def _quiet(*_):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for neuron in ("spsn-sb", "lif"):
        train(TrainConfig(neuron=neuron, out_dir=str(root / neuron), **_SMALL), progress=False, log=_quiet)
    return root


def test_eval_trials_spread_for_stochastic_neurons_only(runs):
    sb = evaluate(runs / "spsn-sb", trials=3, log=_quiet)
    lif = evaluate(runs / "lif", trials=3, log=_quiet)
    # the readout std, not the accuracy std: three trials may round to the same accuracy
    assert len(sb["acc"]) == 3 and sb["readout_std"] > 0 and sb["spike_rate_std"] > 0
    assert lif["acc_std"] == 0 and lif["readout_std"] == 0 and lif["spike_rate_std"] == 0
    final = json.loads((runs / "lif" / "final.json").read_text())
    assert lif["acc_mean"] == pytest.approx(final["test_acc"])  # same weights, same test set
    assert json.loads((runs / "spsn-sb" / "eval.json").read_text())["acc"] == sb["acc"]
    again = evaluate(runs / "spsn-sb", trials=3, log=_quiet)
    assert again["acc"] == sb["acc"]  # trial k is seeded with seed + k
    one = evaluate(runs / "spsn-sb", trials=1, log=_quiet)
    assert one["acc_std"] == 0 and one["readout_std"] == 0


def test_eval_touches_only_eval_json(runs):
    before = {p.name: p.read_bytes() for p in (runs / "lif").iterdir() if p.name != "eval.json"}
    assert main(["eval", str(runs / "lif"), "--trials", "2"]) == 0
    after = {p.name: p.read_bytes() for p in (runs / "lif").iterdir() if p.name != "eval.json"}
    assert after == before and (runs / "lif" / "eval.json").is_file()
    # the workload metrics again, by this version's counters: the same as the run's own
    ev = json.loads((runs / "lif" / "eval.json").read_text())
    final = json.loads((runs / "lif" / "final.json").read_text())
    assert ev["neurobench"] == final["neurobench"]
    assert not [p for p in (runs / "lif").iterdir() if p.name.endswith(".tmp")]


def test_eval_errors(tmp_path, runs, capsys):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        evaluate(tmp_path, log=_quiet)
    with pytest.raises(ValueError, match="trials"):
        evaluate(runs / "lif", trials=0, log=_quiet)
    assert main(["eval", str(tmp_path)]) == 1
    assert "not a run folder" in capsys.readouterr().err


def test_compare_table_and_reuse_of_finished_runs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--neurons", "lif", "relu", "--seeds", "0", "1", "--epochs", "1", "--hidden", "16",
            "--num-steps", "8", "--batch-size", "128", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    table = (out / "table.md").read_text()
    assert table in printed and "| lif |" in table and "| relu |" in table
    result = json.loads((out / "results.json").read_text())
    assert [(r["neuron"], r["seed"]) for r in result["runs"]] == [("lif", 0), ("lif", 1), ("relu", 0), ("relu", 1)]
    lif_row = result["rows"][0]
    accs = [r["test_acc"] for r in result["runs"][:2]]
    assert lif_row["test_acc"][0] == pytest.approx(sum(accs) / 2)
    assert result["rows"][1]["spikes_per_ms"] is None  # relu does not spike

    # a crash after the first run: the rerun trains only what is missing
    import shutil

    shutil.rmtree(out / "relu-s1")
    (out / "relu-s0" / "final.json").unlink()  # relu-s0 interrupted after its last checkpoint
    trained, resumed = [], []
    real_train = compare_mod.train

    def spy(cfg, resume=False, **kw):
        (resumed if resume else trained).append(cfg.out_dir)
        return real_train(cfg, resume=resume, **kw)

    monkeypatch.setattr(compare_mod, "train", spy)
    assert main(argv) == 0
    assert trained == [str(out / "relu-s1")] and resumed == [str(out / "relu-s0")]
    assert json.loads((out / "results.json").read_text())["runs"][0] == result["runs"][0]

    capsys.readouterr()
    assert main(argv + ["--epochs", "2"]) == 1  # same folder, different epochs
    assert "other settings" in capsys.readouterr().err


def test_compare_on_a_preset_gives_other_neuron_kinds_their_own_arguments(tmp_path):
    """``compare --preset fastsnn-fmnist-lif --neurons plif spsn-sb psu``: the preset's LIF
    arguments (reset, surrogate, ...) carry over to PLIF, not to SPSN or PSU (their
    constructors have none of them), and every configuration builds."""
    import dataclasses

    from spikescan.train.loop import build_model
    from spikescan.train.presets import preset_config

    base = dataclasses.asdict(preset_config("fastsnn-fmnist-lif"))
    cfgs = {n: compare_mod._config(base, n, 0, tmp_path / n, compare_mod.NEURON_SETTINGS)
            for n in ("lif", "plif", "spsn-sb", "psu")}
    assert cfgs["plif"].neuron_kwargs == cfgs["lif"].neuron_kwargs == base["neuron_kwargs"]
    assert cfgs["plif"].neuron_kwargs["reset"] == "subtract"
    assert cfgs["spsn-sb"].neuron_kwargs == {}
    assert cfgs["psu"].neuron_kwargs == compare_mod.NEURON_SETTINGS["psu"]["neuron_kwargs"]
    for n, cfg in cfgs.items():
        net = build_model(cfg, 784, 10)
        assert type(net[1]).__name__ == {"lif": "LIF", "plif": "PLIF", "spsn-sb": "SPSN", "psu": "PSU"}[n]
