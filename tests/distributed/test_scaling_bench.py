"""Smoke test of ``spikescan bench scaling`` at tiny sizes (1 and 2 ranks)."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from spikescan.bench import scaling


def test_model_speedup_is_paper_eq7():
    # eq. 7: mu = k / ((k-1) Tc / t(k) + 1); here (k-1) Tc = comm
    k, t_k, tc = 4, 2.0, 0.5
    assert math.isclose(scaling.model_speedup(k, t_k, (k - 1) * tc), k / ((k - 1) * tc / t_k + 1))
    assert scaling.model_speedup(1, 1.0, 0.0) == 1.0
    # the pipeline fill t(k)(k-1)/M only lowers it, and vanishes as M grows
    assert scaling.model_speedup(k, t_k, 1.0, micro_batches=2) < scaling.model_speedup(k, t_k, 1.0)
    assert math.isclose(scaling.model_speedup(k, t_k, 1.0, micro_batches=10**9), scaling.model_speedup(k, t_k, 1.0),
                        rel_tol=1e-6)


def test_bench_runs_and_writes_outputs(tmp_path):
    parser = argparse.ArgumentParser()
    scaling.add_arguments(parser)
    args = parser.parse_args(["--ranks", "1,2", "--t-values", "9", "--batch", "4", "--hidden", "6",
                              "--in-features", "3", "--micro-batches", "2", "--repeats", "1", "--warmup", "0",
                              "--backend", "sequential", "--out", str(tmp_path)])
    results = scaling.run(args)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert len(saved["rows"]) == 4  # 2 layers x 2 rank counts
    for row in saved["rows"]:
        assert row["step_s"] > 0 and row["compute_s"] > 0
        assert row["segment"] == (9 if row["ranks"] == 1 else 5)  # rank 0's segment of 9 steps
        if row["ranks"] == 2:
            assert row["comm_s"] > 0 and row["measured_speedup"] > 0
    assert "eq.7" in scaling.format_report(results)


def test_bench_rejects_bad_options(tmp_path):
    parser = argparse.ArgumentParser()
    scaling.add_arguments(parser)
    with pytest.raises(ValueError, match="at least one step"):
        scaling.run(parser.parse_args(["--ranks", "4", "--t-values", "2", "--out", str(tmp_path)]))
    with pytest.raises(ValueError, match="micro-batches"):
        scaling.run(parser.parse_args(["--batch", "2", "--micro-batches", "3", "--out", str(tmp_path)]))
