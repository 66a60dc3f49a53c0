"""`spikescan train --distributed`: DDP on 2 gloo ranks reproduces single-process training on the
same global batches; only rank 0 writes the run folder."""

from __future__ import annotations

import json

import pytest
import torch

from spikescan.distributed import spawn
from spikescan.distributed.launch import SpawnError
from spikescan.train.checkpoint import load_checkpoint
from spikescan.train.loop import TrainConfig, train


def _cfg(out_dir, **kw) -> TrainConfig:
    base = dict(neuron="lif", hidden=[32, 32], epochs=2, batch_size=32, max_batches=6, eval_batch_size=64,
                distributed=True, out_dir=str(out_dir), seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _rank_train(rank, world, out_dir, kw=None):
    return train(_cfg(out_dir, **(kw or {})), progress=False, log=lambda *a, **k: None)


def test_ddp_two_ranks_equal_single_process(tmp_path):
    # float64: DDP sums two 16-sample gradients where one process sums 32 in one matmul, so the
    # two differ by float reassociation only.  In float32 those last bits (which depend on the
    # host's BLAS code path) flip signs of near-zero gradients, Adam turns each flip into a full
    # lr step and spikes flip after it: no float32 tolerance is both safe and meaningful.  In
    # float64 the reassociation error is ~1e-16 relative; Adam divides by sqrt(v) + 1e-8 and 12
    # steps amplify it by at most ~1e6 for gradients at the 1e-8 scale, hence 1e-9 (relative and
    # absolute on weights of scale 0.1): far above rounding, far below any real difference (one
    # wrong sample or step moves weights by ~lr = 3e-3).
    kw = {"dtype": "float64"}
    single = train(_cfg(tmp_path / "single", **kw), progress=False, log=lambda *a, **k: None)
    finals = spawn(_rank_train, 2, str(tmp_path / "ddp"), kw, timeout=240)
    assert finals[0]["world_size"] == 2 and finals[1]["world_size"] == 2
    ref_hist = json.loads((tmp_path / "single" / "metrics.json").read_text())
    ddp_hist = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert len(ref_hist) == len(ddp_hist) == 2
    for a, b in zip(ref_hist, ddp_hist):
        for key in ("train_loss", "test_loss", "train_spike_rate", "test_spike_rate"):
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
        assert b["train_acc"] == a["train_acc"] and b["test_acc"] == a["test_acc"]
    # the epoch metrics are summed over both ranks' samples: every rank reports the same numbers
    assert finals[0]["train_loss"] == finals[1]["train_loss"]
    w_ref = load_checkpoint(tmp_path / "single" / "checkpoint.pt")["model"]
    w_ddp = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["model"]
    assert w_ref.keys() == w_ddp.keys()  # saved unwrapped: loads without DDP
    for k in w_ref:
        assert w_ddp[k].dtype == torch.float64
        torch.testing.assert_close(w_ddp[k], w_ref[k], rtol=1e-9, atol=1e-9)
    assert single["train_loss"] == ref_hist[-1]["train_loss"]


def _rank_train_killed(rank, world, out_dir, kw, kill_rank, kill_batch):
    """Train, but rank ``kill_rank`` SIGKILLs itself at global training batch ``kill_batch`` (1-based)."""
    import os
    import signal

    from spikescan.train import loop

    real = loop.run_epoch
    seen = {"batches": 0}

    def dying(model, loader, cfg, optimizer=None, *a, **k):
        if optimizer is not None and rank == kill_rank:
            class Loader:
                def __iter__(self):
                    for batch in loader:
                        seen["batches"] += 1
                        if seen["batches"] == kill_batch:
                            os.kill(os.getpid(), signal.SIGKILL)
                        yield batch
            return real(model, Loader(), cfg, optimizer, *a, **k)
        return real(model, loader, cfg, optimizer, *a, **k)

    loop.run_epoch = dying
    return train(_cfg(out_dir, **kw), progress=False, log=lambda *a, **k: None)


def _rank_resume(rank, world, out_dir, kw):
    return train(_cfg(out_dir, **kw), resume=True, progress=False, log=lambda *a, **k: None)


@pytest.mark.parametrize("neuron", ["spsn-sb", "lif"])
def test_ddp_kill_and_resume_equals_uninterrupted(tmp_path, neuron):
    # spsn-sb draws different noise on each rank: the resume must restore every rank's RNG stream
    kw = {"neuron": neuron, "epochs": 3, "max_batches": 4}
    spawn(_rank_train, 2, str(tmp_path / "full"), kw, timeout=240)
    with pytest.raises(SpawnError, match="rank 1: died"):  # mid-epoch 2 (4 batches per epoch)
        spawn(_rank_train_killed, 2, str(tmp_path / "cut"), kw, 1, 6, timeout=240)
    assert len(json.loads((tmp_path / "cut" / "metrics.json").read_text())) == 1
    spawn(_rank_resume, 2, str(tmp_path / "cut"), kw, timeout=240)
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    strip = [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in full]
    assert [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in cut] == strip
    w_full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["model"]
    w_cut = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["model"]
    for k in w_full:
        assert torch.equal(w_full[k], w_cut[k]), k


def test_ddp_resume_refuses_another_number_of_ranks(tmp_path):
    kw = {"epochs": 1, "max_batches": 2}
    spawn(_rank_train, 2, str(tmp_path / "r"), kw, timeout=240)
    with pytest.raises(ValueError, match="trained on 2 rank"):
        train(_cfg(tmp_path / "r", epochs=2, max_batches=2), resume=True, progress=False, log=lambda *a, **k: None)


def test_distributed_needs_out_dir_and_divisible_batch(tmp_path):
    with pytest.raises(ValueError, match="out_dir"):
        train(TrainConfig(distributed=True, epochs=1), progress=False, log=lambda *a, **k: None)
    with pytest.raises(SpawnError, match="batch_size 33.*divisible"):
        spawn(_rank_train_bad_batch, 2, str(tmp_path / "bad"), timeout=120)


def _rank_train_bad_batch(rank, world, out_dir):
    cfg = _cfg(out_dir)
    cfg.batch_size = 33
    return train(cfg, progress=False, log=lambda *a, **k: None)
