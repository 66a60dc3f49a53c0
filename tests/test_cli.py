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
    assert main(["compare", "--neurons", "hodgkin-huxley", "--out", "x"]) == 1
    assert "error: unknown neurons ['hodgkin-huxley']" in capsys.readouterr().err


def test_cli_info(capsys):
    assert main(["info"]) == 0
    assert "torch" in capsys.readouterr().out


_SMALL = ["--hidden", "8", "--num-steps", "4", "--max-batches", "2", "--no-progress"]


@pytest.mark.parametrize("flags, field", [
    (["--dropout", "-0.1"], "error: --dropout must"),
    (["--reg-weight", "nan", "--theta-reg", "0.1"], "error: --reg-weight must"),
    (["--seed", str(2**70)], "error: --seed must"),
    (["--lr", "inf"], "error: --lr must"),
    (["--tau-mem", "0"], "error: --tau-mem must"),
    (["--hidden", "0"], "error: --hidden must"),
    (["--neuron", "lif", "--backend", "fft"], "error: --backend 'fft' does not apply to neuron 'lif'"),
    (["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "gpu"], "--device"),
    (["--preset", "fastsnn-fmnist-typo"], "preset must be one of ['fastsnn-fmnist', "),
])
def test_cli_bad_values_give_one_error_line(tmp_path, capsys, flags, field):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *_SMALL, *flags]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and field in err[0], err
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists()  # a refused start leaves no folder


def test_cli_resume_extends_or_refuses_a_changed_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *_SMALL]) == 0
    capsys.readouterr()
    assert main(["train", "--epochs", "1", "--out", str(out), *_SMALL]) == 1
    assert "already holds a run" in capsys.readouterr().err
    # the hostile-trial command: a changed neuron is refused, nothing is trained
    assert main(["train", "--resume", "--out", str(out), "--epochs", "5", "--neuron", "lif", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "cannot resume" in err and "neuron" in err
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 1
    assert "already finished its 1 epochs" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 0
    rows = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2]
    assert json.loads((out / "config.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("neuron, backend", [("lif", "sequential"), ("plif", "sequential"), ("psu", "matrix"),
                                             ("spsn-sb", "fft")])
def test_cli_backend_is_what_runs(tmp_path, neuron, backend):
    from spikescan.train.evaluate import load_run_model

    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--neuron", neuron, "--backend", backend,
                 *_SMALL]) == 0
    model, cfg = load_run_model(out)
    assert cfg.backend == backend
    from spikescan.nn import SpikingNeuron

    hidden = [m for m in model if isinstance(m, SpikingNeuron)]
    assert hidden and all(m.backend == backend for m in hidden)
    readout = model[-1]
    assert readout.backend == (backend if backend in ("sequential", "fft") else "auto")


def test_results_archive_and_table(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *_SMALL]) == 0
    assert "spikescan train --epochs 1" in (out / "command.txt").read_text()
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 0
    assert len((out / "command.txt").read_text().splitlines()) == 2  # the resume is recorded too
    root = tmp_path / "results"
    for seed in ("s0", "s1"):
        assert main(["results", "archive", str(out), f"digits-test-{seed}", "--root", str(root)]) == 0
    meta = json.loads((root / "digits-test-s0" / "meta.json").read_text())
    assert meta["finished"] and meta["cpu"] and "torch" in meta
    # the commit that trained it, from command.txt's comments (both lines ran this checkout)
    from spikescan._host import code_commit

    lines = (out / "command.txt").read_text().splitlines()
    assert all(line.endswith(f"  # spikescan {code_commit()}") for line in lines)
    assert meta["run_commits"] == [code_commit()]
    assert not (root / "digits-test-s0" / "checkpoint.pt").exists()  # small files only
    capsys.readouterr()
    assert main(["results", "table", "--root", str(root)]) == 0
    table = capsys.readouterr().out
    acc = 100 * json.loads((out / "final.json").read_text())["test_acc"]
    assert "| digits-test | digits | spsn-sb 8 | 2 of 2 | 2 |" in table and f"{acc:.2f} ± 0.00" in table
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results-table -->\nold\n<!-- /results-table -->\nend\n")
    assert main(["results", "table", "--root", str(root), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and "| digits-test |" in text and text.endswith("end\n")
    assert main(["results", "archive", str(tmp_path / "nothing"), "x", "--root", str(root)]) == 1
    # an unfinished run (no final.json): spikes per neuron per sample from its last epoch's test rate
    (root / "digits-test-s1" / "final.json").unlink()
    hist = json.loads((root / "digits-test-s1" / "metrics.json").read_text())
    history = hist["history"] if isinstance(hist, dict) else hist
    spikes = history[-1]["test_spike_rate"] * json.loads((out / "config.json").read_text())["num_steps"]
    from spikescan.train.results import results_table

    single = tmp_path / "one"
    single.mkdir()
    (root / "digits-test-s1").rename(single / "digits-test-s1")
    row = [r for r in results_table(single).splitlines() if r.startswith("| digits-test |")][0]
    assert "2 of 2 (unfinished)" in row and f"| {spikes:.2f} |" in row, row
    # archiving an interrupted run (no final.json, no curves yet) draws its curves so far
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    (cut / "final.json").unlink()
    (cut / "curves.png").unlink()
    assert main(["results", "archive", str(cut), "digits-test-s0", "--root", str(root)]) == 0
    dest = root / "digits-test-s0"
    assert (dest / "curves.png").stat().st_size > 1000 and not (dest / "final.json").exists()
    assert json.loads((dest / "meta.json").read_text())["finished"] is False


def test_cli_missing_data_names_the_files_and_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "fastsnn-fmnist", "--data-dir", str(tmp_path / "absent"), "--out", str(out),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: dataset 'fmnist'") and "train-images-idx3-ubyte" in err and "Traceback" not in err
    assert not out.exists()
