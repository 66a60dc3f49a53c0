import json

import pytest
import torch

from spikescan.nn import SPSN, MaxMembraneReadout
from spikescan.train import (FeedForwardSNN, TrainConfig, load_checkpoint, make_neuron, readout_cross_entropy,
                             record_spikes, reduce_time, save_checkpoint, spike_rate_regularizer, train)
from spikescan.train.losses import readout_logits
from spikescan.train.models import NEURONS
from spikescan.train import loop as loop_mod


def test_reduce_time_hand_values():
    u = torch.tensor([[[1.0, 4.0]], [[3.0, 0.0]], [[2.0, 2.0]]])  # [T=3, B=1, C=2]
    assert reduce_time(u, "mean").tolist() == [[2.0, 2.0]]
    assert reduce_time(u, "max").tolist() == [[3.0, 4.0]]
    assert reduce_time(u, "last").tolist() == [[2.0, 2.0]]
    with pytest.raises(ValueError, match="readout"):
        reduce_time(u, "median")
    loss = readout_cross_entropy(u, torch.tensor([1]), "max")
    torch.testing.assert_close(loss, torch.log1p(torch.exp(torch.tensor(-1.0))))


def test_spike_rate_regularizer_hand_values():
    # layer 1: 2 neurons firing with rates 1.0 and 0.5; layer 2: 1 neuron, rate 0.0 -> sum 1.5, N=3
    s1 = torch.tensor([[[1.0, 1.0]], [[1.0, 0.0]]])
    s2 = torch.zeros(2, 1, 1)
    assert float(spike_rate_regularizer([s1, s2], 0.4)) == pytest.approx((1.5 - 1.2) ** 2)
    assert float(spike_rate_regularizer([s1, s2], 0.6)) == 0.0
    with pytest.raises(ValueError, match="theta_reg"):
        spike_rate_regularizer([s1], 1.5)


def test_record_spikes_collects_every_spiking_layer():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), SPSN(4), torch.nn.Linear(4, 5), SPSN(5))
    with record_spikes(model) as rec:
        model(torch.randn(6, 2, 3))
    assert [r.shape[-1] for r in rec] == [4, 5]
    model(torch.randn(6, 2, 3))
    assert len(rec) == 2  # hooks removed after the block


