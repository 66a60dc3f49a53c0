"""The training loop: configuration as plain data, one function that trains and writes a run folder.

A run folder holds ``config.json`` (the exact :class:`TrainConfig`, with the data set's defaults
filled in), ``metrics.json`` and ``metrics.csv`` (one row per epoch), ``curves.png``,
``raster.png`` (the spikes of one test sample in every hidden layer, after training),
``final.json`` and ``checkpoint.pt`` (model, optimiser, scheduler and the RNG states of every
rank, written atomically after each epoch).  ``resume=True`` continues a run from its last
checkpoint and reproduces the uninterrupted run exactly (same seed, device and number of ranks);
it may train a run longer (more ``epochs``) or read its data from elsewhere, and refuses any other
change of the configuration (:data:`RESUMABLE_FIELDS`).

One process trains in a run folder at a time (:class:`~spikescan.train.rundir.RunFolder`), and a
run that fails before its first checkpoint removes what it wrote, so a corrected rerun starts
afresh.  A non-finite loss or weight stops the run with :class:`TrainingDivergedError`, keeping
the last good checkpoint.
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
from .rundir import RunFolder
from ..data.augment import Compose, RandomChannelShift, RandomScale
from ..data.collate import pad_collate
from ..data.events import EventBatch
from ..data.registry import DATASETS, build_datasets as _build_data, dataset_spec, supports_events
from ..ops.events import known_events
from .losses import READOUTS, readout_cross_entropy, readout_logits
from .models import BIAS_INITS, NEURONS, FeedForwardSNN, check_backend
from .plots import plot_spike_raster, plot_training_curves
from .recorder import record_spikes
from .regularizers import spike_rate_regularizer

OPTIMIZERS = ("adam", "adamw", "adamax")
SCHEDULES = ("none", "cosine", "step")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: fields ``resume`` may change: ``epochs`` (train longer), where the data is, and how to run it
RESUMABLE_FIELDS = ("epochs", "data_dir", "device", "threads", "eval_batch_size", "event_input")
_SEED_LIMIT = 2**64  # torch generators take seeds in [0, 2**64)


_ETA_BATCHES = 20  # batches timed before the run's duration is estimated


class TrainingDivergedError(RuntimeError):
    """The loss or a weight became NaN/Inf; the run folder keeps its last good checkpoint."""


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
    dtype: str = "float32"
    bias_init: str = "uniform"  # or "zero" (FastSNN): see spikescan.train.models.BIAS_INITS
    # "auto": data sets encodable once (TTFS/latency images, N-MNIST, SHD, digits) are kept and
    # batched as events, and the first layer runs event-driven; "off": dense [T, B, n_in] batches.
    event_input: str = "auto"
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
        """Raise ``ValueError`` / ``TypeError`` naming the first field that is out of range or of the wrong type."""
        check_choice(self.dataset, "dataset", tuple(DATASETS))
        check_choice(self.neuron, "neuron", NEURONS)
        check_choice(self.readout, "readout", READOUTS)
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_choice(self.schedule, "schedule", SCHEDULES)
        check_choice(self.dtype, "dtype", tuple(DTYPES))
        check_choice(self.event_input, "event_input", ("auto", "off"))
        check_choice(self.bias_init, "bias_init", BIAS_INITS)
        if not isinstance(self.backend, str):
            raise TypeError(f"backend must be a string, got {type(self.backend).__name__}")
        check_backend(self.neuron, self.backend)
        for name in ("epochs", "batch_size", "eval_batch_size", "num_steps", "max_batches", "threads"):
            _check_int(getattr(self, name), name, low=1, optional=name in ("num_steps", "max_batches", "threads"))
        _check_int(self.seed, "seed", low=0, high=_SEED_LIMIT - 1)
        if not isinstance(self.hidden, (list, tuple)) or not self.hidden:
            raise ValueError(f"hidden must be a non-empty list of layer sizes, got {self.hidden!r}")
        for h in self.hidden:
            _check_int(h, "hidden", low=1)
        _check_float(self.lr, "lr", low=0.0, low_inclusive=False)
        _check_float(self.weight_decay, "weight_decay", low=0.0)
        _check_float(self.reg_weight, "reg_weight", low=0.0)
        _check_float(self.dropout, "dropout", low=0.0, high=1.0, high_inclusive=False)
        _check_float(self.tau_mem, "tau_mem", low=0.0, low_inclusive=False)
        if self.tau_syn is not None:
            _check_float(self.tau_syn, "tau_syn", low=0.0, low_inclusive=False)
        if self.dt is not None:
            _check_float(self.dt, "dt", low=0.0, low_inclusive=False)
        for name in ("k_shift", "k_scale"):
            _check_float(getattr(self, name), name, low=0.0, high=1.0, high_inclusive=False)
        if self.theta_reg is not None:
            _check_float(self.theta_reg, "theta_reg", low=0.0, high=1.0)
        for name in ("neuron_kwargs", "readout_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a dict, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', got {type(self.device).__name__}")
        try:
            device = torch.device(self.device)
        except RuntimeError as e:
            raise ValueError(f"device {self.device!r} is not a torch device ({e})") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} was asked for, but CUDA is not available here")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def _check_int(v, name: str, *, low: int, high: int | None = None, optional: bool = False) -> None:
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {v!r}")
    if v < low or (high is not None and v > high):
        raise ValueError(f"{name} must be an int in [{low}, {'inf' if high is None else high}], got {v}")


def _check_float(v, name: str, *, low: float | None = None, high: float | None = None,
                 low_inclusive: bool = True, high_inclusive: bool = True) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {v!r}")
    too_low = low is not None and (v < low if low_inclusive else v <= low)
    too_high = high is not None and (v > high if high_inclusive else v >= high)
    if not math.isfinite(v) or too_low or too_high:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be a finite number in {'[' if low_inclusive else '('}{lo}, {hi}"
                         f"{']' if high_inclusive else ')'}, got {v!r}")


def config_differences(saved: dict[str, Any], cfg: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{field: (saved value, cfg value)}`` where a saved config dict differs from ``cfg``.

    A field an older config lacks counts at its default; ``out_dir`` and the informational
    ``preset`` are not compared.
    """
    want = dataclasses.asdict(cfg)
    default = dataclasses.asdict(TrainConfig())
    return {k: (saved.get(k, default[k]), want[k]) for k in want
            if k not in ("out_dir", "preset") and saved.get(k, default[k]) != want[k]}


