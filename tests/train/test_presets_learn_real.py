"""The FastSNN presets learn on the real Fashion-MNIST files (skipped with the reason when absent).

A preset that does not learn on its paper's data is a bug: before the fix, fastsnn-fmnist fired
no hidden spike and stayed at chance (loss ln 10) for the first hundreds of batches.  Here a short
run (the paper's configuration) must leave chance (10 %) behind.  The single-spike layer, with
eq. 5's (1 - beta) input factor, is silent at the start and wakes up within the first epoch: on
the development CPU 10 % after 200 batches, 26 % after 400 and 32 % after the epoch (469), so it
trains one whole epoch against a bar of 20 %; the LIF baseline reaches 33 % after 40 batches
(bar 25 %).  The authors'-code setting (``fastsnn-fmnist-code-kernel``: their data code over
T = 100, learned membrane kernels, no input factor) fires from the start: 20 % after 40 batches,
37 % after 80 (bar 25 %).  The bars sit below a learning network and far above a silent one (10 %).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spikescan.train.loop import train
from spikescan.train.presets import preset_config

REAL = Path(os.environ.get("SPIKESCAN_REAL_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


@pytest.mark.parametrize("preset, batches, bar", [("fastsnn-fmnist", None, 0.20), ("fastsnn-fmnist-lif", 40, 0.25),
                                                  ("fastsnn-fmnist-code-kernel", 80, 0.25)])
def test_fastsnn_preset_learns_on_real_fmnist(tmp_path, preset, batches, bar):
    root = REAL / "fashion-mnist"
    if not root.is_dir():
        pytest.skip(f"real data not found: {str(root)!r} (set SPIKESCAN_REAL_DATA)")
    cfg = preset_config(preset, dict(data_dir=str(root), epochs=1, max_batches=batches, out_dir=str(tmp_path / "run"),
                                     threads=2))
    final = train(cfg, progress=False, log=lambda *a: None)
    assert final["test_acc"] > bar, final
    assert final["test_spike_rate"] > 0  # the hidden layer fires
    nb = json.loads((tmp_path / "run" / "final.json").read_text())["neurobench"]
    assert nb["synaptic_ops_per_sample"]["effective_acs"] > 0