def test_checkpoint_roundtrip_and_corrupt_file(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"w": torch.arange(3.0), "epoch": 2})
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and state["w"].tolist() == [0.0, 1.0, 2.0]
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # truncated
    with pytest.raises(ValueError, match="ck.pt"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="ck.pt"):
        load_checkpoint(path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    torch.save({"model": Evil()}, path)  # a malicious pickle: weights_only refuses to run it
    with pytest.raises(ValueError, match="ck.pt"):
        load_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def _small_cfg(out, **kw):
    base = dict(hidden=[32], num_steps=8, epochs=2, batch_size=128, out_dir=str(out))
    base.update(kw)
    return TrainConfig(**base)


def test_train_writes_run_folder_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "run"
    final = train(_small_cfg(out), progress=False, log=lambda *_: None)
    for name in ("config.json", "metrics.json", "metrics.csv", "curves.png", "raster.png", "checkpoint.pt",
                 "final.json"):
        assert (out / name).is_file(), name
    history = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert 0.0 <= final["test_acc"] <= 1.0 and 0.0 < final["test_spike_rate"] < 1.0
    saved = json.loads((out / "config.json").read_text())
    assert saved["hidden"] == [32]
    # the data set's defaults are filled in: the run folder says what ran
    assert (saved["encoding"], saved["num_steps"], saved["dt"]) == ("rate", 8, 1e-3)
    with pytest.raises(FileExistsError, match="resume"):
        train(_small_cfg(out), progress=False, log=lambda *_: None)


def test_short_training_learns_digits(tmp_path):
    final = train(_small_cfg(tmp_path / "r", hidden=[64, 64], num_steps=32, epochs=5, batch_size=32),
                  progress=False, log=lambda *_: None)
    assert final["test_acc"] > 0.6  # chance is 0.1


@pytest.mark.parametrize("neuron", [n for n in NEURONS if n != "spsn-sb"])
def test_other_neurons_train(tmp_path, neuron):
    extra = {"readout": "max-membrane"} if neuron == "single-spike" else {}
    final = train(_small_cfg(tmp_path / neuron, neuron=neuron, epochs=1, **extra), progress=False,
                  log=lambda *_: None)
    assert 0.0 <= final["test_acc"] <= 1.0
    assert 0.0 <= final["test_spike_rate"] <= 1.0
    if neuron == "relu":
        assert final["test_spike_rate"] == 0.0 and final["test_spikes_per_ms"] == 0.0


def test_model_kinds_and_readouts():
    x = torch.rand(8, 3, 10)
    for kind in ("psu", "ipsu", "rpsu", "single-spike", "plif"):
        net = FeedForwardSNN(10, [6, 5], 4, kind, num_steps=8)
        with torch.no_grad(), record_spikes(net) as spikes:
            u = net(x)
        assert u.shape == (8, 3, 4) and [s.shape for s in spikes] == [(8, 3, 6), (8, 3, 5)]
        if kind == "single-spike":
            assert all(float(s.sum(0).max()) <= 1.0 for s in spikes)  # at most one spike per neuron
    fast = FeedForwardSNN(10, [6], 4, "single-spike", tau_mem=0.01, readout_layer="max-membrane")
    assert isinstance(fast[-1], MaxMembraneReadout) and fast(x).shape == (3, 4)
    assert readout_logits(fast(x), "max-membrane").shape == (3, 4)
    psu = make_neuron("psu", 6, tau_mem=0.002, dt=1e-3)
    assert psu.tau == 2.0  # PSU time constants count steps: tau_mem / dt
    with pytest.raises(ValueError, match="num_steps"):
        make_neuron("ipsu", 6)
    with pytest.raises(ValueError, match="max-membrane"):
        readout_logits(torch.zeros(2, 3, 4), "max-membrane")


def test_augmentation_is_on_the_fly_and_training_only(tmp_path):
    cfg = _small_cfg(tmp_path / "aug", k_shift=0.2, k_scale=0.3).resolved()
    train_set, test_set, _, _ = loop_mod.build_datasets(cfg)
    plain_train, plain_test, _, _ = loop_mod.build_datasets(_small_cfg(tmp_path / "p").resolved())
    torch.manual_seed(0)
    a = torch.stack([train_set[i][0] for i in range(20)])
    b = torch.stack([train_set[i][0] for i in range(20)])
    raw = torch.stack([plain_train[i][0] for i in range(20)])
    assert not torch.equal(a, b) and not torch.equal(a, raw)  # drawn anew at every access
    # the test split is never augmented (and the plain run serves it as events: same samples)
    assert len(test_set) == len(plain_test)
    assert all(torch.equal(test_set[i][0], plain_test[i][0]) for i in range(len(test_set)))


def test_resume_after_crash_reproduces_uninterrupted_run(tmp_path, monkeypatch):
    full = train(_small_cfg(tmp_path / "full", epochs=3), progress=False, log=lambda *_: None)

    real_run_epoch = loop_mod.run_epoch
    calls = {"n": 0}

    def crashing(model, loader, cfg, optimizer=None, *a, **kw):
        if optimizer is not None:
            calls["n"] += 1
            if calls["n"] == 2:  # die during the second training epoch
                raise KeyboardInterrupt
        return real_run_epoch(model, loader, cfg, optimizer, *a, **kw)

    monkeypatch.setattr(loop_mod, "run_epoch", crashing)
    with pytest.raises(KeyboardInterrupt):
        train(_small_cfg(tmp_path / "crash", epochs=3), progress=False, log=lambda *_: None)
    monkeypatch.setattr(loop_mod, "run_epoch", real_run_epoch)
    assert len(json.loads((tmp_path / "crash" / "metrics.json").read_text())) == 1
    resumed = train(_small_cfg(tmp_path / "crash", epochs=3), resume=True, progress=False, log=lambda *_: None)
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "test_spike_rate"):
        assert resumed[key] == full[key], key


