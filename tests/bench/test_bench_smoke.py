"""Smoke tests of the FastSNN-grid and PSU benchmarks on tiny grids: outputs written, every case timed."""

import json

from spikescan.bench import fastsnn_grid, psu


def _json_files(path):
    return sorted(p for p in path.rglob("*.json"))


def test_fastsnn_grid_tiny(tmp_path):
    fastsnn_grid.main(["--units", "5", "--t-values", "8", "--batch-sizes", "2", "--n-in", "12",
                       "--repeats", "1", "--warmup", "0", "--out", str(tmp_path)])
    files = _json_files(tmp_path)
    assert files, "no JSON written"
    assert json.loads(files[0].read_text())
    assert list(tmp_path.rglob("*.png")), "no heatmap written"


def test_psu_bench_tiny(tmp_path):
    psu.main(["--t-values", "4", "8", "--batch", "2", "--in-features", "6", "--hidden", "5",
              "--repeats", "1", "--warmup", "0", "--out", str(tmp_path)])
    files = _json_files(tmp_path)
    assert files, "no JSON written"
    assert json.loads(files[0].read_text())
    assert list(tmp_path.rglob("*.png")), "no plot written"
