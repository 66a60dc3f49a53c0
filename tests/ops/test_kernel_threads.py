"""The fused CPU kernels called from several Python threads at once give the serial results, bit for bit.

The kernels are numba functions compiled with ``nogil=True``, so calls from different Python
threads really run at the same time; what they share is the compiled-kernel caches, the
neuron-splitting thread pool (``_cpu.parallel_for``, used when torch has more than one thread)
and the pool of large output buffers (``_cpu.empty``, for outputs of 8 MiB and more).  Each
thread gets its own inputs (the small sets several times, so equal inputs also run at once), runs
forward and backward, and every output and gradient must equal the serial call's exactly: a
neuron's arithmetic does not depend on how the neurons are split, so any difference is a race.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from spikescan.ops import leaky_integrate
from spikescan.ops.lif import lif_fused
from spikescan.ops.spsn import fused_spsn


def leaky_integrate_fused(x, decay, **kw):
    return leaky_integrate(x, decay, backend="fused", **kw)

# (T, per-step shape): odd sizes (T not a multiple of the 32-step segments, N not of 64), one
# large enough for the neuron-splitting pool when torch has 2 threads (T * N >= 2**16), and one
# whose float32 outputs are 8 MiB, the size from which they come from the shared buffer pool
SHAPES = [(37, (3, 5)), (70, (2, 601)), (1024, (2048,))]
SET_SHAPE = (0, 1, 2, 1, 0)  # input set k has shape SHAPES[SET_SHAPE[k]]: one 8 MiB set per test


def _inputs(op: str, k: int):
    """Input set ``k`` for ``op``: the tensors (leaves) and the incoming gradients' seed."""
    T, rest = SHAPES[SET_SHAPE[k]]
    g = torch.Generator().manual_seed(1000 * k + len(op))
    x = torch.randn((T,) + rest, generator=g) * 0.8 + 0.2
    feat = rest[-1:]
    if op == "lif":
        leaves = dict(x=x, decay=0.5 + 0.45 * torch.rand(feat, generator=g),
                      threshold=0.6 + torch.rand(feat, generator=g), v0=0.3 * torch.randn(rest, generator=g))
    elif op == "leaky":
        leaves = dict(x=x, decay=torch.rand(feat, generator=g), scale=torch.randn(feat, generator=g),
                      v0=torch.randn(rest, generator=g))
    else:
        leaves = dict(x=x, alpha=0.3 + 0.6 * torch.rand(feat, generator=g), beta=0.3 + 0.6 * torch.rand(feat, generator=g))
    return leaves, 7 * k + 1


def _run(op: str, k: int):
    """Forward and backward of input set ``k``: every output and every gradient, detached."""
    tensors, wseed = _inputs(op, k)
    leaves = {n: t.requires_grad_() for n, t in tensors.items()}
    if op == "lif":
        outs = lif_fused(leaves["x"], leaves["decay"], leaves["threshold"], v0=leaves["v0"], reset="zero",
                         return_membrane=True, return_state=True)
    elif op == "leaky":
        outs = (leaky_integrate_fused(leaves["x"], leaves["decay"], scale=leaves["scale"], v0=leaves["v0"]),)
    else:
        outs = (fused_spsn(leaves["x"], leaves["alpha"], leaves["beta"], seed=wseed, firing="sb"),
                fused_spsn(leaves["x"], leaves["alpha"], leaves["beta"], seed=wseed + 1, firing="gs"))
    g = torch.Generator().manual_seed(wseed)
    loss = sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return [o.detach().clone() for o in outs] + list(grads)


def _concurrent(op: str, jobs: list[int], workers: int):
    """Run ``jobs`` (input-set indices) on ``workers`` threads that start together."""
    barrier = threading.Barrier(workers, timeout=300)  # a guard against a hang, not a timing

    def worker(mine):
        barrier.wait()
        return [(k, _run(op, k)) for k in mine]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(worker, jobs[w::workers]) for w in range(workers)]
        return [r for f in futures for r in f.result()]


@pytest.fixture(params=[1, 2], ids=["torch1thread", "torch2threads"])
def torch_threads(request):
    """torch's thread count: with 2 each kernel call also splits its neurons over the shared pool."""
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


@pytest.mark.parametrize("op", ["lif", "leaky", "spsn"])
@pytest.mark.parametrize("workers", [2, 4])
def test_concurrent_calls_equal_serial(op, workers, torch_threads):
    n_sets = workers + 1
    serial = {k: _run(op, k) for k in range(n_sets)}
    # every set once, the small ones three more times: more interleavings, and equal inputs at
    # the same time too
    jobs = list(range(n_sets)) + 3 * [k for k in range(n_sets) if SET_SHAPE[k] != 2]
    results = _concurrent(op, jobs, workers)
    assert sorted(k for k, _ in results) == sorted(jobs)
    for k, got in results:
        for i, (a, b) in enumerate(zip(got, serial[k])):
            assert a.dtype == b.dtype and a.shape == b.shape, (op, k, i)
            assert torch.equal(a, b), f"{op}: input set {k}, result {i} differs from the serial call"
