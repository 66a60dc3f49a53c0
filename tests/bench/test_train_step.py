"""`spikescan bench train-step`: every peer computes spikescan's network (loss and first-layer
gradient from the same weights), and the command writes what it promises.

Small sizes on generated Fashion-MNIST-format IDX files (random images, fixed seed): T = 40,
batch 8, 16 hidden neurons.  Tolerances are the benchmark's own: the implementations differ by
float32 summation order only (relative ~1e-7 per input current), so the loss must agree to 1e-4
relative and the weight gradient to 1e-3 (relative Frobenius error; observed <= 1e-5 here).
No timing is asserted.
"""

import argparse
import json

import numpy as np
import pytest
import torch

from spikescan.bench import train_step as ts
from spikescan.data import write_idx
from spikescan.train import loop

SMALL = ["--num-steps", "40", "--batch-size", "8", "--hidden", "16", "--check-batches", "2"]
PEER_MODULES = {"snntorch": "snntorch", "spikingjelly": "spikingjelly.activation_based", "norse": "norse.torch"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion-mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 32), ("t10k", 8)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    return root


def _args(data_dir, *extra):
    parser = argparse.ArgumentParser()
    ts.add_arguments(parser)
    return parser.parse_args(["--data-dir", str(data_dir), *SMALL, *extra])


@pytest.fixture(scope="module")
def setups(data_dir):
    """Per preset: (cfg, model, the first two batches of the seeded shuffle)."""
    args = _args(data_dir)
    out = {}
    for preset in ts.PRESETS:
        cfg = ts._config(preset, args)
        train, _test, n_in, n_classes = loop.build_datasets(cfg)
        torch.manual_seed(0)
        model = loop.build_model(cfg, n_in, n_classes)
        batches = [b for _, b in zip(range(2), ts._loader(train, cfg, 0))]
        out[preset] = (cfg, model, batches)
    return out


def _scaled(model, cfg, scale):
    m = loop.build_model(cfg, model[0].in_features, model[2].out_features)
    m.load_state_dict(model.state_dict())
    with torch.no_grad():
        m[0].weight.mul_(scale)
    return m


@pytest.mark.parametrize("preset", ts.PRESETS)
@pytest.mark.parametrize("peer", list(PEER_MODULES))
def test_peer_loss_and_gradient_equal_spikescan(setups, preset, peer):
    pytest.importorskip(PEER_MODULES[peer], reason=f"{peer} is not installed (optional extra spikescan[peers])")
    cfg, model, batches = setups[preset]
    # x4 (over the hidden input factor, 1 - beta in the single-spike preset): the hidden layer
    # fires, so resets and first-spike masks matter
    for scale in (1.0, 4.0 / ts.spec_of(model).input_scale):
        m = _scaled(model, cfg, scale)
        impls = [ts.Impl(ts.SPIKESCAN, m, dense_input=False), ts.Impl(peer, ts.make_peer(peer, m), dense_input=True)]
        check = ts.check_agreement(impls, batches, cfg.readout, loss_rtol=1e-4, grad_rtol=1e-3)
        s = check["summary"][peer]
        assert s["ok"], (scale, s)
        assert s["max_loss_rel_diff"] <= 1e-4 and s["max_grad_rel_err"] <= 1e-3
        assert s["max_logits_abs_diff"] <= 1e-5  # same spikes: the readouts differ by rounding only
        spikes = [b["hidden_spikes"][ts.SPIKESCAN] for b in check["per_batch"]]
        if scale > 1:
            assert min(spikes) > 0, "the check would not exercise any spike"
        assert [b["hidden_spikes"][peer] for b in check["per_batch"]] == spikes


def test_lif_preset_fires_more_than_once_per_neuron(setups):
    """The 'active' weights exercise the LIF's reset: it fires more than the single-spike net."""
    counts = {}
    for preset in ts.PRESETS:
        cfg, model, batches = setups[preset]
        impl = ts.Impl(ts.SPIKESCAN, _scaled(model, cfg, 4.0 / ts.spec_of(model).input_scale), dense_input=False)
        counts[preset] = ts.loss_and_grad(impl, *batches[0], cfg.readout)["spikes"]
    assert counts["fastsnn-fmnist-lif"] > counts["fastsnn-fmnist"] > 0


def test_spikescan_dense_equals_spikescan(setups):
    cfg, model, batches = setups["fastsnn-fmnist-lif"]
    m = _scaled(model, cfg, 4.0)
    impls = [ts.Impl(ts.SPIKESCAN, m, dense_input=False), ts.Impl(ts.SPIKESCAN_DENSE, ts.dense_model(m), True)]
    assert ts.check_agreement(impls, batches, cfg.readout, loss_rtol=1e-4, grad_rtol=1e-3)["ok"]


