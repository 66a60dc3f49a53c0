"""The run folder: one process at a time, no half-made folder after a failed start, honest --resume,
a diverged run stopped with its last good checkpoint kept, and SIGKILL + resume == uninterrupted."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from spikescan.distributed import SpawnError, spawn
from spikescan.train import loop as loop_mod
from spikescan.train.checkpoint import load_checkpoint
from spikescan.train.loop import TrainConfig, TrainingDivergedError, resume_run, train
from spikescan.train.rundir import RunFolder
from tests.train._fixtures import write_dataset


def _quiet(*_a, **_k):
    pass


def _cfg(out, **kw) -> TrainConfig:
    base = dict(hidden=[16], num_steps=8, epochs=2, batch_size=64, max_batches=3, eval_batch_size=128,
                out_dir=str(out))
    base.update(kw)
    return TrainConfig(**base)


def _metrics(run_dir):
    rows = json.loads((run_dir / "metrics.json").read_text())
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]


def test_a_folder_in_use_is_refused_at_once(tmp_path):
    out = tmp_path / "run"
    holder = RunFolder(out)
    holder.claim()
    try:
        with pytest.raises(FileExistsError, match=f"in use by another training process \\(pid {os.getpid()}\\)"):
            train(_cfg(out), progress=False, log=_quiet)
        assert not (out / "config.json").exists()  # the refused run wrote nothing
    finally:
        holder.release()
    train(_cfg(out), progress=False, log=_quiet)  # free again once the holder lets go


_RACER = textwrap.dedent("""
    import json, sys
    from spikescan.train.loop import TrainConfig, train
    out, seed = sys.argv[1], int(sys.argv[2])
    try:
        train(TrainConfig(hidden=[16], num_steps=8, epochs=2, batch_size=64, max_batches=3, seed=seed,
                          out_dir=out), progress=False, log=lambda *a: None)
        print(json.dumps({"seed": seed, "ok": True}))
    except FileExistsError as e:
        print(json.dumps({"seed": seed, "ok": False, "error": str(e)}))
