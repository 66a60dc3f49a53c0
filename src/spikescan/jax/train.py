"""Training on the embedded digits with the JAX modules: the torch main job's network and data, in Flax NNX.

``spikescan train --framework jax`` (or ``examples/jax_digits.py``) trains
``[Linear -> neuron] x 3 -> Linear -> LI`` on scikit-learn's 8x8 digits, rate-coded over 64
steps with the torch main job's fixed seed and split (:func:`spikescan.data.digits.digits_datasets`,
so both frameworks see the same spikes), with the mean-over-time cross-entropy (SPSN eq. 20),
Adam and a cosine schedule stepped per epoch, like :mod:`spikescan.train.loop`.  It writes
``config.json``, ``metrics.json`` / ``metrics.csv`` (one row per epoch) and ``final.json`` into
``out_dir`` and, with ``nir=True``, the trained network as ``network.nir`` (SPSN layers as their
deterministic firing).  No checkpoints: a run is short and is rerun rather than resumed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..defaults import SPSN_LIF_BASELINE
from . import nn as jnn

NEURONS = ("spsn-sb", "spsn-gs", "lif", "plif")
#: the ``spikescan train`` options the JAX trainer takes (the others are refused by name)
CLI_FIELDS = ("neuron", "hidden", "tau_syn", "tau_mem", "encoding", "num_steps", "epochs", "batch_size", "lr",
              "seed", "max_batches", "backend", "dataset")


@dataclass
class JaxTrainConfig:
    """The torch main job's settings (:class:`spikescan.train.TrainConfig` defaults)."""

    neuron: str = "spsn-sb"
    hidden: list[int] = field(default_factory=lambda: [128, 128, 128])
    tau_syn: float | None = 0.005
    tau_mem: float = 0.005
    dt: float = 1e-3
    encoding: str = "rate"
    num_steps: int = 64
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    max_batches: int | None = None
    backend: str = "auto"
    out_dir: str | None = None
    nir: bool = False

    def check(self) -> None:
        if self.neuron not in NEURONS:
            raise ValueError(f"neuron must be one of {list(NEURONS)} for the JAX trainer, got {self.neuron!r}")
        for name in ("epochs", "batch_size", "num_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not self.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty list of positive ints, got {self.hidden!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.max_batches is not None and (not isinstance(self.max_batches, int) or self.max_batches < 1):
            raise ValueError(f"max_batches must be None or a positive int, got {self.max_batches!r}")


def build_model(cfg: JaxTrainConfig, n_in: int, n_out: int, rngs: nnx.Rngs) -> jnn.SNN:
    """``[Linear -> neuron] x len(hidden) -> Linear -> LI`` (the torch side's ``FeedForwardSNN``)."""
    layers, width = [], n_in
    for h in cfg.hidden:
        layers.append(nnx.Linear(width, h, rngs=rngs))
        if cfg.neuron.startswith("spsn"):
            layers.append(jnn.SPSN(h, cfg.tau_syn, cfg.tau_mem, cfg.dt, firing=cfg.neuron[-2:],
                                   backend=cfg.backend, rngs=rngs))
        else:
            cls = jnn.LIF if cfg.neuron == "lif" else jnn.PLIF
            # the torch training command's LIF (train.models.TRAIN_NEURON_SETTINGS), not the library defaults
            layers.append(cls(h, cfg.tau_syn, cfg.tau_mem, cfg.dt, **SPSN_LIF_BASELINE))
        width = h
    layers += [nnx.Linear(width, n_out, rngs=rngs), jnn.LI(n_out, 0.02, 0.02, cfg.dt, input_scale="one_minus_decay")]
    return jnn.SNN(*layers)


def load_digits(cfg: JaxTrainConfig):
    """``(x_train [T, N, 64], y_train, x_test, y_test)`` as numpy arrays, the torch main job's encoding."""
    from ..data.digits import digits_datasets

    train, test = digits_datasets(cfg.encoding, cfg.num_steps, seed=cfg.seed)
    return train.x.numpy(), train.y.numpy(), test.x.numpy(), test.y.numpy()


def _loss(model, x, y):
    logits = model(x).mean(0)  # mean-over-time readout (SPSN eq. 20)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits


@nnx.jit
def train_step(model, optimizer, x, y):
    (loss, logits), grads = nnx.value_and_grad(_loss, has_aux=True)(model, x, y)
    optimizer.update(model, grads)
    return loss, jnp.sum(jnp.argmax(logits, -1) == y)


@nnx.jit
def eval_step(model, x, y):
    loss, logits = _loss(model, x, y)
    return loss, jnp.sum(jnp.argmax(logits, -1) == y)


def train(cfg: JaxTrainConfig, log=print) -> dict:
    """Train, write the run folder (when ``cfg.out_dir``), return the final metrics."""
    cfg.check()
    x_tr, y_tr, x_te, y_te = load_digits(cfg)
    rngs = nnx.Rngs(params=cfg.seed, spikes=cfg.seed + 1)
    model = build_model(cfg, x_tr.shape[-1], 10, rngs)
    n = y_tr.shape[0]
    per_epoch = math.ceil(n / cfg.batch_size)
    if cfg.max_batches:
        per_epoch = min(per_epoch, cfg.max_batches)
    # torch's CosineAnnealingLR(T_max=epochs), stepped once per epoch
    schedule = lambda step: cfg.lr * 0.5 * (1 + jnp.cos(jnp.pi * (step // per_epoch) / cfg.epochs))  # noqa: E731
    optimizer = nnx.Optimizer(model, optax.adam(schedule), wrt=nnx.Param)
    order = np.random.default_rng(cfg.seed)
    rows, started = [], time.perf_counter()
    if cfg.out_dir:
        os.makedirs(cfg.out_dir, exist_ok=True)
        _write_json(os.path.join(cfg.out_dir, "config.json"), {**dataclasses.asdict(cfg), "framework": "jax",
                                                               "jax": jax.__version__, "device": str(jax.devices()[0])})
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        perm = order.permutation(n)
        loss_sum, correct, seen = 0.0, 0, 0
        for b in range(per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            loss, c = train_step(model, optimizer, x_tr[:, idx], y_tr[idx])
            loss_sum += float(loss) * len(idx)
            correct += int(c)
            seen += len(idx)
        train_s = time.perf_counter() - t0
        test_loss, test_correct = eval_step(model, x_te, y_te)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "test_loss": float(test_loss), "test_acc": int(test_correct) / y_te.shape[0], "epoch_s": train_s}
        rows.append(row)
        log(f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  train {row['train_acc']:.4f}  "
            f"test {row['test_acc']:.4f}  ({train_s:.1f}s)")
    final = {"test_acc": rows[-1]["test_acc"], "best_test_acc": max(r["test_acc"] for r in rows),
             "wall_s": time.perf_counter() - started,
             "median_epoch_s": float(np.median([r["epoch_s"] for r in rows[1:]] or [rows[0]["epoch_s"]])),
             "first_epoch_s": rows[0]["epoch_s"], "epochs": cfg.epochs}
    if cfg.out_dir:
        _write_json(os.path.join(cfg.out_dir, "metrics.json"), rows)
        with open(os.path.join(cfg.out_dir, "metrics.csv"), "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        _write_json(os.path.join(cfg.out_dir, "final.json"), final)
        if cfg.nir:
            from .export import write

            write(os.path.join(cfg.out_dir, "network.nir"), model, spsn="threshold")
    final["model"] = model
    return final


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def run_from_cli(overrides: dict, *, out: str | None, preset: str | None, resume: bool) -> int:
    """``spikescan train --framework jax``: the flags the JAX trainer has; any other is refused by name."""
    if preset or resume:
        raise ValueError("--framework jax trains the digits main job only: --preset and --resume are torch-only")
    unsupported = sorted(k for k in overrides if k not in CLI_FIELDS and k != "out_dir")
    if unsupported:
        raise ValueError(f"--framework jax does not take {['--' + k.replace('_', '-') for k in unsupported]}; "
                         f"it takes {['--' + k.replace('_', '-') for k in CLI_FIELDS]}")
    kw = {k: v for k, v in overrides.items() if k in CLI_FIELDS and k != "dataset"}
    if overrides.get("dataset", "digits") != "digits":
        raise ValueError(f"--framework jax trains on the embedded digits only, got --dataset {overrides['dataset']}")
    if "hidden" in kw:
        kw["hidden"] = list(kw["hidden"])
    cfg = JaxTrainConfig(**kw, out_dir=out or f"runs/digits-jax-{kw.get('neuron', 'spsn-sb')}-s{kw.get('seed', 0)}",
                         nir=True)
    result = train(cfg)
    print(f"test accuracy {result['test_acc']:.4f} after {cfg.epochs} epochs, {result['wall_s']:.1f}s; "
          f"wrote {cfg.out_dir}")
    return 0
