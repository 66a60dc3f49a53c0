"""The training loop: configuration as plain data, one function that trains and writes a run folder.

A run folder holds ``config.json`` (the exact :class:`TrainConfig`, with the data set's defaults
filled in), ``metrics.json`` and ``metrics.csv`` (one row per epoch), ``curves.png``,
``raster.png`` (the spikes of one test sample in every hidden layer, after training),
``final.json`` and ``checkpoint.pt`` (model, optimiser, scheduler and every RNG state, written
atomically after each epoch).  ``resume=True`` continues a
run from its last checkpoint and reproduces the uninterrupted run exactly (same seed, same
device).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .._checks import check_choice
from .checkpoint import load_checkpoint, save_checkpoint, write_json, write_text
from ..data.augment import Compose, RandomChannelShift, RandomScale
from ..data.collate import pad_collate
from ..data.registry import DATASETS, build_datasets as _build_data, dataset_spec
from .losses import READOUTS, readout_cross_entropy, readout_logits
from .models import NEURONS, FeedForwardSNN
from .plots import plot_spike_raster, plot_training_curves
from .recorder import record_spikes
from .regularizers import spike_rate_regularizer

OPTIMIZERS = ("adam", "adamw", "adamax")
SCHEDULES = ("none", "cosine", "step")


@dataclass
class TrainConfig:
    """Everything that defines a run.  Saved verbatim as ``config.json``.

    The defaults are the main job (``spikescan train`` with no arguments): SPSN-SB, 3 x 128
    hidden, on the embedded digits rate-encoded over 64 steps; about 96 % test accuracy.
    ``encoding``, ``num_steps`` and ``dt`` left at ``None`` take the data set's defaults
    (:mod:`spikescan.data.registry`; digits: rate, 64, 1 ms) when the run starts.
    ``readout="max-membrane"`` ends the network in FastSNN's max-membrane readout instead of the
    LI membrane reduced over time.  ``k_shift`` / ``k_scale`` > 0 turn on the SPSN §IV-B
    augmentation of training samples.  ``max_batches`` caps the batches per epoch (train and
    test; for smoke tests).  ``neuron_kwargs`` go to the neuron's constructor (e.g. a PSU's
    ``threshold`` or ``leak``), ``readout_kwargs`` to the readout layer's.  ``distributed`` trains data-parallel under
    ``torchrun`` (see :func:`train`).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    encoding: str | None = None
    num_steps: int | None = None
    neuron: str = "spsn-sb"
    hidden: list[int] = field(default_factory=lambda: [128, 128, 128])
    # 5 ms (not the SHD papers' 20 ms): a digit lasts only 64 steps of 1 ms, and shorter leaks let
    # the stochastic layers pass it on within that window (tuned on the digits main job).
    tau_syn: float | None = 0.005
    tau_mem: float = 0.005
    dt: float | None = None
    neuron_kwargs: dict = field(default_factory=dict)
    readout_kwargs: dict = field(default_factory=dict)
    readout: str = "mean"
    dropout: float = 0.0
    backend: str = "auto"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    schedule: str = "cosine"
    theta_reg: float | None = None
    reg_weight: float = 1.0
    k_shift: float = 0.0
    k_scale: float = 0.0
    max_batches: int | None = None
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "cpu"
    # torch intra-op threads for the run (None: leave torch's setting).  1 by default: per-step
    # tensors of these networks are small, and on a 2-core CPU a training step measured 21 ms
    # with 1 thread vs 490-660 ms with 2 (threads spinning against each other under load).
    threads: int | None = 1
    out_dir: str | None = None
    preset: str | None = None  # informational: the preset this run started from
    # Data-parallel: DistributedDataParallel over the ranks of a torchrun launch (gloo on CPU,
    # NCCL on GPU); batch_size is the GLOBAL batch, split evenly over the ranks.  Also valid in a
    # single process, where it only switches to the DistributedSampler's shuffling: the
    # single-process reference of a data-parallel run.
    distributed: bool = False

    def resolved(self) -> "TrainConfig":
        """A copy with ``encoding`` / ``num_steps`` / ``dt`` filled in from the data set's defaults."""
        spec = dataset_spec(self.dataset)
        d = dataclasses.asdict(self)
        for name in ("encoding", "num_steps", "dt"):
            if d[name] is None:
                d[name] = getattr(spec, name)
        return TrainConfig(**d)

    def validate(self) -> None:
        check_choice(self.dataset, "dataset", tuple(DATASETS))
        check_choice(self.neuron, "neuron", NEURONS)
        check_choice(self.readout, "readout", READOUTS)
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_choice(self.schedule, "schedule", SCHEDULES)
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        for name in ("epochs", "batch_size", "num_steps", "max_batches", "eval_batch_size"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if self.dt is not None and not self.dt > 0:
            raise ValueError(f"dt must be > 0, got {self.dt}")
        for name in ("k_shift", "k_scale"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("neuron_kwargs", "readout_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a dict, got {type(getattr(self, name)).__name__}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.theta_reg is not None and not 0.0 <= self.theta_reg <= 1.0:
            raise ValueError(f"theta_reg must be in [0, 1], got {self.theta_reg}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def train_transform(cfg: TrainConfig):
    """The on-the-fly training augmentation of SPSN §IV-B (channel shift, then scale), or ``None``."""
    ts = []
    if cfg.k_shift > 0:
        ts.append(RandomChannelShift(cfg.k_shift))
    if cfg.k_scale > 0:
        ts.append(RandomScale(cfg.k_scale))
    return Compose(ts) if ts else None


def build_datasets(cfg: TrainConfig):
    """``(train, test, n_in, n_classes)`` for ``cfg.dataset`` (see :mod:`spikescan.data.registry`)."""
    return _build_data(cfg.dataset, cfg.data_dir, num_steps=cfg.num_steps, dt=cfg.dt, encoding=cfg.encoding,
                       seed=cfg.seed, train_transform=train_transform(cfg))


def _collate(batch):
    x, y, _lengths = pad_collate(batch)  # left padding: every sample ends at the last step
    return x, y


def build_model(cfg: TrainConfig, n_in: int, n_out: int) -> torch.nn.Module:
    return FeedForwardSNN(n_in, cfg.hidden, n_out, cfg.neuron, tau_syn=cfg.tau_syn, tau_mem=cfg.tau_mem,
                          dt=cfg.dt, backend=cfg.backend, dropout=cfg.dropout, neuron_kwargs=cfg.neuron_kwargs,
                          num_steps=cfg.num_steps, readout_kwargs=cfg.readout_kwargs,
                          readout_layer="max-membrane" if cfg.readout == "max-membrane" else "li")


def _optimizer(cfg: TrainConfig, params):
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adamax": torch.optim.Adamax}[cfg.optimizer]
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(cfg: TrainConfig, opt):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.epochs // 3), gamma=0.1)
    return None


def run_epoch(model, loader, cfg: TrainConfig, optimizer=None, progress: bool = False, desc: str = "",
              reduce: bool = False):
    """One pass over ``loader``; trains when ``optimizer`` is given.  Returns mean loss/acc/spike rates
    (over every rank's samples with ``reduce=True``, for a data-parallel epoch)."""
    training = optimizer is not None
    model.train(training)
    device = torch.device(cfg.device)
    totals = {"loss": 0.0, "correct": 0, "n": 0, "spikes": 0.0, "neuron_steps": 0.0, "hidden_neurons": 0}
    iterator = loader
    if progress:
        from tqdm import tqdm

        iterator = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
    with torch.set_grad_enabled(training):
        for k, (x, y) in enumerate(iterator):
            if cfg.max_batches is not None and k >= cfg.max_batches:
                break
            x, y = x.to(device), y.to(device)
            with record_spikes(model) as spikes:
                u = model(x)
            loss = readout_cross_entropy(u, y, cfg.readout)
            total = loss
            if cfg.theta_reg is not None and spikes:
                total = loss + cfg.reg_weight * spike_rate_regularizer(spikes, cfg.theta_reg)
            if training:
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
            b = y.shape[0]
            totals["loss"] += float(loss.detach()) * b
            totals["correct"] += int((readout_logits(u.detach(), cfg.readout).argmax(1) == y).sum())
            totals["n"] += b
            for s in spikes:
                totals["spikes"] += float(s.detach().sum())
                totals["neuron_steps"] += s[0, 0].numel() * s.shape[0] * s.shape[1]
            totals["hidden_neurons"] = sum(s[0, 0].numel() for s in spikes)
            if progress:
                iterator.set_postfix(loss=f"{totals['loss'] / totals['n']:.3f}",
                                     acc=f"{totals['correct'] / totals['n']:.3f}")
    if reduce:
        from ..distributed.ddp import all_reduce_metrics

        hidden = totals.pop("hidden_neurons")
        totals = all_reduce_metrics(totals, op="sum")
        totals["hidden_neurons"] = hidden
    rate = totals["spikes"] / totals["neuron_steps"] if totals["neuron_steps"] else 0.0
    return {
        "loss": totals["loss"] / max(totals["n"], 1),
        "acc": totals["correct"] / max(totals["n"], 1),
        # SPSN §IV: network spikes per ms for one sample = (per-neuron rate per step) * N / dt[ms]
        "spike_rate": rate,
        "spikes_per_ms": rate * totals["hidden_neurons"] / (cfg.dt * 1e3),
    }


def _new_run_dir(cfg: TrainConfig) -> Path:
    if cfg.out_dir:
        return Path(cfg.out_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{cfg.dataset}-{cfg.neuron}-s{cfg.seed}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def _rng_state(loader_gen: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "loader": loader_gen.get_state()}


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True, log=print) -> dict:
    """Train ``cfg`` and return the final metrics; writes the run folder as the module doc says.

    Raises ``FileExistsError`` rather than overwrite a finished or started run in ``cfg.out_dir``
    unless ``resume`` is set.

    With ``cfg.distributed`` under ``torchrun --nproc-per-node W``: every rank joins the process
    group (:func:`spikescan.distributed.init_from_env`), trains a DistributedDataParallel copy on
    its ``batch_size / W`` share of each global batch (DistributedSampler, ``drop_last``), and
    the epoch metrics are summed over the ranks; only rank 0 writes the run folder.  DDP averages
    the gradients, so a step equals a single-process step on the global batch.  ``out_dir`` is
    required (every rank must agree on it).
    """
    cfg.validate()
    cfg = cfg.resolved()
    env = None
    if cfg.distributed:
        from ..distributed import ddp

        if cfg.out_dir is None:
            raise ValueError("distributed training needs out_dir (--out): every rank must use the same run folder")
        env = ddp.init_from_env(device=cfg.device)
        if cfg.batch_size % env.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} (the global batch) must be divisible by the "
                             f"number of ranks {env.world_size}")
    main = env is None or env.rank == 0
    if not main:
        log = _quiet
        progress = False
    run_dir = _new_run_dir(cfg)
    ckpt_path = run_dir / "checkpoint.pt"
    if resume:
        if not (run_dir / "config.json").is_file():
            raise FileNotFoundError(f"cannot resume: {run_dir / 'config.json'} does not exist")
        saved = json.loads((run_dir / "config.json").read_text())
        cfg = TrainConfig.from_dict(saved)
        cfg.out_dir = str(run_dir)
    elif (run_dir / "config.json").exists() and main:
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    cfg.out_dir = str(run_dir)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", dataclasses.asdict(cfg))

    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)
    train_set, test_set, n_in, n_out = build_datasets(cfg)
    model = build_model(cfg, n_in, n_out).to(cfg.device)
    opt = _optimizer(cfg, model.parameters())
    sched = _scheduler(cfg, opt)
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    sampler = None
    if cfg.distributed:
        sampler = ddp.make_sampler(train_set, shuffle=True, seed=cfg.seed, drop_last=True)
        train_loader = DataLoader(train_set, batch_size=cfg.batch_size // env.world_size, sampler=sampler,
                                  collate_fn=_collate)
    else:
        train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=loader_gen,
                                  collate_fn=_collate)
    test_loader = DataLoader(test_set, batch_size=cfg.eval_batch_size, shuffle=False, collate_fn=_collate)

    history: list[dict] = []
    start_epoch = 0
    elapsed_before = 0.0
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        loader_gen.set_state(state["rng"]["loader"])
        history = json.loads(state["history"])
        start_epoch = int(state["epoch"])
        elapsed_before = float(state["train_seconds"])
        log(f"resuming {run_dir} at epoch {start_epoch + 1}/{cfg.epochs}")
    bare = model  # what checkpoints hold: loads without DDP
    if env is not None and env.distributed:
        model = ddp.wrap_model(model)  # broadcasts rank 0's parameters
        # Stochastic neurons must not draw the same noise on every rank (rank 0 keeps the
        # single-process stream, so its resume stays exact; other ranks restart a stream per epoch).
        if env.rank > 0:
            torch.manual_seed(cfg.seed + 7919 * env.rank + 104729 * start_epoch)

    n_params = sum(p.numel() for p in model.parameters())
    log(f"run {run_dir}: {cfg.neuron} {cfg.hidden} on {cfg.dataset} ({len(train_set)} train / "
        f"{len(test_set)} test, T={cfg.num_steps}), {n_params} parameters")
    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        e0 = time.perf_counter()
        if sampler is not None:
            sampler.set_epoch(epoch)
        tr = run_epoch(model, train_loader, cfg, opt, progress, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       reduce=sampler is not None)
        epoch_seconds = time.perf_counter() - e0
        te = run_epoch(model, test_loader, cfg)
        if sched is not None:
            sched.step()
        row = {"epoch": epoch + 1, "epoch_seconds": epoch_seconds, "lr": opt.param_groups[0]["lr"]}
        row.update({f"train_{k}": v for k, v in tr.items()})
        row.update({f"test_{k}": v for k, v in te.items()})
        history.append(row)
        log(f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {tr['loss']:.4f}  train {100 * tr['acc']:.2f}%  "
            f"test {100 * te['acc']:.2f}%  spikes/neuron/step {te['spike_rate']:.3f}  {epoch_seconds:.1f}s")
        train_seconds = elapsed_before + time.perf_counter() - t0
        if not main:
            continue
        save_checkpoint(ckpt_path, {
            "model": bare.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "rng": _rng_state(loader_gen), "epoch": epoch + 1,
            "history": json.dumps(history), "train_seconds": train_seconds,
        })
        _write_metrics(run_dir, history)
    final = dict(history[-1]) if history else {}
    final["wall_seconds"] = elapsed_before + time.perf_counter() - t0
    final["run_dir"] = str(run_dir)
    if env is not None and env.distributed:
        final["world_size"] = env.world_size
        ddp.barrier()
    if not main:
        return final
    write_json(run_dir / "final.json", final)
    plot_training_curves(history, run_dir / "curves.png", title=f"{cfg.neuron} on {cfg.dataset}")
    write_raster(bare, test_set, cfg, run_dir / "raster.png")
    log(f"test accuracy {100 * final['test_acc']:.2f}%  wall time {final['wall_seconds']:.1f}s  "
        f"mean spike rate {final['test_spike_rate']:.3f} spikes/neuron/step "
        f"({final['test_spikes_per_ms']:.1f} spikes/ms)  -> {run_dir}")
    return final


def _quiet(*_args, **_kwargs) -> None:
    """The log of ranks other than 0."""


def write_raster(model, dataset, cfg: TrainConfig, path, index: int = 0) -> None:
    """Spike raster of test sample ``index``: its input and every hidden layer's spikes, into ``path``."""
    x, y = dataset[index]
    model.eval()
    with torch.no_grad(), record_spikes(model) as spikes:
        out = model(x.unsqueeze(1).to(cfg.device))
    pred = int(readout_logits(out, cfg.readout).argmax(1)[0])
    plot_spike_raster(x, [s[:, 0] for s in spikes], path, dt_ms=cfg.dt * 1e3,
                      title=f"{cfg.neuron} on {cfg.dataset}: test sample {index} (label {y}, predicted {pred})")


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    write_json(run_dir / "metrics.json", history)
    keys = list(history[0])
    lines = [",".join(keys)] + [",".join(_fmt(r[k]) for k in keys) for r in history]
    write_text(run_dir / "metrics.csv", "\n".join(lines) + "\n")


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "nan"
    return str(v)