def test_config_validation():
    with pytest.raises(ValueError, match="neuron"):
        TrainConfig(neuron="izhikevich").validate()
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"neurons": "lif"})
    with pytest.raises(ValueError, match="dataset"):
        TrainConfig(dataset="imagenet").validate()
    with pytest.raises(ValueError, match="k_shift"):
        TrainConfig(k_shift=1.5).validate()
    with pytest.raises(TypeError, match="neuron_kwargs"):
        TrainConfig(neuron_kwargs=[1]).validate()
    for bad, match in [(dict(epochs=2.5), "epochs must be an int"), (dict(batch_size=True), "batch_size"),
                       (dict(hidden=[16, 0]), "hidden"), (dict(hidden=[]), "hidden"), (dict(dropout=1.0), "dropout"),
                       (dict(dropout=-0.1), "dropout"), (dict(reg_weight=float("nan")), "reg_weight"),
                       (dict(weight_decay=-1.0), "weight_decay"), (dict(lr=float("inf")), "lr"),
                       (dict(tau_syn=float("nan")), "tau_syn"), (dict(tau_mem=-0.02), "tau_mem"),
                       (dict(dt=0.0), "dt"), (dict(seed=-1), "seed"), (dict(seed=2**64), "seed"),
                       (dict(theta_reg=float("nan")), "theta_reg"), (dict(dtype="float16"), "dtype"),
                       (dict(neuron="lif", backend="chunked"), "backend"), (dict(device="tpu:0"), "device"),
                       (dict(threads=0), "threads")]:
        with pytest.raises((ValueError, TypeError), match=match):
            TrainConfig(**bad).validate()
    TrainConfig(seed=2**64 - 1, dropout=0.5, neuron="psu", backend="matrix", threads=None).validate()


def test_final_json_holds_neurobench_metrics(tmp_path):
    out = tmp_path / "run"
    train(_small_cfg(out, epochs=1, hidden=[16, 12]), progress=False, log=lambda *_: None)
    nb = json.loads((out / "final.json").read_text())["neurobench"]
    assert nb["parameter_count"] == (64 * 16 + 16) + (16 * 12 + 12) + (12 * 10 + 10)
    assert set(nb["activation_sparsity"]) == {"1", "3"} and all(0 <= v <= 1 for v in nb["activation_sparsity"].values())
    ops = nb["synaptic_ops_per_sample"]
    # the rate-coded input is 0/1: the first layer accumulates; dense counts all T x in x out pairs
    assert ops["effective_acs"] > 0 and ops["dense"] == 8 * (64 * 16 + 16 * 12 + 12 * 10)


def test_time_estimate_leaves_the_first_batch_out_of_the_rate(tmp_path, monkeypatch):
    # A fake clock: the first training batch "takes" 30 s (say, numba compiling its kernels),
    # every later one 0.5 s.  The estimate must quote 500 ms per batch, not a 30 s-skewed mean.
    clock = {"now": 0.0, "batches": 0}
    real_loss = loop_mod.readout_cross_entropy

    def loss_advancing_the_clock(*a, **kw):
        clock["batches"] += 1
        clock["now"] += 30.0 if clock["batches"] == 1 else 0.5
        return real_loss(*a, **kw)

    monkeypatch.setattr(loop_mod, "readout_cross_entropy", loss_advancing_the_clock)
    monkeypatch.setattr(loop_mod.time, "perf_counter", lambda: clock["now"])
    lines = []
    # digits: 1437 training samples in batches of 16 -> 90 batches, enough for the 21 timed ones
    train(_small_cfg(tmp_path / "run", epochs=3, batch_size=16), progress=False, log=lines.append)
    (line,) = [s for s in lines if s.startswith("first batch")]
    assert "first batch 30.0 s" in line and "then 500 ms per batch" in line, line
    n = 90
    per_epoch, total = 30.0 + 0.5 * (n - 1), 30.0 + 0.5 * (3 * n - 1)
    assert loop_mod._duration(per_epoch) in line and loop_mod._duration(total) in line, line