""")


def test_two_processes_into_one_folder_exactly_one_trains(tmp_path):
    out = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(out), str(seed)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    winners = [r for r in results if r["ok"]]
    assert len(winners) == 1, results
    loser = next(r for r in results if not r["ok"])
    assert "in use by another training process" in loser["error"] or "already holds a run" in loser["error"]
    seed = winners[0]["seed"]
    # every file of the folder comes from the one run that trained there
    assert json.loads((out / "config.json").read_text())["seed"] == seed
    assert json.loads((out / "final.json").read_text())["epoch"] == 2
    saved = json.loads((out / "config.json").read_text())
    rerun = train(TrainConfig(**{**saved, "out_dir": str(tmp_path / "alone")}), progress=False, log=_quiet)
    assert json.loads((out / "final.json").read_text())["train_loss"] == rerun["train_loss"]


def test_a_failed_start_leaves_no_folder_and_the_corrected_rerun_starts(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError):
        train(_cfg(out, dataset="mnist", data_dir=str(tmp_path / "nowhere")), progress=False, log=_quiet)
    assert not out.exists()
    train(_cfg(out), progress=False, log=_quiet)
    assert json.loads((out / "config.json").read_text())["dataset"] == "digits"


def test_a_failure_in_the_first_epoch_removes_the_run_and_a_pre_made_folder_stays(tmp_path, monkeypatch):
    out = tmp_path / "made-by-user"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    def broken(*_a, **_k):
        raise RuntimeError("boom")

    monkeypatch.setattr(loop_mod, "run_epoch", broken)
    with pytest.raises(RuntimeError, match="boom"):
        train(_cfg(out), progress=False, log=_quiet)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the user's file stays, ours go


def test_stale_temp_files_of_a_killed_write_are_removed_on_claim(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    folder = RunFolder(out)
    folder.claim()
    folder.release()
    assert not stale.exists()


def test_resume_refuses_a_changed_config_and_extends_epochs(tmp_path):
    out = tmp_path / "run"
    train(_cfg(out, epochs=2), progress=False, log=_quiet)
    with pytest.raises(ValueError, match="neuron: the run has 'spsn-sb', asked 'lif'"):
        resume_run(out, neuron="lif", epochs=5, progress=False, log=_quiet)
    with pytest.raises(ValueError, match="already finished its 2 epochs"):
        resume_run(out, progress=False, log=_quiet)
    with pytest.raises(ValueError, match="epochs must be >= 2"):
        resume_run(out, epochs=1, progress=False, log=_quiet)
    assert json.loads((out / "config.json").read_text())["epochs"] == 2  # refusals change nothing
    notes = []
    final = resume_run(out, epochs=4, progress=False, log=notes.append)
    assert final["epoch"] == 4 and [r["epoch"] for r in _metrics(out)] == [1, 2, 3, 4]
    assert json.loads((out / "config.json").read_text())["epochs"] == 4
    assert any("schedule now spans 4 epochs" in n for n in notes)
    # the default cosine schedule, stretched from epoch 3 on: lr after epoch e is lr0 (1 + cos(pi e / 4)) / 2
    lr0 = TrainConfig().lr
    lrs = [r["lr"] for r in _metrics(out)]
    assert lrs[2] == pytest.approx(lr0 * (1 + math.cos(3 * math.pi / 4)) / 2, rel=1e-12)
    assert lrs[3] == pytest.approx(0.0, abs=1e-15)


def test_resume_with_a_new_data_dir_is_allowed(tmp_path):
    data = write_dataset("mnist", tmp_path / "mnist-a")
    out = tmp_path / "run"
    kw = dict(dataset="mnist", num_steps=4, hidden=[8], batch_size=4)
    train(_cfg(out, data_dir=str(data), epochs=1, **kw), progress=False, log=_quiet)
    moved = tmp_path / "mnist-b"
    data.rename(moved)
    final = resume_run(out, data_dir=str(moved), epochs=2, progress=False, log=_quiet)
    assert final["epoch"] == 2
    assert json.loads((out / "config.json").read_text())["data_dir"] == str(moved)


def test_identical_seeds_give_identical_runs(tmp_path):
    a = train(_cfg(tmp_path / "a", seed=7), progress=False, log=_quiet)
    b = train(_cfg(tmp_path / "b", seed=7), progress=False, log=_quiet)
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    wa = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    wb = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train(_cfg(tmp_path / "c", seed=8), progress=False, log=_quiet)
    assert c["train_loss"] != a["train_loss"] and b["train_loss"] == a["train_loss"]


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = loop_mod.readout_cross_entropy
    calls = {"n": 0}

    def poisoned(u, y, readout):
        calls["n"] += 1
        loss = real(u, y, readout)
        # the 2nd training batch of epoch 2 (3 training + 3 test batches per epoch)
        return loss * float("nan") if calls["n"] == 8 else loss

    monkeypatch.setattr(loop_mod, "readout_cross_entropy", poisoned)
    with pytest.raises(TrainingDivergedError, match="epoch 2/3, batch 2: the loss is not finite"):
        train(_cfg(out, epochs=3), progress=False, log=_quiet)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())


def test_non_finite_weights_are_never_checkpointed(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = loop_mod.run_epoch
    calls = {"n": 0}

    def corrupting(model, loader, cfg, optimizer=None, *a, **k):
        result = real(model, loader, cfg, optimizer, *a, **k)
        if optimizer is not None:
            calls["n"] += 1
            if calls["n"] == 2:  # the optimiser's last step of epoch 2 produced an Inf
                with torch.no_grad():
                    next(model.parameters()).view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(loop_mod, "run_epoch", corrupting)
    with pytest.raises(TrainingDivergedError, match="epoch 2: non-finite weights in 0.weight"):
        train(_cfg(out, epochs=3), progress=False, log=_quiet)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def _train_and_die(rank, world, out, point):
    """Train 3 epochs, SIGKILLing this process at ``point`` of epoch 2."""
    from spikescan.train import checkpoint as ck
    from spikescan.train import loop

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    real_epoch, real_write = loop.run_epoch, ck.atomic_write
    seen = {"train": 0, "test": 0}

    def epoch(model, loader, cfg, optimizer=None, *a, **k):
        kind = "train" if optimizer is not None else "test"
        seen[kind] += 1
        if seen[kind] == 2 and point in ("mid-batch", "test-pass"):
            if point == "mid-batch":
                def batches():
                    for i, b in enumerate(loader):
                        if i == 1:
                            die()
                        yield b
                return real_epoch(model, batches(), cfg, optimizer, *a, **k)
            die()
        return real_epoch(model, loader, cfg, optimizer, *a, **k)

    def write(path, fn):
        if point == "checkpoint-write" and path.name == "checkpoint.pt" and seen["train"] == 2:
            with open(path.parent / f".{path.name}.killed.tmp", "wb") as f:
                fn(f)  # the temp file is complete, os.replace has not happened yet
            die()
        real_write(path, fn)

    loop.run_epoch, ck.atomic_write = epoch, write
    train(_cfg(out, epochs=3, neuron="spsn-sb"), progress=False, log=_quiet)


@pytest.mark.parametrize("point", ["mid-batch", "test-pass", "checkpoint-write"])
def test_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path, point):
    full = tmp_path / "full"
    train(_cfg(full, epochs=3, neuron="spsn-sb"), progress=False, log=_quiet)
    cut = tmp_path / "cut"
    with pytest.raises(SpawnError, match="died"):
        spawn(_train_and_die, 1, str(cut), point, timeout=240)
    assert load_checkpoint(cut / "checkpoint.pt")["epoch"] == 1
    resume_run(cut, progress=False, log=_quiet)
    assert _metrics(cut) == _metrics(full)
    wf = load_checkpoint(full / "checkpoint.pt")["model"]
    wc = load_checkpoint(cut / "checkpoint.pt")["model"]
    assert all(torch.equal(wf[k], wc[k]) for k in wf)
    assert not list(cut.glob(".*.tmp"))


def test_run_commits_reads_the_commit_comment_of_every_start_and_resume():
    from spikescan.train.results import run_commits

    text = ("2026-12-01 10:00:00  spikescan train --preset x  # spikescan 0123456789ab\n"
            "2026-12-01 11:00:00  spikescan train --resume --out r  # spikescan 0123456789ab+changes\n"
            "2026-12-01 12:00:00  spikescan train --resume --out r  # spikescan 0123456789ab\n"
            "2026-12-01 09:00:00  spikescan train --out r\n")  # a line from before commits were recorded
    assert run_commits(text) == ["0123456789ab", "0123456789ab+changes"]