def train_transform(cfg: TrainConfig):
    """The on-the-fly training augmentation of SPSN §IV-B (channel shift, then scale), or ``None``."""
    ts = []
    if cfg.k_shift > 0:
        ts.append(RandomChannelShift(cfg.k_shift))
    if cfg.k_scale > 0:
        ts.append(RandomScale(cfg.k_scale))
    return Compose(ts) if ts else None


def uses_events(cfg: TrainConfig) -> bool:
    """Whether ``cfg``'s data come as :class:`~spikescan.data.events.EncodedSpikes` (``event_input="auto"``
    and a data set / encoding encodable once, without a training transform)."""
    return cfg.event_input == "auto" and supports_events(cfg.dataset, cfg.encoding, train_transform(cfg))


def build_datasets(cfg: TrainConfig, *, test_only: bool = False):
    """``(train, test, n_in, n_classes)`` for ``cfg.dataset`` (see :mod:`spikescan.data.registry`)."""
    return _build_data(cfg.dataset, cfg.data_dir, num_steps=cfg.num_steps, dt=cfg.dt, encoding=cfg.encoding,
                       seed=cfg.seed, train_transform=train_transform(cfg), test_only=test_only,
                       events=uses_events(cfg))


def _collate(batch):
    if isinstance(batch, EventBatch):  # built whole by EncodedSpikes.__getitems__
        return batch.x, batch.y
    x, y, _lengths = pad_collate(batch)  # left padding: every sample ends at the last step
    return x, y


