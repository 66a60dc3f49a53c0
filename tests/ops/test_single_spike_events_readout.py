"""The events-fed single-spike LIF, the linear layer its spikes feed and the max-membrane readout
of that layer in one autograd node (``single_spike_lif_events(..., out_weight=W2,
readout_decay=d_r)`` -> ``(s, logits)``), against

* the composition ``max_membrane_readout(y, d_r, backend="fused")`` of the pair ``(s, y)`` of
  ``single_spike_lif_events(..., out_weight=W2)``: the spikes, ``y``, the logits and the
  gradients of ``W2``, ``b2`` and of the readout's decay and scale come from the same kernels in
  the same order, so they are equal bit for bit.  The neurons' spike gradient ``gy[t] W2`` is
  carried from step to step instead (``G[t] = d_r G[t+1] + (c_r imp[t]) W2``): ``G[t]`` is
  ``gy[t] W2`` to about ``(T + K) u`` relative to the magnitudes it sums (each step one rounding
  of the product and one of the sum, on top of the composition's ``K`` terms), and the
  gradients of ``W``, ``b`` and the neuron parameters are sums over ``T`` steps of such terms.
  The test allows ``8 (T + K) u`` times the largest entry, twice the margin of the
  ``out_weight`` tests (two error sources, the recursion's and the composition's own);
  measured errors are 10-100x below it, and a wrong impulse (its step, its scale, a dropped
  tie) gives errors of the order of the entries.
* the sequential reference in float64 (dense layers, ``single_spike_lif(backend="sequential")``,
  ``leaky_integrate`` + ``amax``) to 1e-10 of the largest entry.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikescan.ops import leaky_integrate
from spikescan.ops.first_spike import max_membrane_readout, single_spike_lif, single_spike_lif_events

from .test_single_spike_events import F32, F64, UNIT, incoming, leaf_grads, make_case
from .test_single_spike_events_linear import assert_grads_match, with_readout

pytest.importorskip("numba", reason="the fused events kernel is numba")


def with_max_readout(case, *, decay=0.95, scale=None, learn=True):
    case = dict(case)
    dtype = case["weight"].dtype
    case["readout_decay"] = torch.as_tensor(decay, dtype=dtype).clone().requires_grad_(learn)
    case["readout_scale"] = None if scale is None else torch.as_tensor(scale, dtype=dtype).clone().requires_grad_(learn)
    return case


def run(ev, case, how, *, gs=None, glog=None, surrogate=None, straight=False):
    """``s``, the logits and the gradients of every leaf of ``<gs, s> + <glog, logits>``."""
    c = {k: (t.detach().clone().requires_grad_(t.requires_grad) if torch.is_tensor(t) else t)
         for k, t in case.items()}
    kw = dict(scale=c["scale"], v0=c["v0"], surrogate=surrogate, straight_through=straight)
    if how == "fused":
        s, logits = single_spike_lif_events(ev, c["weight"], c["bias"], c["decay"], c["threshold"],
                                            out_weight=c["out_weight"], out_bias=c["out_bias"],
                                            readout_decay=c["readout_decay"], readout_scale=c["readout_scale"], **kw)
    elif how == "composed":
        s, y = single_spike_lif_events(ev, c["weight"], c["bias"], c["decay"], c["threshold"],
                                       out_weight=c["out_weight"], out_bias=c["out_bias"], **kw)
        logits = max_membrane_readout(y, c["readout_decay"], scale=c["readout_scale"], backend="fused")
    else:  # the sequential reference, dense layers, the readout's membrane by the plain scan
        current = F.linear(ev.dense().to(c["weight"].dtype), c["weight"], c["bias"])
        s = single_spike_lif(current, c["decay"], c["threshold"], backend="sequential", **kw)
        y = F.linear(s, c["out_weight"], c["out_bias"])
        rs = 1.0 - c["readout_decay"] if c["readout_scale"] is None else c["readout_scale"]
        logits = leaky_integrate(y, c["readout_decay"], scale=rs, backend="sequential").amax(dim=0)
    loss = 0.0
    if gs is not None:
        loss = loss + (s * gs).sum()
    if glog is not None:
        loss = loss + (logits * glog).sum()
    grads = leaf_grads(c, loss)
    return s.detach(), logits.detach(), grads


EXACT = ("out_weight", "out_bias", "readout_decay", "readout_scale")


def logit_grad(B, K, dtype, seed=5):
    return torch.randn(B, K, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def check_against_composed(ev, case, dtype, *, gs="random", glog="random", **kw):
    T, B, _ = ev.shape
    O = case["weight"].shape[0]
    K = case["out_weight"].shape[0]
    gs = incoming(T, B, O, dtype, seed=3) if isinstance(gs, str) else gs
    glog = logit_grad(B, K, dtype) if isinstance(glog, str) else glog
    s, logits, grads = run(ev, case, "fused", gs=gs, glog=glog, **kw)
    s_ref, logits_ref, ref = run(ev, case, "composed", gs=gs, glog=glog, **kw)
    assert torch.equal(s, s_ref) and torch.equal(logits, logits_ref)
    assert_grads_match(grads, ref, EXACT, 8 * (T + K) * UNIT[dtype])
    return s, grads


# segment boundaries (32 steps) at 31, 32, 33, 64, 65; T = 1; odd and even T
SHAPES = [(1, 3, 5, 7, 3), (2, 2, 9, 4, 1), (31, 2, 33, 8, 3), (32, 3, 20, 33, 10), (33, 5, 16, 16, 1),
          (65, 3, 25, 11, 10), (97, 3, 40, 21, 10), (300, 4, 34, 200, 10)]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("T, B, C, O, K", SHAPES)
def test_equal_to_composition(dtype, T, B, C, O, K):
    ev, case = make_case(T, B, C, O, dtype, density=min(0.3, 3.0 / T + 0.02), seed=T + O)
    case = with_max_readout(with_readout(case, K, seed=T))
    s, grads = check_against_composed(ev, case, dtype)
    check_against_composed(ev, case, dtype, gs=None)  # the spikes used only through the logits
    if T >= 31:  # not degenerate: some neurons fire, some stay silent, and W gets a gradient
        fired = s.sum(0)
        assert bool((fired > 0).any()) and bool((fired == 0).any())
        assert float(grads["weight"].abs().max()) > 0


@pytest.mark.parametrize("readout_decay", [0.0, 1e-6, 0.5, 0.999999, 1.0])
@pytest.mark.parametrize("readout_scale", [None, 1.0])
def test_readout_decays_near_0_and_1(readout_decay, readout_scale):
    ev, case = make_case(70, 3, 12, 9, F64, seed=11)
    case = with_max_readout(with_readout(case, 3, seed=1), decay=readout_decay, scale=readout_scale)
    check_against_composed(ev, case, F64)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_ties_share_the_gradient(dtype):
    """Negative output weights and a readout without memory (``d_r = 0``): ``V = c_r y`` is at its
    maximum ``c_r b2`` at every step where no neuron spikes, so most steps tie and each gets
    ``gm / count`` (``torch.amax``'s rule)."""
    T, B, O, K = 80, 4, 12, 3
    ev, case = make_case(T, B, 10, O, dtype, seed=4)
    case = with_readout(case, K, seed=4)
    case["out_weight"] = (-case["out_weight"].detach().abs()).requires_grad_()
    case = with_max_readout(case, decay=0.0, scale=1.0)
    s, grads = check_against_composed(ev, case, dtype)
    assert 0 < float(s.sum()) and float(grads["weight"].abs().max()) > 0


@pytest.mark.parametrize("np_dtype", ["float32", "float64"])
def test_impulse_rows_are_reused_only_for_equal_impulses(np_dtype):
    """The kernel's rows ``(c_r imp[t]) W2`` (``_impulse_rows``): runs of equal impulses share a
    row, a change (back to an earlier vector too, or after steps without impulses) makes a new
    one, and the row of step ``t + 1`` survives making step ``t``'s (both are read in one sweep).
    Each row must equal the sum made afresh in the same order, bit for bit."""
    import numpy as np

    from spikescan.ops.single_spike import numba_kernels as SF

    rng = np.random.default_rng(7)
    dt = np.dtype(np_dtype)
    T, nb, K, O = 61, 3, 4, 37
    a = np.array([0.5, 0.0, -1.25, 0.0], dt)
    b = np.array([0.5, 0.0, -1.25, 2.0], dt)  # a with one more impulse
    zero = np.zeros(K, dt)
    choices = [a, b, zero, rng.standard_normal(K).astype(dt)]
    imp = np.empty((T, nb * K), dt)
    for q in range(nb):
        t = 0
        while t < T:  # runs of 1-6 equal steps
            n = int(rng.integers(1, 7))
            imp[t:t + n, q * K:(q + 1) * K] = choices[int(rng.integers(0, len(choices)))]
            t += n
    imp[10:14, :K] = a  # a, zeros, a again: the row is kept across the gap
    imp[14:16, :K] = 0
    imp[16:18, :K] = a
    imp[18:20, :K] = b  # a -> b -> a: a new row each time
    imp[20:22, :K] = a
    cr = rng.uniform(0.5, 2.0, nb * K).astype(dt)
    w2 = rng.standard_normal((K, O)).astype(dt)

    def fresh(t, q):
        row = np.zeros(O, dt)
        for k in range(K):
            v = imp[t, q * K + k]
            if v != 0:
                row = row + (v * cr[q * K + k]) * w2[k]
        return row

    pool = np.zeros((1 + 2 * nb, O), dt)
    slot = np.zeros(nb, np.int64)
    last = np.zeros(nb * K, dt)
    idx0, idx1 = np.zeros(nb, np.int64), np.zeros(nb, np.int64)
    shared = 0
    for t in range(T - 2, -1, -2):  # pairs (t, t + 1) in reverse, as the sweep takes them
        SF._impulse_rows(imp[t + 1], cr, w2, 0, nb, K, pool, slot, last, idx1)
        SF._impulse_rows(imp[t], cr, w2, 0, nb, K, pool, slot, last, idx0)
        for q in range(nb):
            for step, idx in ((t + 1, idx1), (t, idx0)):
                if not imp[step, q * K:(q + 1) * K].any():
                    assert idx[q] == 0
                else:
                    assert idx[q] in (2 * q + 1, 2 * q + 2)
                    assert np.array_equal(pool[idx[q]], fresh(step, q)), (step, q)
            if np.array_equal(imp[t, q * K:(q + 1) * K], imp[t + 1, q * K:(q + 1) * K]):
                assert idx0[q] == idx1[q]  # one row for a run of equal impulses
                shared += int(idx0[q] != 0)
            elif idx0[q] and idx1[q]:
                assert idx0[q] != idx1[q]
    assert not pool[0].any() and shared > 5


@pytest.mark.parametrize("dtype", [F32, F64])
def test_sequential_reference_float64(dtype):
    T, B, O, K = 120, 4, 30, 10
    ev, case = make_case(T, B, 25, O, F64, seed=21)
    case = with_max_readout(with_readout(case, K, seed=21), decay=0.9, scale=0.7)
    gs, glog = incoming(T, B, O, F64), logit_grad(B, K, F64)
    s, logits, grads = run(ev, case, "fused", gs=gs, glog=glog)
    s_ref, logits_ref, ref = run(ev, case, "sequential", gs=gs, glog=glog)
    assert torch.equal(s, s_ref)
    assert float((logits - logits_ref).abs().max()) <= 1e-12 * float(logits_ref.abs().max())
    for k in ref:
        assert float((grads[k] - ref[k]).abs().max()) <= 1e-10 * max(float(ref[k].abs().max()), 1e-300), k


def test_one_sample_blocks_and_threads(monkeypatch):
    """Blocks of one sample (the sweep of each starts where its own gradient ends) and 2 threads:
    equal to the one-thread call bit for bit, and to the composition."""
    from spikescan.ops.single_spike import numba_kernels as SF

    T, B, C, O, K = 70, 12, 30, 16, 10
    ev, case = make_case(T, B, C, O, F32, density=0.03, seed=13)
    case = with_max_readout(with_readout(case, K, seed=13))
    monkeypatch.setattr(SF, "_EVENTS_BACKWARD_BLOCK", O)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        s1, l1, g1 = run(ev, case, "fused", glog=logit_grad(B, K, F32))
        torch.set_num_threads(2)
        s2, l2, g2 = run(ev, case, "fused", glog=logit_grad(B, K, F32))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(s1, s2) and torch.equal(l1, l2)
    for k in g1:
        assert torch.equal(g1[k], g2[k]), k
    check_against_composed(ev, case, F32, gs=None)


def test_per_neuron_readout_decays():
    """Readout decays that differ per neuron compose (the same numbers as the composition, bit
    for bit); equal ones of a per-neuron tensor run the one node and sum its gradient back."""
    ev, case = make_case(50, 3, 14, 10, F64, seed=5)
    case = with_readout(case, 4, seed=5)
    apart = with_max_readout(case, decay=torch.tensor([0.9, 0.8, 0.95, 0.5], dtype=F64))
    s, grads = check_against_composed(ev, apart, F64)
    _, _, ref = run(ev, apart, "composed", gs=incoming(50, 3, 10, F64, seed=3), glog=logit_grad(3, 4, F64))
    for k in ref:
        assert torch.equal(grads[k], ref[k]), k
    same = with_max_readout(case, decay=torch.full((4,), 0.9, dtype=F64))
    _, grads = check_against_composed(ev, same, F64)
    assert grads["readout_decay"].shape == (4,)


def test_only_the_readout_and_output_layer_learn():
    ev, case = make_case(40, 3, 12, 9, F32, seed=3)
    case = {k: (t.detach() if torch.is_tensor(t) else t) for k, t in case.items()}
    case = with_max_readout(with_readout(case, 3, seed=3))
    check_against_composed(ev, case, F32)
    _, _, grads = run(ev, case, "fused", glog=logit_grad(3, 3, F32))
    assert set(grads) == {"out_weight", "out_bias", "readout_decay"}


def test_bad_readout_arguments():
    ev, case = make_case(10, 2, 6, 5, F32)
    w = case["weight"].detach()
    with pytest.raises(ValueError, match="readout_decay and readout_scale need out_weight"):
        single_spike_lif_events(ev, w, None, 0.9, readout_decay=0.9)
    with pytest.raises(ValueError, match="readout_scale needs readout_decay"):
        single_spike_lif_events(ev, w, None, 0.9, out_weight=torch.randn(3, 5), readout_scale=1.0)
    with pytest.raises(ValueError, match="readout_decay"):
        single_spike_lif_events(ev, w, None, 0.9, out_weight=torch.randn(3, 5), readout_decay=1.5)


# --------------------------------------------------------------------------------------------
# the layers: FeedForwardSNN's EventLinear -> SingleSpikeLIF -> EventLinear -> MaxMembraneReadout
# --------------------------------------------------------------------------------------------


def test_network_runs_the_readout_in_the_node(monkeypatch):
    """``FeedForwardSNN`` on events with a max-membrane readout: the four layers as one node
    (``readout_decay`` passed), the same logits and spikes as the layers one by one, gradients to
    the tolerance above; a readout with a learned kernel runs after the three fused layers."""
    import spikescan.nn.single_spike as mod
    from spikescan.nn import SingleSpikeLIF
    from spikescan.ops.events import SpikeEvents
    from spikescan.train import record_spikes
    from spikescan.train.models import FeedForwardSNN

    dense = (torch.rand(200, 6, 30, generator=torch.Generator().manual_seed(1)) < 0.008).double()
    x = SpikeEvents.from_dense(dense)
    real = mod.single_spike_lif_events
    results = []
    for fuse in (True, False):
        calls = []
        with monkeypatch.context() as m:
            m.setattr(mod, "single_spike_lif_events",
                      lambda *a, **k: calls.append("readout_decay" in k) or real(*a, **k))
            if not fuse:
                m.setattr(SingleSpikeLIF, "_feeds_events", staticmethod(lambda layer, x: False))
            torch.manual_seed(0)
            model = FeedForwardSNN(30, [20], 3, "single-spike", tau_syn=None, tau_mem=0.01,
                                   neuron_kwargs={"input_scale": 1.0}, readout_layer="max-membrane",
                                   readout_kwargs={"learn_tau": True}).double()
            with torch.no_grad():
                model[0].weight.mul_(8.0)  # some neurons fire
            with record_spikes(model) as spikes:
                out = model(x)
            (out.square().sum() + 0.1 * spikes[0].sum()).backward()
        assert calls == [fuse]  # (unfused: the input layer and the neurons still run as one op)
        assert out.shape == (6, 3) and len(spikes) == 1 and 0 < float(spikes[0].detach().sum())
        results.append((out.detach(), spikes[0].detach(), {n: p.grad for n, p in model.named_parameters()}))
    (out, s, g), (out_ref, s_ref, g_ref) = results
    assert torch.equal(out, out_ref) and torch.equal(s, s_ref)
    for name in g_ref:
        tol = 8 * (200 + 3) * UNIT[F64] * float(g_ref[name].abs().max())
        assert float((g[name] - g_ref[name]).abs().max()) <= tol, name
    assert float(g_ref["0.weight"].abs().max()) > 0 and float(g_ref["3.mem.log_tau"].abs().max()) > 0


def test_readout_argument_errors():
    from spikescan.nn import MaxMembraneReadout, SingleSpikeLIF
    from spikescan.nn.linear import EventLinear

    neuron = SingleSpikeLIF(5)
    x = torch.rand(10, 2, 5)
    with pytest.raises(ValueError, match="readout needs output_layer"):
        neuron(x, readout=MaxMembraneReadout(3))
    with pytest.raises(ValueError, match="MaxMembraneReadout with features = 3"):
        neuron(x, output_layer=EventLinear(5, 3), readout=MaxMembraneReadout(4))
    s, logits = neuron(x, output_layer=EventLinear(5, 3), readout=MaxMembraneReadout(3))  # not fused: in turn
    assert s.shape == (10, 2, 5) and logits.shape == (2, 3)
