"""`spikescan bench speed-vs-t` runs end to end on tiny T and writes what it promises.

No timing comparisons here: the machine is shared and tiny T says nothing about speed.
"""

import json
import math

import pytest

from spikescan.bench import _common
from spikescan.bench import speed_vs_t

TINY = ["--batch", "2", "--in-features", "12", "--hidden", "5",
        "--repeats", "1", "--warmup", "0"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("speed_vs_t")
    results = speed_vs_t.main(TINY + ["--t-values", "10", "20", "--out", str(out)])
    return out, results


def test_json_structure_and_times(full_run):
    out, results = full_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["benchmark"] == "speed_vs_t"
    assert on_disk["config"]["t_values"] == [10, 20]
    impls = on_disk["config"]["implementations"]
    assert impls[0] == "lif" and len(impls) >= 2
    assert all(i.startswith("spsn-") for i in impls[1:])
    assert "spsn-sequential" not in impls
    for key in ("torch", "torch_num_threads", "cpu_model", "device"):
        assert key in on_disk["machine"]
    assert set(on_disk["cases"]) == {"neuron", "layer"}
    for part in ("neuron", "layer"):
        for impl in impls:
            entries = on_disk["cases"][part][impl]
            assert [e["T"] for e in entries] == [10, 20]
            for e in entries:
                assert e["status"] == "ok", e
                assert e["median_s"] > 0 and len(e["times_s"]) == 1
        for impl in impls[1:]:
            assert all(r["ratio"] > 0 for r in on_disk["speedup_lif_over_spsn"][part][impl])
    roof = on_disk["roofline"]
    assert roof["bandwidth_bytes_per_s"] > 0
    assert [e["T"] for e in roof["entries"]] == [10, 20]
    # 6 passes over T * B * hidden float32 elements
    assert roof["entries"][0]["bytes"] == 6 * 10 * 2 * 5 * 4
    assert all(e["seconds"] > 0 for e in roof["entries"])
    assert on_disk["cases"] == json.loads(json.dumps(results["cases"]))


def test_png_written(full_run):
    out, _ = full_run
    png = out / "speed_vs_t.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_budget_skips_larger_t(tmp_path):
    results = speed_vs_t.main(TINY + ["--t-values", "10,20", "30", "--budget-s", "1e-9", "--parts", "neuron",
                                      "--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["cases"] == json.loads(json.dumps(results["cases"]))
    for impl, entries in on_disk["cases"]["neuron"].items():
        first, *rest = entries
        assert first["T"] == 10 and first["status"] == "ok"  # nothing to extrapolate from: runs
        assert [e["T"] for e in rest] == [20, 30]
        for e in rest:
            assert e["status"] == "skipped" and e["estimate_s"] > 1e-9 and "budget" in e["reason"]
        # a skipped case has no ratio
        if impl != "lif":
            assert [r["ratio"] is None for r in on_disk["speedup_lif_over_spsn"]["neuron"][impl]] == [False, True, True]
    assert "layer" not in on_disk["cases"]


def test_measure_copy_bandwidth_positive_finite():
    bw = _common.measure_copy_bandwidth("cpu", nbytes=4 * 2**20, repeats=2, warmup=1)
    assert bw > 0 and math.isfinite(bw)


def test_summarize_and_budget_tracker():
    t = _common.summarize([3.0, 1.0, 2.0, 10.0])
    assert t.median_s == 2.5 and t.min_s == 1.0 and t.q1_s <= t.median_s <= t.q3_s
    one = _common.summarize([0.5])
    assert one.median_s == one.q1_s == one.q3_s == 0.5
    tracker = _common.BudgetTracker(budget_s=10.0, calls_per_case=2)
    assert tracker.should_skip("a", 100) == (False, None)
    tracker.record("a", 100, 1.0)
    assert tracker.should_skip("a", 300) == (False, 6.0)
    assert tracker.should_skip("a", 1000) == (True, 20.0)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="--repeats"):
        speed_vs_t.main(TINY + ["--t-values", "10", "--repeats", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        speed_vs_t.main(["--t-values", "0", "--out", str(tmp_path)])


def test_time_fn_stops_repeats_when_out_of_time():
    import time
    import torch

    t = _common.time_fn(lambda: time.sleep(0.02), torch.device("cpu"), warmup=0, repeats=50, max_total_s=0.05)
    assert 1 <= len(t.times_s) < 50


def test_address_space_limit_is_restored():
    resource = pytest.importorskip("resource")
    before = resource.getrlimit(resource.RLIMIT_AS)
    with _common.address_space_limit(64 * 2**30):
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        assert soft <= 64 * 2**30
    assert resource.getrlimit(resource.RLIMIT_AS) == before


def test_profile_tables_and_skipped_case(tmp_path):
    results = speed_vs_t.main(TINY + ["--t-values", "10", "20", "--parts", "neuron", "--budget-s", "1e-9",
                                      "--profile", "--out", str(tmp_path)])
    prof = results["profile"]
    assert set(prof) == {f"T=20 neuron {impl}" for impl in results["config"]["implementations"]}
    # T=20 was skipped for every implementation (tiny budget): not profiled
    assert all(v.startswith("not profiled") for v in prof.values())
    assert (tmp_path / "profile.txt").exists()
    results = speed_vs_t.main(TINY + ["--t-values", "10", "--parts", "neuron", "--profile", "--out", str(tmp_path)])
    assert all("Self CPU time total" in v for v in results["profile"].values())
