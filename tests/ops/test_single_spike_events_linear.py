"""The events-fed single-spike LIF with the linear layer its spikes feed, fused
(``single_spike_lif_events(..., out_weight=W2, out_bias=b2)`` -> ``(s, y)``), against

* the composition ``y = event_linear(single_spike_lif_events(x, W, b, ...), W2, b2)`` (numba
  kernels): the spikes, ``y`` and the gradients of ``W2`` and ``b2`` come from the same kernels
  on the same events, so they are equal bit for bit.  The spike gradient ``gs + gy W2`` is formed
  inside the neurons' backward in another order than the composition's GEMM (multiply-adds may
  be fused), and phi's two running sums ``A``, ``B`` are kept in the compute dtype instead of
  float64, so the gradients of ``W``, ``b`` and the neuron parameters agree to rounding.  Each
  is a sum over at most ``T`` steps of terms formed with ``O(K)`` roundings; the test allows
  ``4 (T + K) u`` times the largest entry (Higham's ``gamma_n`` bound, eq. 4.4 of Accuracy and
  Stability, with the sum of magnitudes replaced by the largest entry times the margin 4: the
  cases have no catastrophic cancellation).  Measured errors are 10-100x below it; an indexing
  mistake gives errors of the order of the entries themselves.
* the sequential reference in float64 (dense ``F.linear``, ``single_spike_lif(backend=
  "sequential")``, dense ``F.linear``, autograd through the paper's equations) to 1e-10 of the
  largest entry.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikescan.ops.events import SpikeEvents, event_linear
from spikescan.ops.first_spike import single_spike_lif, single_spike_lif_events
from spikescan.surrogate import ATan, FastSigmoid, Triangle

from .test_single_spike_events import F32, F64, UNIT, incoming, leaf_grads, make_case

pytest.importorskip("numba", reason="the fused events kernel is numba")


def with_readout(case, K, seed=0, *, out_bias=True):
    g = torch.Generator().manual_seed(100 + seed)
    O = case["weight"].shape[0]
    dtype = case["weight"].dtype
    case = dict(case)
    case["out_weight"] = torch.randn(K, O, generator=g, dtype=F64).to(dtype).requires_grad_()
    case["out_bias"] = torch.randn(K, generator=g, dtype=F64).to(dtype).requires_grad_() if out_bias else None
    return case


def run(ev, case, how, *, gs=None, gy=None, surrogate=None, straight=False):
    """``s``, ``y`` and the gradients of every leaf of ``<gs, s> + <gy, y>`` (a term is left out
    when its gradient is None)."""
    c = {k: (t.detach().clone().requires_grad_(t.requires_grad) if torch.is_tensor(t) else t)
         for k, t in case.items()}
    kw = dict(scale=c["scale"], v0=c["v0"], surrogate=surrogate, straight_through=straight)
    if how == "fused":
        s, y = single_spike_lif_events(ev, c["weight"], c["bias"], c["decay"], c["threshold"],
                                       out_weight=c["out_weight"], out_bias=c["out_bias"], **kw)
    elif how == "composed":
        s = single_spike_lif_events(ev, c["weight"], c["bias"], c["decay"], c["threshold"], **kw)
        y = event_linear(s, c["out_weight"], c["out_bias"])
    else:  # the sequential reference, dense layers
        current = F.linear(ev.dense().to(c["weight"].dtype), c["weight"], c["bias"])
        s = single_spike_lif(current, c["decay"], c["threshold"], backend="sequential", **kw)
        y = F.linear(s, c["out_weight"], c["out_bias"])
    loss = 0.0
    if isinstance(gs, str):  # "sum": the gradient of s.sum(), one row broadcast over time
        loss = loss + s.sum()
    elif gs is not None:
        loss = loss + (s * gs).sum()
    if gy is not None:
        loss = loss + (y * gy).sum()
    grads = leaf_grads(c, loss)
    return s.detach(), y.detach(), grads


EXACT = ("out_weight", "out_bias")  # event_linear's own kernels on the same events


def check_against_composed(ev, case, dtype, *, gs="random", gy="random", **kw):
    T, B, _ = ev.shape
    O = case["weight"].shape[0]
    K = case["out_weight"].shape[0]
    gs = incoming(T, B, O, dtype, seed=3) if gs == "random" else gs
    gy = incoming(T, B, K, dtype, seed=4) if gy == "random" else gy
    s, y, grads = run(ev, case, "fused", gs=gs, gy=gy, **kw)
    s_ref, y_ref, ref = run(ev, case, "composed", gs=gs, gy=gy, **kw)
    assert torch.equal(s, s_ref) and torch.equal(y, y_ref)
    assert_grads_match(grads, ref, EXACT, 4 * (T + K) * UNIT[dtype])
    return s


def assert_grads_match(grads, ref, exact, rel):
    """The same gradients: absent or all-zero on both sides, equal bit for bit for the names in
    ``exact``, else within ``rel`` times the reference's largest entry."""
    assert set(grads) == set(ref)
    for k in ref:
        if ref[k] is None or grads[k] is None:
            assert (ref[k] is None or not bool(ref[k].any())) and (grads[k] is None or not bool(grads[k].any())), k
        elif k in exact:
            assert torch.equal(grads[k], ref[k]), k
        else:
            tol = rel * float(ref[k].abs().max())
            assert float((grads[k] - ref[k]).abs().max()) <= tol, (k, float((grads[k] - ref[k]).abs().max()), tol)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("T, B, C, O, K", [(1, 3, 5, 7, 3), (2, 2, 9, 4, 1), (31, 2, 33, 8, 3), (32, 3, 20, 33, 10),
                                           (33, 5, 16, 16, 1), (97, 3, 40, 21, 10), (300, 4, 34, 200, 10)])