def build_model(cfg: TrainConfig, n_in: int, n_out: int) -> torch.nn.Module:
    return FeedForwardSNN(n_in, cfg.hidden, n_out, cfg.neuron, tau_syn=cfg.tau_syn, tau_mem=cfg.tau_mem,
                          dt=cfg.dt, backend=cfg.backend, dropout=cfg.dropout, neuron_kwargs=cfg.neuron_kwargs,
                          num_steps=cfg.num_steps, readout_kwargs=cfg.readout_kwargs,
                          readout_layer="max-membrane" if cfg.readout == "max-membrane" else "li",
                          bias_init=cfg.bias_init)


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
              reduce: bool = False, on_first_batches=None):
    """One pass over ``loader``; trains when ``optimizer`` is given.  Returns mean loss/acc/spike rates
    (over every rank's samples with ``reduce=True``, for a data-parallel epoch).

    A training step whose loss (cross-entropy plus regulariser) is not finite on any rank raises
    :class:`TrainingDivergedError` before the optimiser applies it.  ``on_first_batches(k, n,
    seconds, first_seconds)`` is called once, for a time estimate, when ``k`` batches after the
    first of the epoch's ``n`` have run in ``seconds`` (the first, which pays one-time costs such
    as numba's compilation, took ``first_seconds``).  Progress bars (``progress``) are drawn only on a terminal.
    """
    training = optimizer is not None
    model.train(training)
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]
    totals = {"loss": 0.0, "correct": 0, "n": 0, "spikes": 0.0, "neuron_steps": 0.0, "hidden_neurons": 0}
    iterator = loader
    if progress:
        from tqdm import tqdm

        iterator = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=None)  # None: not in a log file
    n_batches = len(loader) if hasattr(loader, "__len__") else None
    if n_batches is not None and cfg.max_batches is not None:
        n_batches = min(n_batches, cfg.max_batches)
    t_start = t_first = time.perf_counter()
    with torch.set_grad_enabled(training):
        for k, (x, y) in enumerate(iterator):
            if cfg.max_batches is not None and k >= cfg.max_batches:
                break
            if k == 1:  # the first batch pays one-time costs (kernel compilation): timed apart
                t_first = time.perf_counter()
            if on_first_batches is not None and n_batches and k == min(_ETA_BATCHES + 1, n_batches - 1) and k > 1:
                on_first_batches(k - 1, n_batches, time.perf_counter() - t_first, t_first - t_start)
            x, y = x.to(device, dtype), y.to(device)
            with record_spikes(model) as spikes:
                u = model(x)
            loss = readout_cross_entropy(u, y, cfg.readout)
            total = loss
            if cfg.theta_reg is not None and spikes:
                total = loss + cfg.reg_weight * spike_rate_regularizer(spikes, cfg.theta_reg)
            if training:
                finite = bool(torch.isfinite(total.detach()))
                if reduce:
                    from ..distributed.ddp import all_true

                    finite = all_true(finite)  # every rank stops at the same step
                if not finite:
                    raise TrainingDivergedError(
                        f"{desc or 'training'}, batch {k + 1}: the loss is not finite (cross-entropy "
                        f"{float(loss.detach())}, total {float(total.detach())} on this rank): training diverged")
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
            b = y.shape[0]
            totals["loss"] += float(loss.detach()) * b
            totals["correct"] += int((readout_logits(u.detach(), cfg.readout).argmax(1) == y).sum())
            totals["n"] += b
            for s in spikes:
                totals["spikes"] += _spike_count(s)
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


def _spike_count(s: torch.Tensor) -> float:
    """The number of spikes in ``s``: from the events its layer recorded (single-spike layers) when
    it did, which saves a pass over ``[T, B, N]``, else the sum."""
    events = known_events(s)
    if events is not None and events.values is None:
        return float(events.num_events)
    return float(s.detach().sum())


