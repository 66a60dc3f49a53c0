"""`spikescan bench jax` runs end to end on tiny sizes and writes what it promises (no timing checks)."""

import json

import pytest

pytest.importorskip("jax", reason="spikescan bench jax needs jax (pip install 'spikescan[jax]')")

from spikescan.bench import jax_lif as bench  # noqa: E402

TINY = ["--neurons", "300", "--t-forward", "4", "8", "--batch", "2", "--hidden", "5", "--t-train", "6",
        "--profile-neurons", "50,100", "--check-neurons", "500", "--repeats", "1", "--warmup", "0"]


def test_tiny_run_writes_json_table_and_png(tmp_path):
    results = bench.main(TINY + ["--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["benchmark"] == "jax" and on_disk["spike_check"]["ok"]
    fw = on_disk["forward"]
    assert set(fw["cases"]) == {"jax", "fused", "torch-loop"}  # jax-autodiff has the same forward program
    for impl, entries in fw["cases"].items():
        assert [e["T"] for e in entries] == [4, 8] and all(e["status"] == "ok" for e in entries), impl
    assert fw["roofline"][1]["bytes"] == 2 * 8 * 300 * 4
    tr = on_disk["train"]
    assert set(tr["cases"]) == set(bench.IMPLS)
    assert all(tr["cases"][i]["5"][0]["status"] == "ok" for i in bench.IMPLS)
    assert tr["roofline"]["5"][0]["bytes"] == 5 * 6 * 2 * 5 * 4
    prof = on_disk["profile"]
    assert [e["N"] for e in prof["per_step"]] == [50, 100]
    assert prof["fusions_per_scan_iteration"]["fusions"] >= 1
    table = (tmp_path / "table.md").read_text()
    assert "| jax / fused |" in table and "ROOFLINE" in table and "CHECK" in table
    assert (tmp_path / "jax.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["files"]["json"].endswith("results.json")


def test_the_timed_steps_compute_the_same_gradient():
    import numpy as np
    import torch

    x = (np.random.default_rng(0).standard_normal((20, 3, 4)) * 0.5 + 0.15).astype(np.float32)
    grads = {}
    for impl in bench.IMPLS:
        g = bench.make_train_step(impl, **bench.TRAIN)(bench._inputs(impl, x.copy(), True))
        grads[impl] = g.numpy() if isinstance(g, torch.Tensor) else np.asarray(g)
    for impl in bench.IMPLS:
        assert np.allclose(grads[impl], grads["torch-loop"], rtol=1e-4, atol=1e-6), impl


@pytest.mark.parametrize("argv, match", [(["--repeats", "0"], "--repeats"), (["--budget-s", "0"], "--budget-s")])
def test_bad_arguments(argv, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        bench.main(argv + ["--out", str(tmp_path)])
