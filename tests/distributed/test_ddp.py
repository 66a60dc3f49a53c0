"""Data-parallel helpers: DDP on 2 gloo ranks reproduces single-process training on the global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from spikescan.distributed import (all_reduce_metrics, barrier, init_from_env, is_distributed, is_main,
                                   make_sampler, spawn, wrap_model)
from spikescan.nn import LI, LIF

T, N, PER_RANK, F = 7, 24, 4, 6


def _model():
    # float64: DDP averages two per-rank gradients where one process sums the global batch in one
    # matmul; in float32 that reassociation (whose last bits depend on the host's BLAS) can flip a
    # LIF spike and the runs part.  In float64 it is ~1e-16 relative, hence the 1e-10 below.
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, F), LIF(F, learn_tau=True, threshold=0.5, backend="sequential"), nn.Linear(F, 3),
                         LI(3, backend="sequential")).double()


def _train(model, loader, sampler):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for x, y in loader:
            u = model(x.transpose(0, 1))  # [T, b, 3]
            loss = nn.functional.cross_entropy(u.mean(0), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses


def _ddp_worker(rank, world):
    g = torch.Generator().manual_seed(7)
    data = TensorDataset(torch.rand(N, T, 5, generator=g, dtype=torch.float64) * 3,
                         torch.randint(0, 3, (N,), generator=g))
    env = init_from_env()  # inside spawn(): picks up the existing group
    assert env.distributed and (env.rank, env.world_size) == (rank, world) and is_distributed()
    assert is_main() == (rank == 0)

    sampler = make_sampler(data, shuffle=True, seed=3, drop_last=True)
    model = wrap_model(_model())
    local = _train(model, DataLoader(data, batch_size=PER_RANK, sampler=sampler), sampler)
    # global loss per step = mean of the per-rank batch means (equal batch sizes)
    global_losses = [all_reduce_metrics({"loss": v})["loss"] for v in local]

    ref_sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3, drop_last=True)
    ref_model = _model()
    ref = _train(ref_model, DataLoader(data, batch_size=PER_RANK * world, sampler=ref_sampler), ref_sampler)
    torch.testing.assert_close(torch.tensor(global_losses), torch.tensor(ref), rtol=1e-10, atol=1e-12)
    for p, q in zip(model.module.parameters(), ref_model.parameters()):
        assert p.dtype == torch.float64
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)

    sums = all_reduce_metrics({"correct": rank + 1, "n": 10}, op="sum")
    assert sums == {"correct": world * (world + 1) / 2, "n": 10.0 * world}
    weighted = all_reduce_metrics({"acc": 1.0 if rank == 0 else 0.0}, weight=3 if rank == 0 else 1)
    assert abs(weighted["acc"] - 3 / (3 + (world - 1))) < 1e-12
    barrier()
    return len(local)


def test_ddp_matches_single_process_training():
    steps = spawn(_ddp_worker, 2, timeout=120, pg_timeout_s=30)
    assert steps == [2 * N // (2 * PER_RANK)] * 2


def test_single_process_fallbacks(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    env = init_from_env(device="cpu")
    assert not env.distributed and env.world_size == 1 and is_main() and not is_distributed()
    assert all_reduce_metrics({"a": 2.0}) == {"a": 2.0}
    model = nn.Linear(2, 2)
    assert wrap_model(model) is model
    sampler = make_sampler(list(range(10)), shuffle=False)
    assert list(sampler) == list(range(10))
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.delenv("MASTER_ADDR", raising=False)
        init_from_env(device="cpu")


_TORCHRUN_CHILD = textwrap.dedent("""
    import torch, torch.distributed as dist
    from spikescan.distributed import init_from_env, all_reduce_metrics, cleanup
    env = init_from_env(timeout_s=20)
    assert env.backend == "gloo" and dist.get_world_size() == 2
    out = all_reduce_metrics({"r": env.rank}, op="sum")
    print("OK", env.rank, out["r"])
    cleanup()
""")


def test_init_from_env_with_torchrun_variables():
    with socket.socket() as s:  # a free port for MASTER_PORT (released just before use)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen([sys.executable, "-c", _TORCHRUN_CHILD], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=90)[0])
        finally:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "OK 0 1.0" in outs[0] and "OK 1 1.0" in outs[1]