def test_equal_to_composition(dtype, T, B, C, O, K):
    ev, case = make_case(T, B, C, O, dtype, density=min(0.3, 3.0 / T + 0.02), seed=T + O)
    case = with_readout(case, K, seed=T)
    s = check_against_composed(ev, case, dtype)
    check_against_composed(ev, case, dtype, gs=None)  # the spikes used only through y
    if T >= 31:  # the case is not degenerate: some neurons fire, some stay silent
        fired = s.sum(0)
        assert bool((fired > 0).any()) and bool((fired == 0).any())


@pytest.mark.parametrize("dtype", [F32, F64])
def test_sequential_reference_float64(dtype):
    """Against autograd through the paper's equations with dense layers; float64."""
    T, B, O, K = 120, 4, 30, 10
    ev, case = make_case(T, B, 25, O, F64, seed=21)
    case = with_readout(case, K, seed=21)
    gs, gy = incoming(T, B, O, F64), incoming(T, B, K, F64, seed=9)
    s, y, grads = run(ev, case, "fused", gs=gs, gy=gy)
    s_ref, y_ref, ref = run(ev, case, "sequential", gs=gs, gy=gy)
    assert torch.equal(s, s_ref)
    assert float((y - y_ref).abs().max()) <= 1e-12 * float(y_ref.abs().max())
    for k in ref:
        scale = float(ref[k].abs().max())
        assert float((grads[k] - ref[k]).abs().max()) <= 1e-10 * max(scale, 1e-300), k


@pytest.mark.parametrize("decay", [0.0, 1e-6, 0.5, 0.999999, 1.0])
@pytest.mark.parametrize("scale", ["code", "paper", "tensor"])
def test_decays_near_0_and_1(decay, scale):
    ev, case = make_case(40, 3, 12, 9, F64, decay=decay, scale=scale, seed=11)
    check_against_composed(ev, with_readout(case, 3, seed=1), F64)


