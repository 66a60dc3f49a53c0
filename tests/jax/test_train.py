"""The JAX digits trainer and `spikescan train --framework jax`: it learns, writes its run folder and
a NIR file the torch side reads, and refuses the flags it does not have."""

import json

import pytest

pytest.importorskip("jax", reason="the JAX side needs jax (pip install 'spikescan[jax]')")
pytest.importorskip("flax", reason="the JAX modules need flax (pip install 'spikescan[jax]')")
pytest.importorskip("optax", reason="the JAX trainer needs optax (installed with flax)")

from spikescan import cli  # noqa: E402


def test_cli_trains_and_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    rc = cli.main(["train", "--framework", "jax", "--hidden", "32", "--num-steps", "16", "--epochs", "3",
                   "--max-batches", "12", "--out", str(out)])
    assert rc == 0
    rows = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["framework"] == "jax"
    final = json.loads((out / "final.json").read_text())
    # 36 Adam steps of a 32-neuron SPSN: far above the 10 % of guessing (measured ~60 %)
    assert final["test_acc"] > 0.3
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    pytest.importorskip("nir")
    from spikescan.export import read

    model = read(out / "network.nir")
    assert [type(m).__name__ for m in model][:3] == ["Linear", "LI", "_Threshold"]


@pytest.mark.parametrize("argv, match", [
    (["--framework", "jax", "--dtype", "float64"], "does not take \\['--dtype'\\]"),
    (["--framework", "jax", "--neuron", "psu"], "neuron must be one of"),
    (["--framework", "jax", "--dataset", "shd"], "embedded digits only"),
    (["--framework", "jax", "--preset", "spsn-shd-gs-reg"], "torch-only"),
])
def test_unsupported_flags_are_one_error_line(argv, match, capsys, tmp_path):
    assert cli.main(["train", *argv, "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    import re

    assert re.search(match, err)