def test_keep_first_spike_is_fastsnn_first_spike():
    """The peers' running mask equals spikescan's phi/g first_spike, forward and gradient."""
    from spikescan.ops.first_spike import first_spike

    g = torch.Generator().manual_seed(0)
    s = (torch.rand(30, 4, 5, generator=g) < 0.2).float().requires_grad_()
    w = torch.randn(30, 4, 5, generator=g)
    ref = first_spike(s)
    (gref,) = torch.autograd.grad((ref * w).sum(), s)
    count = phi = None
    out = []
    for s_t in s.unbind(0):
        o, count, phi = ts.keep_first_spike(s_t, count, phi)
        out.append(o)
    out = torch.stack(out)
    (gout,) = torch.autograd.grad((out * w).sum(), s)
    assert torch.equal(out, ref)
    torch.testing.assert_close(gout, gref, rtol=1e-6, atol=1e-6)


def test_cli_writes_json_and_png(data_dir, tmp_path):
    from spikescan import cli

    out = tmp_path / "bench"
    rc = cli.main(["bench", "train-step", "--data-dir", str(data_dir), *SMALL, "--steps", "2", "--peer-steps", "1",
                   "--warmup", "0", "--threads", "1", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["benchmark"] == "train-step"
    assert {"machine", "config", "presets", "what", "seconds"} <= set(res)
    assert res["machine"]["cpu_model"] and res["machine"]["torch_num_threads"] == 1
    installed = res["config"]["peers"]
    assert set(installed) | set(res["config"]["unavailable"]) == set(ts.PEERS)
    assert all(res["config"]["peer_versions"][p] for p in installed)
    assert [p["preset"] for p in res["presets"]] == list(ts.PRESETS)
    for p in res["presets"]:
        assert p["status"] == "ok"
        assert set(p["check"]) == {"initial", "active"}
        for check in p["check"].values():
            assert check["ok"] and set(check["summary"]) == {ts.SPIKESCAN_DENSE, *installed}
            assert len(check["per_batch"]) == 2
        assert set(p["timing"]) == {ts.SPIKESCAN, ts.SPIKESCAN_DENSE, *installed}
        for name, t in p["timing"].items():
            assert len(t["times_s"]) == (2 if name == ts.SPIKESCAN else 1)
            assert t["median_s"] > 0 and t["epoch_s"] == pytest.approx(t["median_s"] * 4)  # 32 samples / 8
            assert {"ratio_to_spikescan", "fetch_s", "iqr_s"} <= set(t)
        assert p["timing"][ts.SPIKESCAN]["ratio_to_spikescan"] == 1.0
    assert (out / "train_step.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_peer_is_skipped_and_reported(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ts.PEERS, "snntorch", "surely_not_an_installed_module.sub")
    res = ts.main(["--data-dir", str(data_dir), *SMALL, "--preset", "fastsnn-fmnist", "--peers", "snntorch",
                   "--no-dense", "--steps", "1", "--warmup", "0", "--check-scale", "1", "--out", str(tmp_path)])
    assert res["config"]["peers"] == [] and "not installed" in res["config"]["unavailable"]["snntorch"]
    assert "snntorch: skipped, not installed" in capsys.readouterr().out
    assert set(res["presets"][0]["timing"]) == {ts.SPIKESCAN}


def test_a_disagreeing_peer_stops_the_benchmark(data_dir, tmp_path, monkeypatch):
    pytest.importorskip("snntorch", reason="snntorch is not installed (optional extra spikescan[peers])")
    real = ts.spec_of

    def wrong_threshold(model):
        spec = real(model)
        return ts.NetSpec(**{**spec.__dict__, "threshold": 0.5})

    monkeypatch.setattr(ts, "spec_of", wrong_threshold)
    with pytest.raises(ts.DisagreementError, match="snntorch .*disagree with spikescan"):
        ts.main(["--data-dir", str(data_dir), *SMALL, "--preset", "fastsnn-fmnist-lif", "--peers", "snntorch",
                 "--no-dense", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["presets"][0]["status"] == "check failed" and "timing" not in res["presets"][0]


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir .*Fashion-MNIST"):
        ts.main(["--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])


@pytest.mark.parametrize("argv, match", [
    (["--steps", "0"], "--steps"), (["--peer-steps", "0"], "--peer-steps"), (["--warmup", "-1"], "--warmup"),
    (["--check-scale", "0"], "--check-scale"), (["--loss-rtol", "nan"], "--loss-rtol"),
])
def test_bad_arguments(data_dir, tmp_path, argv, match):
    with pytest.raises(ValueError, match=match):
        ts.main(["--data-dir", str(data_dir), *argv, "--out", str(tmp_path)])