@pytest.mark.parametrize("values", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_values_biases_and_state(values, bias):
    ev, case = make_case(50, 3, 14, 10, F32, values=values, bias=bias, seed=5)
    check_against_composed(ev, with_readout(case, 3, seed=5, out_bias=bias), F32)


@pytest.mark.parametrize("straight", [False, True])
@pytest.mark.parametrize("surrogate", [FastSigmoid(100.0), ATan(2.0), Triangle(0.5)], ids=repr)
def test_surrogates_and_straight_through(straight, surrogate):
    ev, case = make_case(60, 2, 10, 12, F64, seed=2)
    check_against_composed(ev, with_readout(case, 3, seed=2), F64, surrogate=surrogate, straight=straight)


@pytest.mark.parametrize("one_sample_blocks", [False, True])
@pytest.mark.parametrize("last", [0, 1, 17, 33, 64])  # 33: the last gradient on a segment's first step
def test_output_gradient_ending_early(last, one_sample_blocks, monkeypatch):
    """As from a max-membrane readout: no gradient of ``y`` after each sample's step ``last_b``
    (the kernel starts its reverse sweep after the block's last nonzero one), some samples none."""
    T, B, O, K = 70, 6, 9, 3
    if one_sample_blocks:
        from spikescan.ops.single_spike import numba_kernels as SF

        monkeypatch.setattr(SF, "_EVENTS_BACKWARD_BLOCK", O)
    ev, case = make_case(T, B, 10, O, F64, seed=last)
    case = with_readout(case, K, seed=last)
    gy = incoming(T, B, K, F64)
    ends = torch.tensor([last, 0, max(last - 5, 0), T, 3, last])
    gy = torch.where(torch.arange(T)[:, None, None] < ends[None, :, None], gy, torch.zeros(()))
    check_against_composed(ev, case, F64, gs=None, gy=gy)
    gs = torch.zeros(T, B, O, dtype=F64)
    gs[T - 1, 1] = 1.0  # sample 1's only gradient comes through s, at the last step
    check_against_composed(ev, case, F64, gs=gs, gy=gy)


def test_only_the_output_layer_learns():
    """Frozen input layer and neurons: only ``W2, b2`` get gradients (the reverse sweep is skipped)."""
    ev, case = make_case(40, 3, 12, 9, F32, seed=3)
    case = {k: (t.detach() if torch.is_tensor(t) else t) for k, t in case.items()}
    case = with_readout(case, 3, seed=3)
    check_against_composed(ev, case, F32)
    _, _, grads = run(ev, case, "fused", gy=incoming(40, 3, 3, F32))
    assert set(grads) == {"out_weight", "out_bias"}


def test_blocks_and_threads():
    """Several backward blocks over 2 threads: equal to the one-thread call bit for bit."""
    T, B, C, O, K = 70, 40, 30, 120, 10
    ev, case = make_case(T, B, C, O, F32, density=0.01, seed=13)
    case = with_readout(case, K, seed=13)
    gy = incoming(T, B, K, F32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        s1, y1, g1 = run(ev, case, "fused", gy=gy)
        torch.set_num_threads(2)
        s2, y2, g2 = run(ev, case, "fused", gy=gy)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(s1, s2) and torch.equal(y1, y2)
    for k in g1:
        assert torch.equal(g1[k], g2[k]), k
    check_against_composed(ev, case, F32, gs=None, gy=gy)


def test_spike_gradient_broadcast_over_time():
    """``s.sum()`` (as a spike-count regulariser sends) plus ``y``'s gradient: the kernel's one-row path."""
    ev, case = make_case(45, 3, 10, 9, F32, seed=8)
    check_against_composed(ev, with_readout(case, 3, seed=8), F32, gs="sum")
    check_against_composed(ev, with_readout(case, 3, seed=8), F32, gs="sum", gy=None)


def test_unused_outputs():
    """Neither output used: no gradient at all; only ``s`` used: the gradient of the spikes alone."""
    ev, case = make_case(30, 2, 8, 6, F64, seed=6)
    case = with_readout(case, 3, seed=6)
    check_against_composed(ev, case, F64, gy=None)
    s, y = single_spike_lif_events(ev, case["weight"], case["bias"], case["decay"], case["threshold"],
                                   scale=case["scale"], v0=case["v0"], out_weight=case["out_weight"],
                                   out_bias=case["out_bias"])
    assert s.requires_grad and y.requires_grad


def test_bad_output_layer():
    ev, case = make_case(10, 2, 6, 5, F32)
    w = case["weight"].detach()
    with pytest.raises(ValueError, match=r"out_weight must be a tensor \[K, 5\]"):
        single_spike_lif_events(ev, w, None, 0.9, out_weight=torch.randn(3, 4))
    with pytest.raises(ValueError, match="out_weight must have weight's dtype"):
        single_spike_lif_events(ev, w, None, 0.9, out_weight=torch.randn(3, 5, dtype=F64))
    with pytest.raises(ValueError, match="out_bias must be None or a tensor of shape \\(3,\\)"):
        single_spike_lif_events(ev, w, None, 0.9, out_weight=torch.randn(3, 5), out_bias=torch.zeros(4))
    with pytest.raises(ValueError, match="out_bias needs out_weight"):
        single_spike_lif_events(ev, w, None, 0.9, out_bias=torch.zeros(3))
    from spikescan._checks import debug_mode

    with debug_mode(), pytest.raises(ValueError, match="out_weight contains non-finite"):
        single_spike_lif_events(ev, w, None, 0.9, out_weight=torch.full((3, 5), float("nan")))


def test_no_events_and_empty_batch():
    ev, case = make_case(20, 3, 6, 5, F64, density=0.0, seed=1)
    check_against_composed(ev, with_readout(case, 1), F64)
    ev0 = SpikeEvents.from_dense(torch.zeros(9, 0, 6))
    w = torch.randn(5, 6, requires_grad=True)
    w2 = torch.randn(2, 5, requires_grad=True)
    s, y = single_spike_lif_events(ev0, w, None, torch.full((5,), 0.9), 1.0, out_weight=w2)
    assert s.shape == (9, 0, 5) and y.shape == (9, 0, 2)


# --------------------------------------------------------------------------------------------
# the layers: SingleSpikeLIF(x, input_layer=EventLinear, output_layer=EventLinear)
# --------------------------------------------------------------------------------------------


def _network(monkeypatch, fuse: bool):
    from spikescan.nn import SingleSpikeLIF
    from spikescan.train.models import FeedForwardSNN

    if not fuse:
        monkeypatch.setattr(SingleSpikeLIF, "_feeds_events", staticmethod(lambda layer, x: False))
    torch.manual_seed(0)
    model = FeedForwardSNN(30, [20], 3, "single-spike", tau_syn=None, tau_mem=0.01,
                           neuron_kwargs={"input_scale": 1.0}, readout_layer="max-membrane").double()
    with torch.no_grad():
        model[0].weight.mul_(8.0)  # some neurons fire
    return model


def test_network_runs_the_three_layers_fused_as_composed(monkeypatch):
    """``FeedForwardSNN`` on events: ``EventLinear -> SingleSpikeLIF -> EventLinear`` as one op
    (``out_weight`` passed), the same logits, spikes (recorded for the rate regulariser, with
    their gradient) and gradients as the layers run one by one."""
    import spikescan.nn.single_spike as mod
    from spikescan.train import record_spikes

    dense = (torch.rand(200, 6, 30, generator=torch.Generator().manual_seed(1)) < 0.008).double()
    x = SpikeEvents.from_dense(dense)
    real = mod.single_spike_lif_events
    results = []
    for fuse in (True, False):
        calls = []
        with monkeypatch.context() as m:
            m.setattr(mod, "single_spike_lif_events", lambda *a, **k: calls.append("out_weight" in k) or real(*a, **k))
            model = _network(m, fuse)
            with record_spikes(model) as spikes:
                out = model(x)
            (out.square().sum() + 0.1 * spikes[0].sum()).backward()
        assert calls == [fuse]
        assert len(spikes) == 1 and spikes[0].shape == (200, 6, 20) and 0 < float(spikes[0].detach().sum())
        results.append((out.detach(), spikes[0].detach(), {n: p.grad for n, p in model.named_parameters()}))
    (out, s, g), (out_ref, s_ref, g_ref) = results
    assert torch.equal(out, out_ref) and torch.equal(s, s_ref)
    for name in g_ref:
        if name.startswith("2."):  # the output layer: the same kernels
            assert torch.equal(g[name], g_ref[name]), name
        else:
            tol = 4 * (200 + 3) * UNIT[F64] * float(g_ref[name].abs().max())
            assert float((g[name] - g_ref[name]).abs().max()) <= tol, name
    assert float(g_ref["0.weight"].abs().max()) > 0


def test_output_layer_argument_errors():
    from spikescan.nn import SingleSpikeLIF
    from spikescan.nn.linear import EventLinear

    neuron = SingleSpikeLIF(5)
    x = torch.rand(10, 2, 5)
    with pytest.raises(ValueError, match="in_features = 5"):
        neuron(x, output_layer=EventLinear(4, 3))
    with pytest.raises(ValueError, match="without state or membrane"):
        neuron(x, output_layer=EventLinear(5, 3), return_state=True)
    s, y = neuron(x, output_layer=EventLinear(5, 3))  # no input layer: the two layers one after the other
    assert s.shape == (10, 2, 5) and y.shape == (10, 2, 3)
