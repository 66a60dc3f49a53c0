"""Time-split ops and TimeSplit against the single-process result, on 2 and 3 gloo processes.

Each spawn runs every check of one world size (starting processes is the slow part); the
children build the same global tensors from one seed, compute the single-process reference
themselves and compare their own segment, so a failure arrives as the child's traceback.
T = 11 is divisible by neither 2 nor 3, so the segments have different lengths.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spikescan.distributed import (SpawnError, TimeSplit, gather_time, leaky_integrate_split, lif_split,
                                   local_segment, segment_bounds, spawn, spsn_split)
from spikescan.nn import LI, LIF, SPSN, TimeDistributed
from spikescan.ops.firing import sigmoid_bernoulli
from spikescan.ops.lif import lif
from spikescan.ops import leaky_integrate

T, B, F = 11, 4, 6


def _close(actual, expected, what):
    # <= 1e-5 relative to the size of the reference (float32)
    scale = float(expected.detach().abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * max(scale, 1e-6), msg=lambda m: f"{what}: {m}")


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _check_leaky(rank, world):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, F, generator=g)
    decay = torch.rand(F, generator=g) * 0.5 + 0.45
    scale = torch.rand(F, generator=g) + 0.5
    v0 = torch.randn(B, F, generator=g)
    gw = torch.randn(T, B, F, generator=g)
    for backend in ("sequential", "chunked", "auto"):
        for per_neuron in (True, False):
            d_ref = decay if per_neuron else decay[0]
            xr, dr, sr, vr = _leaves(x, d_ref, scale, v0)
            u = leaky_integrate(xr, dr, scale=sr, v0=vr, backend="sequential")
            (u * gw).sum().backward()
            xl, dl, sl, vl = _leaves(local_segment(x), d_ref, scale, v0)
            ul = leaky_integrate_split(xl, dl, scale=sl, v0=vl, backend=backend)
            (ul * local_segment(gw)).sum().backward()
            tag = f"leaky {backend} per_neuron={per_neuron}"
            _close(ul, local_segment(u), tag + " u")
            _close(xl.grad, local_segment(xr.grad), tag + " grad x")
            _close(dl.grad, dr.grad, tag + " grad decay")
            _close(sl.grad, sr.grad, tag + " grad scale")
            _close(vl.grad, vr.grad, tag + " grad v0")
    # no v0, unit scale, float decay: the plain path
    xl = local_segment(x).clone().requires_grad_(True)
    ul = leaky_integrate_split(xl, 0.9)
    _close(ul, local_segment(leaky_integrate(x, 0.9, backend="sequential")), "leaky float decay")
    # gather_time returns the whole sequence and its backward hands back this rank's slice
    full = gather_time(ul)
    _close(full, leaky_integrate(x, 0.9, backend="sequential"), "gather_time")


def _equal_where_decided(s, ref, noise, p, what):
    # A draw within 1e-5 of its firing probability may fall either way: the split scan (segments
    # plus a carry) rounds differently from the sequential one, ~1e-6 relative in float32.
    decided = (noise - p).abs() > 1e-5
    assert float(decided.float().mean()) > 0.99, what
    assert torch.equal(s[decided], ref[decided]), what


def _check_spsn(rank, world):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(T, B, F, generator=g) * 3
    a = torch.rand(F, generator=g) * 0.3 + 0.6
    b = torch.rand(F, generator=g) * 0.3 + 0.6
    noise = torch.rand(T, B, F, generator=g)
    gw = torch.randn(T, B, F, generator=g)
    xr, ar, br = _leaves(x, a, b)
    u = leaky_integrate(leaky_integrate(xr, ar, backend="sequential"), br, scale=1 - br, backend="sequential")
    s = sigmoid_bernoulli(u, noise=noise)
    ((s + u) * gw).sum().backward()
    xl, al, bl = _leaves(local_segment(x), a, b)
    sl, ul = spsn_split(xl, al, bl, noise=local_segment(noise), return_membrane=True)
    ((sl + ul) * local_segment(gw)).sum().backward()
    _close(ul, local_segment(u), "spsn u")
    _equal_where_decided(sl, local_segment(s), local_segment(noise), local_segment(torch.sigmoid(u.detach())),
                         "spsn spikes differ with the same noise")
    _close(xl.grad, local_segment(xr.grad), "spsn grad x")
    _close(al.grad, ar.grad, "spsn grad a")
    _close(bl.grad, br.grad, "spsn grad b")
    # a generator seeded per rank: the single-process run given the concatenated uniforms agrees
    local = spsn_split(local_segment(x), a, b, generator=torch.Generator().manual_seed(100 + rank))
    uniforms = torch.cat([torch.rand((stop - start, B, F), generator=torch.Generator().manual_seed(100 + r))
                          for r, (start, stop) in enumerate(segment_bounds(T, world))])
    u_ref = leaky_integrate(leaky_integrate(x, a), b, scale=1 - b)
    ref = sigmoid_bernoulli(u_ref, noise=uniforms)
    _equal_where_decided(local, local_segment(ref), local_segment(uniforms), local_segment(torch.sigmoid(u_ref)),
                         "spsn with per-rank generators differs")


def _check_lif(rank, world):
    g = torch.Generator().manual_seed(3)
    # inputs drawn away from the threshold: no spike decision hangs on round-off
    x = torch.rand(T, B, F, generator=g) * 0.8 + 0.1
    x = torch.where(torch.rand(T, B, F, generator=g) < 0.5, x, -x)
    decay = torch.rand(F, generator=g) * 0.3 + 0.6
    thr = torch.rand(F, generator=g) * 0.3 + 0.8
    v0 = torch.randn(B, F, generator=g) * 0.3
    gw = torch.randn(T, B, F, generator=g)
    for reset, backend, mb in (("subtract", "sequential", 1), ("zero", "sequential", 2), ("subtract", "auto", 3)):
        xr, dr, tr, vr = _leaves(x, decay, thr, v0)
        s = lif(xr, dr, tr, reset=reset, v0=vr, backend="sequential")
        (s * gw).sum().backward()
        xl, dl, tl, vl = _leaves(local_segment(x), decay, thr, v0)
        sl = lif_split(xl, dl, tl, reset=reset, v0=vl, backend=backend, micro_batches=mb)
        (sl * local_segment(gw)).sum().backward()
        tag = f"lif {reset} {backend} micro_batches={mb}"
        assert float(s.detach().sum()) > 0, "the test input should make the neurons spike"
        assert torch.equal(sl, local_segment(s)), tag + " spikes differ"
        _close(xl.grad, local_segment(xr.grad), tag + " grad x")
        _close(dl.grad, dr.grad, tag + " grad decay")
        _close(tl.grad, tr.grad, tag + " grad threshold")
        _close(vl.grad, vr.grad, tag + " grad v0")


def _check_timesplit(rank, world):
    # float64: each rank's nn.Linear multiplies a different number of rows, so BLAS may round
    # differently from the whole-sequence matmul; in float32 that can flip a spike (LIF threshold,
    # SPSN draw) and the outputs part.  In float64 it is ~1e-16, far inside _close's 1e-5.
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(5, F), LIF(F, learn_tau=True, threshold=0.5), nn.Linear(F, 3),
                        LI(3, learn_tau=True)).double()
    x = torch.rand(T, B, 5, dtype=torch.float64) * 4
    gw = torch.randn(T, B, 3, dtype=torch.float64)
    out = net(x)
    (out * gw).sum().backward()
    split = TimeSplit(copy.deepcopy(net), micro_batches=2)
    split.zero_grad(set_to_none=True)
    out_l = split(local_segment(x))
    (out_l * local_segment(gw)).sum().backward()
    _close(out_l, local_segment(out), "TimeSplit LIF net output")
    for (name, p), q in zip(net.named_parameters(), split.model.parameters()):
        _close(q.grad, p.grad, f"TimeSplit LIF net grad {name}")

    # SPSN network with fixed noise against the net written out by hand
    torch.manual_seed(5)
    net = nn.Sequential(TimeDistributed(nn.Linear(5, F)), SPSN(F, learn_tau=True), nn.Linear(F, 3), LI(3)).double()
    noise = torch.rand(T, B, F, dtype=torch.float64)
    spsn, lin2, li = net[1], net[2], net[3]
    u = leaky_integrate(leaky_integrate(net[0](x), spsn.syn()), spsn.mem(), scale=1 - spsn.mem())
    out = li(lin2(sigmoid_bernoulli(u, noise=noise)))
    (out * gw).sum().backward()
    split = TimeSplit(copy.deepcopy(net))
    split.zero_grad(set_to_none=True)
    out_l = split(local_segment(x), noise=[local_segment(noise)])
    (out_l * local_segment(gw)).sum().backward()
    _close(out_l, local_segment(out), "TimeSplit SPSN net output")
    for (name, p), q in zip(net.named_parameters(), split.model.parameters()):
        _close(q.grad, p.grad, f"TimeSplit SPSN net grad {name}")


def _all_checks(rank, world):
    _check_leaky(rank, world)
    _check_spsn(rank, world)
    _check_lif(rank, world)
    _check_timesplit(rank, world)
    return rank


@pytest.mark.parametrize("world", [2, 3])
def test_time_split_matches_single_process(world):
    assert spawn(_all_checks, world, timeout=120, pg_timeout_s=30) == list(range(world))


def test_segment_bounds():
    assert segment_bounds(11, 3) == [(0, 4), (4, 8), (8, 11)]
    assert segment_bounds(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    with pytest.raises(ValueError, match="at least one step"):
        segment_bounds(2, 3)
    with pytest.raises(ValueError, match="parts"):
        segment_bounds(5, 0)


def test_timesplit_rejects_unsupported_layers():
    from spikescan.nn import PSU

    with pytest.raises(ValueError, match=r"layer 1 \(PSU\)"):
        TimeSplit(nn.Sequential(nn.Linear(3, 3), PSU()))
    with pytest.raises(ValueError, match="BatchNorm1d"):
        TimeSplit(nn.Sequential(TimeDistributed(nn.BatchNorm1d(3))))
    with pytest.raises(ValueError, match="start_dim"):
        TimeSplit(nn.Sequential(nn.Flatten(0)))
    with pytest.raises(ValueError, match="micro_batches"):
        TimeSplit(nn.Sequential(nn.Linear(3, 3)), micro_batches=0)


def test_split_ops_need_an_initialized_group():
    with pytest.raises(RuntimeError, match="not initialized"):
        leaky_integrate_split(torch.zeros(3, 2), 0.5)


def test_spawn_reports_a_raising_rank():
    with pytest.raises(SpawnError, match=r"rank 1: raised ValueError: boom"):
        spawn(_raise_on_rank_1, 2, timeout=60, pg_timeout_s=10)


def _raise_on_rank_1(rank, world):
    if rank == 1:
        raise ValueError("boom")
    return rank