def _new_run_dir(cfg: TrainConfig) -> Path:
    if cfg.out_dir:
        return Path(cfg.out_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{cfg.dataset}-{cfg.neuron}-s{cfg.seed}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def _rng_state(loader_gen: torch.Generator, device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "loader": loader_gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, loader_gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _start_config(cfg: TrainConfig, run_dir: Path, resume: bool, world_size: int):
    """``(cfg, checkpoint state or None)`` to start from; raises when the folder's run and the request disagree."""
    cfg_path, ckpt_path = run_dir / "config.json", run_dir / "checkpoint.pt"
    if not resume:
        if cfg_path.exists():
            never = "" if ckpt_path.exists() else " that never finished an epoch"
            raise FileExistsError(f"{run_dir} already holds a run{never}; pass --resume to continue it or "
                                  "choose another --out")
        return cfg, None
    if not cfg_path.is_file():
        raise FileNotFoundError(f"cannot resume: {cfg_path} does not exist")
    try:
        saved = json.loads(cfg_path.read_text())
        TrainConfig.from_dict(saved)
    except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"cannot resume: {cfg_path} is not a spikescan run configuration ({e})") from None
    fixed = {k: v for k, v in config_differences(saved, cfg).items() if k not in RESUMABLE_FIELDS}
    if fixed:
        changes = "; ".join(f"{k}: the run has {a!r}, asked {b!r}" for k, (a, b) in sorted(fixed.items()))
        raise ValueError(f"cannot resume {run_dir} with a changed configuration ({changes}). On --resume only "
                         f"{', '.join(RESUMABLE_FIELDS)} may change; start a new run (another --out) for the rest")
    cfg.preset = saved.get("preset")
    state = load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if state is None:
        return cfg, None
    done = int(state["epoch"])
    trained_on = state.get("world_size")
    if trained_on is not None and int(trained_on) != world_size:
        raise ValueError(f"{run_dir} was trained on {trained_on} rank(s); resume it on {trained_on} for an exact "
                         f"continuation (this launch has {world_size})")
    if cfg.epochs < done:
        raise ValueError(f"{run_dir} has already trained {done} epochs: epochs must be >= {done}, got {cfg.epochs}")
    if cfg.epochs == done and (run_dir / "final.json").exists():
        raise ValueError(f"{run_dir} already finished its {done} epochs: pass --epochs N (N > {done}) to train "
                         "it longer")
    return cfg, state


def _retarget_schedule(sched, epochs: int) -> str:
    """Stretch a resumed cosine/step schedule to ``epochs``, continuing from its current epoch; returns a note."""
    e = sched.last_epoch
    if isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR):
        sched.T_max = epochs
        lrs = [sched.eta_min + (b - sched.eta_min) * (1 + math.cos(math.pi * e / epochs)) / 2 for b in sched.base_lrs]
    else:
        sched.step_size = max(1, epochs // 3)
        lrs = [b * sched.gamma ** (e // sched.step_size) for b in sched.base_lrs]
    for group, lr in zip(sched.optimizer.param_groups, lrs):
        group["lr"] = lr
    sched._last_lr = lrs  # what get_last_lr() reports until the next step
    return f"the {type(sched).__name__} schedule now spans {epochs} epochs (lr {lrs[0]:.3g} from epoch {e + 1})"


def _check_weights(model: torch.nn.Module, epoch: int) -> None:
    params = [p.detach() for p in model.parameters()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
        raise TrainingDivergedError(f"epoch {epoch}: non-finite weights in {', '.join(bad)}: training diverged")


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True, log=print,
          command: str | None = None) -> dict:
    """Train ``cfg`` and return the final metrics; writes the run folder as the module doc says.

    Raises ``FileExistsError`` rather than overwrite a finished or started run in ``cfg.out_dir``
    unless ``resume`` is set, or when another process trains in that folder.  With ``resume``,
    ``cfg`` must equal the run's ``config.json`` except in :data:`RESUMABLE_FIELDS` (a larger
    ``epochs`` trains longer; a cosine or step schedule is stretched to the new length from the
    epoch reached); :func:`resume_run` builds such a ``cfg`` from the folder.  ``command`` (the
    command line that started or resumed the run) is appended to ``command.txt``.

    With ``cfg.distributed`` under ``torchrun --nproc-per-node W``: every rank joins the process
    group (:func:`spikescan.distributed.init_from_env`), trains a DistributedDataParallel copy on
    its ``batch_size / W`` share of each global batch (DistributedSampler, ``drop_last``), and
    the epoch metrics are summed over the ranks; only rank 0 writes the run folder.  DDP averages
    the gradients, so a step equals a single-process step on the global batch (up to float
    reassociation).  ``out_dir`` is required (every rank must agree on it).  Ranks draw distinct
    noise for stochastic neurons, and every rank's RNG state is in the checkpoint, so a resumed
    data-parallel run equals the uninterrupted one on the same number of ranks.
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
    rank, world = (0, 1) if env is None else (env.rank, env.world_size)
    main = rank == 0
    if not main:
        log = _quiet
        progress = False
    run_dir = _new_run_dir(cfg)
    cfg.out_dir = str(run_dir)
    folder = RunFolder(run_dir) if main else None
    state = error = None
    if main:
        try:
            folder.claim()
            cfg, state = _start_config(cfg, run_dir, resume, world)
        except Exception as e:
            error = e
            folder.release()
    if env is not None:  # rank 0's verdict and configuration hold for every rank
        error, cfg, resumed = ddp.broadcast_object((error, cfg, state is not None))
        if not main and resumed:
            state = load_checkpoint(run_dir / "checkpoint.pt")
    if error is not None:
        raise error
    try:
        if main and command:
            _append_command(run_dir / "command.txt", command, folder if state is None else None)
        return _train_in_folder(cfg, run_dir, folder, state, env, progress, log)
    except BaseException:
        if main:
            folder.discard_unless_started(run_dir / "checkpoint.pt")
        raise
    finally:
        if main:
            folder.release()


def _append_command(path: Path, command: str, folder: RunFolder | None) -> None:
    """One line per start or resume: the time, the command, and (as a comment, so the command
    stays pasteable) the spikescan commit that ran it."""
    from .._host import code_commit

    existed = path.exists()
    previous = path.read_text() if existed else ""
    write_text(path, previous + f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {command}  # spikescan {code_commit()}\n")
    if folder is not None and not existed:
        folder.wrote(path)


def resume_run(run_dir, *, progress: bool = True, log=print, command: str | None = None, **changes) -> dict:
    """Continue the run in ``run_dir`` from its checkpoint; ``changes`` may set :data:`RESUMABLE_FIELDS`
    (e.g. ``epochs=50`` to train longer).  Any other field raises, as in :func:`train`."""
    cfg_path = Path(run_dir) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"cannot resume: {cfg_path} does not exist")
    try:
        saved = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise ValueError(f"cannot resume: {cfg_path} is not valid JSON ({e})") from None
    cfg = TrainConfig.from_dict({**saved, **changes, "out_dir": str(run_dir)})
    return train(cfg, resume=True, progress=progress, log=log, command=command)


def _train_in_folder(cfg: TrainConfig, run_dir: Path, folder: RunFolder | None, state: dict | None, env,
                     progress: bool, log) -> dict:
    """The body of :func:`train` once the folder is ours: build, restore, train, write."""
    rank, world = (0, 1) if env is None else (env.rank, env.world_size)
    main = rank == 0
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    train_set, test_set, n_in, n_out = build_datasets(cfg)
    model = build_model(cfg, n_in, n_out).to(device=device, dtype=DTYPES[cfg.dtype])
    opt = _optimizer(cfg, model.parameters())
    sched = _scheduler(cfg, opt)
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    sampler = None
    if cfg.distributed:
        from ..distributed import ddp

        sampler = ddp.make_sampler(train_set, shuffle=True, seed=cfg.seed, drop_last=True)
        train_loader = DataLoader(train_set, batch_size=cfg.batch_size // world, sampler=sampler,
                                  collate_fn=_collate)
    else:
        train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=loader_gen,
                                  collate_fn=_collate)
    test_loader = DataLoader(test_set, batch_size=cfg.eval_batch_size, shuffle=False, collate_fn=_collate)

    history: list[dict] = []
    start_epoch = 0
    elapsed_before = 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        history = json.loads(state["history"])
        start_epoch = int(state["epoch"])
        elapsed_before = float(state["train_seconds"])
        ranks_rng = state.get("rng_ranks")
        _set_rng_state(ranks_rng[rank] if ranks_rng else state["rng"], loader_gen, device)
        if ranks_rng is None and rank > 0:  # a checkpoint from before per-rank states: the old per-epoch stream
            torch.manual_seed((cfg.seed + 7919 * rank + 104729 * start_epoch) % _SEED_LIMIT)
        log(f"resuming {run_dir} at epoch {start_epoch + 1}/{cfg.epochs}")
        planned = state.get("schedule_epochs", getattr(sched, "T_max", cfg.epochs))
        if sched is not None and planned != cfg.epochs:
            log(_retarget_schedule(sched, cfg.epochs))
    if main:
        write_json(run_dir / "config.json", dataclasses.asdict(cfg))
        if state is None and folder is not None:
            folder.wrote(run_dir / "config.json")
    bare = model  # what checkpoints hold: loads without DDP
    if env is not None and env.distributed:
        model = ddp.wrap_model(model)  # broadcasts rank 0's parameters
        if rank > 0 and state is None:
            # Stochastic neurons must not draw the same noise on every rank; rank 0 keeps the
            # single-process stream.  Each rank's state is checkpointed, so a resume continues it.
            torch.manual_seed((cfg.seed + 7919 * rank) % _SEED_LIMIT)

    n_params = sum(p.numel() for p in model.parameters())
    log(f"run {run_dir}: {cfg.neuron} {cfg.hidden} on {cfg.dataset} ({len(train_set)} train / "
        f"{len(test_set)} test, T={cfg.num_steps}), {n_params} parameters")
    t0 = time.perf_counter()

    def estimate(k, n, seconds, first_seconds):
        per_batch = seconds / k
        per_epoch = first_seconds + per_batch * (n - 1)
        total = per_epoch + per_batch * n * (cfg.epochs - start_epoch - 1)  # later epochs pay no compilation
        log(f"first batch {first_seconds:.1f} s (one-time costs such as kernel compilation), then "
            f"{1e3 * per_batch:.0f} ms per batch -> about {_duration(per_epoch)} of training for this epoch, "
            f"{_duration(total)} for {cfg.epochs - start_epoch} epochs (plus evaluation)")

    for epoch in range(start_epoch, cfg.epochs):
        e0 = time.perf_counter()
        if sampler is not None:
            sampler.set_epoch(epoch)
        tr = run_epoch(model, train_loader, cfg, opt, progress, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       reduce=sampler is not None, on_first_batches=estimate if epoch == start_epoch else None)
        epoch_seconds = time.perf_counter() - e0
        te = run_epoch(model, test_loader, cfg)
        if sched is not None:
            sched.step()
        _check_weights(bare, epoch + 1)  # never checkpoint a diverged network
        row = {"epoch": epoch + 1, "epoch_seconds": epoch_seconds, "lr": opt.param_groups[0]["lr"]}
        row.update({f"train_{k}": v for k, v in tr.items()})
        row.update({f"test_{k}": v for k, v in te.items()})
        history.append(row)
        log(f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {tr['loss']:.4f}  train {100 * tr['acc']:.2f}%  "
            f"test {100 * te['acc']:.2f}%  spikes/neuron/step {te['spike_rate']:.3f}  {epoch_seconds:.1f}s")
        train_seconds = elapsed_before + time.perf_counter() - t0
        rng = _rng_state(loader_gen, device)
        rng_ranks = ddp.gather_objects(rng) if env is not None else [rng]
        if not main:
            continue
        save_checkpoint(run_dir / "checkpoint.pt", {
            "model": bare.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "rng": rng, "rng_ranks": rng_ranks, "world_size": world, "epoch": epoch + 1,
            "schedule_epochs": cfg.epochs,
            "history": json.dumps(history), "train_seconds": train_seconds,
        })
        _write_metrics(run_dir, history)
    final = dict(history[-1])
    final["wall_seconds"] = elapsed_before + time.perf_counter() - t0
    # NeuroBench-style metrics (train/metrics.py) of the trained network, over one test pass
    final["neurobench"] = measure_workload(bare, test_loader, cfg)  # every rank evaluates the whole test set
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


def measure_workload(model: torch.nn.Module, loader, cfg: TrainConfig) -> dict:
    """:func:`spikescan.train.metrics.summarise` of ``model`` over one evaluation pass of ``loader``:
    parameters, footprint, connection and activation sparsity, spikes and synaptic operations
    per sample."""
    from .metrics import WorkloadMeter, summarise

    meter = WorkloadMeter(model)
    model.eval()
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]
    with torch.no_grad():
        for k, (x, y) in enumerate(loader):
            if cfg.max_batches is not None and k >= cfg.max_batches:
                break
            with meter.batch(samples=y.shape[0]):
                model(x.to(device, dtype))
    return summarise(model, meter.counts())


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _quiet(*_args, **_kwargs) -> None:
    """The log of ranks other than 0."""


def write_raster(model, dataset, cfg: TrainConfig, path, index: int = 0) -> None:
    """Spike raster of test sample ``index``: its input and every hidden layer's spikes, into ``path``."""
    x, y = dataset[index]
    model.eval()
    with torch.no_grad(), record_spikes(model) as spikes:
        out = model(x.unsqueeze(1).to(cfg.device, DTYPES[cfg.dtype]))
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
