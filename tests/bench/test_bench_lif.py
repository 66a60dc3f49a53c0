"""`spikescan bench lif` runs end to end on tiny sizes and writes what it promises.

No timing comparisons here: the machine is shared and tiny sizes say nothing about speed.
"""

import json

import pytest
import torch

from spikescan.bench import lif as bench

TINY = ["--neurons", "300", "--t-forward", "4", "8", "--batch", "2", "--hidden", "5", "7", "--t-train", "6", "9",
        "--memory-case", "2,7,9", "--repeats", "1", "--warmup", "0", "--impls", "fused", "reference", "torch-loop"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_lif")
    return out, bench.main(TINY + ["--out", str(out)])


def test_json_structure(tiny_run):
    out, results = tiny_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["benchmark"] == "lif"
    assert on_disk["config"]["implementations"] == ["fused", "reference", "torch-loop"]
    fw = on_disk["forward"]
    assert fw["t_values"] == [4, 8]
    for impl in ("fused", "reference", "torch-loop"):
        assert [e["T"] for e in fw["cases"][impl]] == [4, 8]
        assert all(e["status"] == "ok" and e["median_s"] > 0 for e in fw["cases"][impl])
        for n in ("5", "7"):
            entries = on_disk["train"]["cases"][impl][n]
            assert [e["T"] for e in entries] == [6, 9] and all(e["status"] == "ok" for e in entries)
    assert fw["roofline"][0]["bytes"] == 2 * 4 * 300 * 4
    assert on_disk["train"]["roofline"]["5"][1]["bytes"] == 5 * 9 * 2 * 5 * 4
    assert on_disk["copy_bandwidth_bytes_per_s"] > 0
    assert on_disk["memory"]["case"] == {"B": 2, "N": 7, "T": 9}
    assert set(on_disk["memory"]["bytes"]) == {"fused", "reference", "torch-loop"}
    assert (out / "lif.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = bench.format_report(results)
    assert "ROOFLINE" in text and "fused/ROOFLINE" in text and "reference/fused" in text


def test_same_spikes_as_the_reference():
    """The timed implementations compute the same LIF (forward constants of the paper's table)."""
    x = torch.rand(20, 50) * 0.5
    ref = bench.make_neuron("reference", 0.2, 0.3, torch.device("cpu"), train=False)(x)
    for impl in ("fused", "torch-loop"):
        assert torch.equal(bench.make_neuron(impl, 0.2, 0.3, torch.device("cpu"), train=False)(x), ref)


def test_missing_peer_is_skipped_and_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(bench.PEERS, "snntorch", "surely_not_an_installed_module.sub")
    results = bench.main(["--parts", "forward", "--neurons", "50", "--t-forward", "3", "--repeats", "1",
                          "--warmup", "0", "--impls", "fused", "snntorch", "--out", str(tmp_path)])
    assert results["config"]["implementations"] == ["fused"]
    assert "not installed" in results["config"]["unavailable"]["snntorch"]
    assert "snntorch: skipped, not installed" in capsys.readouterr().out


def test_peak_memory_sees_an_allocation():
    def alloc():
        t = torch.ones(64 * 2**20 // 4)  # 64 MiB (above glibc's largest mmap threshold: fresh pages), touched
        return float(t[-1])

    b = bench.peak_memory_bytes(alloc, torch.device("cpu"))
    if b is None:
        pytest.skip("no /proc/self/clear_refs on this system")
    assert b >= 60 * 2**20


@pytest.mark.parametrize("argv, match", [
    (["--repeats", "0"], "--repeats"),
    (["--budget-s", "0"], "--budget-s"),
    (["--memory-case", "1,2"], "B,N,T"),
])
def test_bad_arguments(argv, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        bench.main(argv + ["--out", str(tmp_path)])
