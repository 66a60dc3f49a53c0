"""Evaluate a finished (or interrupted) run's checkpoint on the test split, K times for stochastic neurons.

SPSN §V-C: an SPSN network fires stochastically, so one evaluation is one draw.  ``trials=K``
repeats the whole test pass K times (trial ``k`` seeds torch's RNG with ``seed + k``) and reports
the mean and standard deviation over trials of the accuracy, the loss and the spike rate, and of
the readout itself (the per-sample logits).  A deterministic network (LIF, ReLU) gives std 0.
The result goes to ``RUN_DIR/eval.json`` (written atomically); no other file is touched.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .checkpoint import load_checkpoint, write_json
from .loop import DTYPES, TrainConfig, _collate, build_datasets, build_model, measure_workload
from .losses import readout_logits
from .recorder import record_spikes

__all__ = ["evaluate"]


def _std(values) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def evaluate(run_dir, *, data_dir=None, trials: int = 1, seed: int = 0, batch_size: int | None = None,
             threads: int | None = 1, log=print) -> dict:
    """Load ``run_dir/config.json`` and ``checkpoint.pt``, evaluate ``trials`` times, write ``eval.json``.

    ``data_dir`` replaces the run's data folder (the files may have moved).  Returns the dict
    written: ``acc_mean``, ``acc_std``, ``acc`` (per trial), ``loss_mean/std``,
    ``spike_rate_mean/std`` (spikes per neuron per step), ``readout_std`` (the std over trials of
    each sample's logit, averaged over samples and classes), ``readout_abs_mean`` (for scale) and
    ``ensemble_acc`` (accuracy of the logits averaged over trials) and ``neurobench`` (one more
    pass: :func:`~spikescan.train.loop.measure_workload`, the metrics ``final.json`` holds, by
    the counters of the running version).
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an int >= 1, got {trials!r}")
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: {run_dir} is not a run folder")
    cfg = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
    if data_dir is not None:
        cfg.data_dir = str(data_dir)
    cfg = cfg.resolved()
    state = load_checkpoint(run_dir / "checkpoint.pt")
    if threads is not None:
        torch.set_num_threads(int(threads))
    _, test_set, n_in, n_out = build_datasets(cfg, test_only=True)
    model = build_model(cfg, n_in, n_out).to(cfg.device, DTYPES[cfg.dtype])
    model.load_state_dict(state["model"])
    model.eval()
    loader = DataLoader(test_set, batch_size=batch_size or cfg.eval_batch_size, shuffle=False, collate_fn=_collate)

    accs, losses, rates, all_logits, labels = [], [], [], [], None
    for k in range(trials):
        torch.manual_seed(seed + k)
        logits_k, ys, spikes_total, neuron_steps = [], [], 0.0, 0
        with torch.no_grad():
            for b, (x, y) in enumerate(loader):
                if cfg.max_batches is not None and b >= cfg.max_batches:
                    break
                with record_spikes(model) as spikes:
                    out = model(x.to(cfg.device, DTYPES[cfg.dtype]))
                logits_k.append(readout_logits(out, cfg.readout).cpu())
                ys.append(y)
                for s in spikes:
                    spikes_total += float(s.sum())
                    neuron_steps += s.numel()
        logits = torch.cat(logits_k)
        labels = torch.cat(ys)
        all_logits.append(logits)
        accs.append(float((logits.argmax(1) == labels).float().mean()))
        losses.append(float(F.cross_entropy(logits, labels)))
        rates.append(spikes_total / neuron_steps if neuron_steps else 0.0)
    stacked = torch.stack(all_logits)  # [K, N, C]
    readout_std = float(stacked.std(dim=0, correction=1).mean()) if trials > 1 else 0.0
    result = {
        "run_dir": str(run_dir), "trials": trials, "seed": seed, "samples": int(labels.numel()),
        "acc_mean": statistics.fmean(accs), "acc_std": _std(accs), "acc": accs,
        "loss_mean": statistics.fmean(losses), "loss_std": _std(losses),
        "spike_rate_mean": statistics.fmean(rates), "spike_rate_std": _std(rates),
        "readout_std": readout_std, "readout_abs_mean": float(stacked.abs().mean()),
        "ensemble_acc": float((stacked.mean(0).argmax(1) == labels).float().mean()),
        "checkpoint_epoch": int(state["epoch"]),
    }
    torch.manual_seed(seed)
    # the NeuroBench-style workload by this version's counters (a run's final.json has its own version's)
    result["neurobench"] = measure_workload(model, loader, cfg)
    write_json(run_dir / "eval.json", result)
    log(f"{run_dir}: test accuracy {100 * result['acc_mean']:.2f} ± {100 * result['acc_std']:.2f} % over "
        f"{trials} trial(s) (ensemble {100 * result['ensemble_acc']:.2f} %), readout std {readout_std:.4f} "
        f"(|logit| {result['readout_abs_mean']:.3f}), {result['spike_rate_mean']:.3f} spikes/neuron/step "
        f"-> {run_dir / 'eval.json'}")
    return result


def load_run_model(run_dir) -> tuple[torch.nn.Module, TrainConfig]:
    """The trained network of ``run_dir`` (``config.json`` + ``checkpoint.pt``), in eval mode, without data.

    The input and output sizes are read off the checkpoint: the first and the last matrix of the
    feed-forward stack are its input and output ``nn.Linear`` weights.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: {run_dir} is not a run folder")
    cfg = TrainConfig.from_dict(json.loads(cfg_path.read_text())).resolved()
    state = load_checkpoint(run_dir / "checkpoint.pt")
    matrices = [v for v in state["model"].values() if getattr(v, "dim", lambda: 0)() == 2]
    if not matrices:
        raise ValueError(f"{run_dir / 'checkpoint.pt'} holds no weight matrix: not a spikescan network checkpoint")
    n_in, n_out = matrices[0].shape[1], matrices[-1].shape[0]
    model = build_model(cfg, n_in, n_out).to(DTYPES[cfg.dtype])
    model.load_state_dict(state["model"])
    return model.eval(), cfg
