"""Data-parallel training helpers on ``torch.distributed`` (launched by ``torchrun`` or :func:`spawn`).

Typical training loop (every rank runs it; rank 0 alone writes files)::

    env = init_from_env()                      # no-op in a plain single process
    model = wrap_model(build_model(...).to(env.device))
    sampler = make_sampler(train_set, shuffle=True, seed=cfg.seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, ...)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        ...  # forward, loss (a MEAN over the batch), backward, optimizer.step()
        metrics = all_reduce_metrics({"loss": loss_sum, "correct": n_correct, "n": n}, op="sum")
        if is_main():
            save_checkpoint(...)
    cleanup()

DistributedDataParallel averages the gradients over the ranks, so with equal per-rank batches
of ``b`` and a per-batch mean loss, one step equals a single-process step on the global batch
of ``W b`` samples.  :func:`make_sampler` returns a ``DistributedSampler`` even in a single
process (``num_replicas=1``): with the same ``seed`` and ``drop_last=True`` the single process,
run with batch ``W b``, sees exactly the global batches of the W-rank run (rank r takes
``perm[r::W]``, so global batch j is ``perm[j W b : (j+1) W b]``) -- the reference for checking
that data-parallel training reproduces single-process training.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn

from ._comm import guard

__all__ = ["DistEnv", "init_from_env", "is_distributed", "is_main", "make_sampler", "all_reduce_metrics",
           "all_true", "broadcast_object", "gather_objects", "wrap_model", "barrier", "cleanup"]

#: default process-group timeout (seconds) of :func:`init_from_env`; ``SPIKESCAN_DIST_TIMEOUT`` overrides it
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: ``rank``/``world_size`` in the default group, ``local_rank`` on
    its node, the ``device`` it should use and the ``backend`` (None when not distributed)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Optional[str]

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def _env_int(name: str, default: Optional[int] = None) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_from_env(backend: Optional[str] = None, timeout_s: Optional[float] = None,
                  device: Optional[str] = None) -> DistEnv:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); a plain process (no ``WORLD_SIZE``, or 1)
    gets a non-distributed :class:`DistEnv` and nothing is initialized.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default NCCL when CUDA is available (and ``device``
            is not "cpu"), else gloo.
        timeout_s: process-group timeout: a collective waiting longer (a dead or stuck rank)
            fails instead of hanging.  Default ``SPIKESCAN_DIST_TIMEOUT`` or 300 s.
        device: "cpu" or "cuda"; default CUDA when available.  On CUDA each rank takes
            ``cuda:LOCAL_RANK``.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but CUDA is not available")
    dev = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if dist.is_available() and dist.is_initialized():  # e.g. inside spawn(): reuse the group
        return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, dev, dist.get_backend())
    if world is None or world <= 1:
        return DistEnv(0, 1, 0, dev, None)
    if not (0 <= rank < world):
        raise ValueError(f"RANK={rank} is outside 0 .. WORLD_SIZE-1 = {world - 1}")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ValueError(f"WORLD_SIZE={world} but {name} is not set: launch with torchrun, which sets it")
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if timeout_s is None:
        timeout_s = float(os.environ.get("SPIKESCAN_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=float(timeout_s)))
    return DistEnv(rank, world, local_rank, dev, backend)


def is_distributed() -> bool:
    """Whether a default process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """True on rank 0, and in a plain single process: the rank that writes checkpoints, logs and plots."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def make_sampler(dataset, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
    """A ``DistributedSampler`` over ``dataset`` for this rank (``num_replicas=1`` when not distributed).

    Pass it as ``DataLoader(sampler=...)`` (not ``shuffle=``) and call ``sampler.set_epoch(epoch)``
    at the start of every epoch, or every epoch reuses the first epoch's order.
    """
    from torch.utils.data.distributed import DistributedSampler

    if dist.is_available() and dist.is_initialized():
        replicas, rank = dist.get_world_size(), dist.get_rank()
    else:
        replicas, rank = 1, 0
    return DistributedSampler(dataset, num_replicas=replicas, rank=rank, shuffle=shuffle, seed=seed,
                              drop_last=drop_last)


def all_reduce_metrics(metrics: Mapping[str, float], *, op: str = "mean",
                       weight: Optional[float] = None) -> dict[str, float]:
    """Reduce a dict of numbers over the ranks with ONE all_reduce (float64); identity in a single process.

    ``op="sum"``: the sums.  ``op="mean"``: the means over ranks, or with ``weight`` (e.g. this
    rank's number of samples) the weighted means ``sum(w_r m_r) / sum(w_r)`` -- the global
    per-sample mean when each ``m_r`` is a per-sample mean over ``w_r`` samples.  Every rank
    must pass the same keys (they are sorted, so their order does not matter): the numbers are
    reduced by position.
    """
    if op not in ("sum", "mean"):
        raise ValueError(f"op must be 'sum' or 'mean', got {op!r}")
    if weight is not None and op != "mean":
        raise ValueError("weight is only meaningful with op='mean'")
    keys = sorted(metrics)
    values = [float(metrics[k]) for k in keys]
    if not is_distributed():
        return dict(zip(keys, values))
    w = 1.0 if weight is None else float(weight)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([v * (w if op == "mean" else 1.0) for v in values] + [w],
                     dtype=torch.float64, device=device)
    with guard("all_reduce_metrics", None):
        dist.all_reduce(t)
    total_w = t[-1].item()
    out = t[:-1].tolist()
    if op == "mean":
        out = [v / total_w for v in out]
    return dict(zip(keys, out))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; identity in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    with guard("broadcast_object", None):
        dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    with guard("gather_objects", None):
        dist.all_gather_object(out, obj)
    return out


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (one tiny all_reduce; ``flag`` itself in a single process)."""
    if not is_distributed():
        return bool(flag)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([0 if flag else 1], dtype=torch.int32, device=device)
    with guard("all_true", None):
        dist.all_reduce(t)
    return int(t.item()) == 0


def wrap_model(model: nn.Module, *, find_unused_parameters: bool = False, **ddp_kwargs) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed (``device_ids`` set for a CUDA model), else ``model``.

    DDP broadcasts rank 0's parameters at construction, so the ranks start equal.  Unwrap with
    ``model.module`` to save a checkpoint that loads without DDP.
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    first = next(model.parameters(), None)
    if first is not None and first.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [first.device.index])
    return DistributedDataParallel(model, find_unused_parameters=find_unused_parameters, **ddp_kwargs)


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        with guard("barrier", None):
            dist.barrier()


def cleanup() -> None:
    """Leave the process group (no-op when none is active)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
