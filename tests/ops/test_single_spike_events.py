"""The single-spike LIF fed by events, input layer fused into the kernel
(``single_spike_lif_events``), against

* the composition of the two numba kernels, ``single_spike_lif(event_linear(x, W, b,
  backend="numba"), ..., backend="fused")``: the fused op performs the same floating-point
  operations in the same order (the current of a row is the bias plus the weight columns of its
  events in CSR order; the neuron steps are the same kernels; IEEE arithmetic, no fast-math, no
  FMA contraction), so spikes and the gradients of the weight and the neuron parameters are equal
  bit for bit on any host.  The bias gradient is summed in another order (each neuron's ``gI``
  over time in the compute dtype, then over samples in float64, where the composition sums
  ``gI`` over ``T B`` rows in torch's order): two orders of one sum of ``n`` terms differ by at
  most ``2 (n - 1) u sum |terms|`` (Higham, Accuracy and Stability, eq. 4.4), ``n = T + B``.
* the sequential reference (dense ``F.linear`` and ``single_spike_lif(backend="sequential")``,
  autograd through the paper's equations) in float64, to 1e-10 of the largest entry.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikescan.nn import SingleSpikeLIF
from spikescan.nn.linear import EventLinear
from spikescan.ops.events import SpikeEvents, event_linear
from spikescan.ops.first_spike import single_spike_lif, single_spike_lif_events
from spikescan.surrogate import ATan, FastSigmoid, Triangle

pytest.importorskip("numba", reason="the fused events kernel is numba")

F32, F64 = torch.float32, torch.float64
UNIT = {F32: 2.0**-24, F64: 2.0**-53}


def make_case(T, B, C, O, dtype, *, density=0.05, decay=0.9, values=False, bias=True, v0=True, scale="code",
              seed=0):
    """Events at random (t, b, c) cells and weights that bring the neurons near the threshold, so
    that some fire early, some late and some never; per-neuron decays and thresholds."""
    g = torch.Generator().manual_seed(seed)
    dense = (torch.rand(T, B, C, generator=g, dtype=F64) < density).to(F64)
    if values:
        dense = dense * (0.2 + torch.rand(T, B, C, generator=g, dtype=F64))
    ev = SpikeEvents.from_dense(dense.to(dtype))
    per_step = max(density * C, 1e-3)
    w = (torch.rand(O, C, generator=g, dtype=F64) * 2 - 0.6) * (3.0 / per_step) * (1 - min(decay, 0.95))
    leaves = dict(weight=w,
                  bias=(0.05 * torch.randn(O, generator=g, dtype=F64)) if bias else None,
                  decay=(torch.full((O,), float(decay), dtype=F64) * (1 if decay in (0.0, 1.0) else
                         (0.97 + 0.03 * torch.rand(O, generator=g, dtype=F64)))).clamp(0, 1),
                  threshold=0.6 + 0.6 * torch.rand(O, generator=g, dtype=F64),
                  scale=1.0 if scale == "code" else (None if scale == "paper" else
                                                      0.5 + torch.rand(O, generator=g, dtype=F64)),
                  v0=(0.3 * torch.randn(B, O, generator=g, dtype=F64)) if v0 else None)
    case = {k: (t.to(dtype).requires_grad_() if torch.is_tensor(t) else t) for k, t in leaves.items()}
    if scale == "paper":  # the (1 - decay) factor shrinks the current: scale the weights back up
        case["weight"] = (w / (1 - min(decay, 0.95))).to(dtype).requires_grad_()
    return ev, case


def leaves_of(case):
    return {k: t for k, t in case.items() if torch.is_tensor(t) and t.requires_grad}


def leaf_grads(case, loss):
    """The gradient of ``loss`` for every leaf of ``case`` (None where it does not reach)."""
    names = list(leaves_of(case))
    return dict(zip(names, torch.autograd.grad(loss, [case[k] for k in names], allow_unused=True)))


def run(ev, case, how, *, gs=None, surrogate=None, straight=False):
    """Spikes, gradients of every leaf of ``<gs, s>`` (``s.sum()`` when ``gs`` is None), and for the
    composition also ``gI`` (the current's gradient)."""
    c = {k: (t.detach().clone().requires_grad_() if torch.is_tensor(t) else t) for k, t in case.items()}
    kw = dict(scale=c["scale"], v0=c["v0"], surrogate=surrogate, straight_through=straight)
    gI = None
    if how == "fused":
        s = single_spike_lif_events(ev, c["weight"], c["bias"], c["decay"], c["threshold"], **kw)
    elif how == "composed":
        current = event_linear(ev, c["weight"], c["bias"], backend="numba")
        current.retain_grad()
        s = single_spike_lif(current, c["decay"], c["threshold"], backend="fused", **kw)
    else:  # the sequential reference, through a dense Linear
        current = F.linear(ev.dense().to(c["weight"].dtype), c["weight"], c["bias"])
        s = single_spike_lif(current, c["decay"], c["threshold"], backend="sequential", **kw)
    loss = s.sum() if gs is None else (s * gs).sum()
    names = list(leaves_of(c))
    loss.backward()
    grads = {k: c[k].grad for k in names}
    if how == "composed":
        gI = current.grad
    return s.detach(), grads, gI


def incoming(T, B, O, dtype, seed=3):
    return torch.randn(T, B, O, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def check_against_composed(ev, case, dtype, *, gs="random", **kw):
    T, B, _ = ev.shape
    O = case["weight"].shape[0]
    g = incoming(T, B, O, dtype) if gs == "random" else None
    s, grads, _ = run(ev, case, "fused", gs=g, **kw)
    s_ref, ref, gI = run(ev, case, "composed", gs=g, **kw)
    assert torch.equal(s, s_ref)
    assert set(grads) == set(ref)
    for k in ref:
        if k == "bias":
            # two summation orders of the T B terms gI[t, b, j] (module docstring)
            tol = 2 * (T + B) * UNIT[dtype] * gI.double().abs().sum((0, 1))
            assert bool(((grads[k].double() - ref[k].double()).abs() <= tol).all()), k
        else:
            assert torch.equal(grads[k], ref[k]), (k, float((grads[k] - ref[k]).abs().max()))
    return s


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("T, B, C, O", [(1, 3, 5, 7), (2, 2, 9, 4), (5, 4, 11, 17), (31, 2, 33, 8), (32, 3, 20, 33),
                                        (33, 5, 16, 16), (97, 3, 40, 21), (300, 4, 34, 200)])
def test_equal_to_composition(dtype, T, B, C, O):
    ev, case = make_case(T, B, C, O, dtype, density=min(0.3, 3.0 / T + 0.02), seed=T + O)
    s = check_against_composed(ev, case, dtype)
    if T >= 31:  # the case is not degenerate: some neurons fire, some stay silent
        fired = s.sum(0)
        assert bool((fired > 0).any()) and bool((fired == 0).any())


@pytest.mark.parametrize("decay", [0.0, 1e-6, 0.5, 0.999999, 1.0])
@pytest.mark.parametrize("scale", ["code", "paper", "tensor"])
def test_decays_near_0_and_1(decay, scale):
    ev, case = make_case(40, 3, 12, 9, F64, decay=decay, scale=scale, seed=11)
    check_against_composed(ev, case, F64)


@pytest.mark.parametrize("values", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("v0", [False, True])
def test_values_bias_state(values, bias, v0):
    ev, case = make_case(50, 3, 14, 10, F32, values=values, bias=bias, v0=v0, seed=5)
    check_against_composed(ev, case, F32)


@pytest.mark.parametrize("straight", [False, True])
@pytest.mark.parametrize("surrogate", [FastSigmoid(100.0), ATan(2.0), Triangle(0.5)], ids=repr)
def test_surrogates_and_straight_through(straight, surrogate):
    ev, case = make_case(60, 2, 10, 12, F64, seed=2)
    check_against_composed(ev, case, F64, surrogate=surrogate, straight=straight)


@pytest.mark.parametrize("one_sample_blocks", [False, True])
@pytest.mark.parametrize("last", [0, 1, 17, 33, 40, 64])  # 33: the last gradient on a segment's first step
def test_incoming_gradient_ending_early(last, one_sample_blocks, monkeypatch):
    """As from a max-membrane readout: no incoming gradient after each sample's step ``last_b``
    (the kernel starts its reverse sweep there), some samples none at all; a NaN in a late step
    of a silent neuron must still reach the result, as in the composition."""
    T, B, O = 70, 6, 9
    if one_sample_blocks:  # the sweep's start is per block of samples
        from spikescan.ops.single_spike import numba_kernels as SF

        monkeypatch.setattr(SF, "_EVENTS_BACKWARD_BLOCK", O)
    ev, case = make_case(T, B, 10, O, F64, seed=last)
    with torch.no_grad():
        case["threshold"][2] = 1e6  # neuron 2 never fires
    g = incoming(T, B, O, F64)
    ends = torch.tensor([last, 0, max(last - 5, 0), T, 3, last])
    g = torch.where(torch.arange(T)[:, None, None] < ends[None, :, None], g, torch.zeros(()))
    s, grads, _ = run(ev, case, "fused", gs=g)
    s_ref, ref, _ = run(ev, case, "composed", gs=g)
    assert torch.equal(s, s_ref)
    for k in ref:
        tol = 1e-12 * max(float(ref[k].abs().max()), 1e-300) if k == "bias" else 0.0
        assert float((grads[k] - ref[k]).abs().max()) <= tol, k
    g[T - 1, 1, 2] = float("nan")  # sample 1 had no gradient at all
    _, grads, _ = run(ev, case, "fused", gs=g)
    _, ref, _ = run(ev, case, "composed", gs=g)
    assert bool(grads["weight"].isnan().any())
    for k in ref:
        assert torch.equal(grads[k].isnan(), ref[k].isnan()), k


def test_gradient_broadcast_over_time():
    """``s.sum()``: the incoming gradient is one row broadcast over time (the kernel's one-row path)."""
    ev, case = make_case(45, 3, 10, 9, F32, seed=8)
    check_against_composed(ev, case, F32, gs=None)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_sequential_reference_float64(dtype):
    """Against autograd through the paper's equations (dense Linear, sequential loop); float64."""
    ev, case = make_case(120, 4, 25, 30, F64, seed=21)
    g = incoming(120, 4, 30, F64)
    s, grads, _ = run(ev, case, "fused", gs=g)
    s_ref, ref, _ = run(ev, case, "sequential", gs=g)
    assert torch.equal(s, s_ref)
    for k in ref:
        scale = float(ref[k].abs().max())
        assert float((grads[k] - ref[k]).abs().max()) <= 1e-10 * max(scale, 1e-300), k


def test_blocks_threads_and_empty_rows():
    """Many samples (several forward and backward blocks, split over 2 threads), long stretches
    of rows without events: equal to the one-thread call bit for bit and to the composition."""
    T, B, C, O = 70, 40, 30, 120  # 4800 neurons: more than one forward block (4096) and 5 backward blocks
    ev, case = make_case(T, B, C, O, F32, density=0.01, seed=13)
    g = incoming(T, B, O, F32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        s1, g1, _ = run(ev, case, "fused", gs=g)
        torch.set_num_threads(2)
        s2, g2, _ = run(ev, case, "fused", gs=g)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(s1, s2)
    for k in g1:
        assert torch.equal(g1[k], g2[k]), k
    check_against_composed(ev, case, F32)


@pytest.mark.parametrize("T,B,O", [(1, 1, 1), (7, 3, 5), (50, 9, 33)])
def test_recorded_spike_events_equal_from_dense(T, B, O):
    """The events the kernels record for the single spikes (one counting sort over the
    first-spike times, T meaning none) are those from_dense finds in the dense spikes, CSR order
    included (a following event layer sums a row's events in that order)."""
    from spikescan.ops.events import known_events
    from spikescan.ops.single_spike.fused import _spike_events, _with_events

    g = torch.Generator().manual_seed(T * 100 + B * 10 + O)
    first = torch.randint(0, T + 1, (B * O,), generator=g, dtype=torch.int32)
    dense = torch.zeros(T, B * O)
    fired = (first < T).nonzero().squeeze(1)
    dense[first[fired].long(), fired] = 1
    dense = dense.view(T, B, O)
    want = SpikeEvents.from_dense(dense)
    for ev in (_spike_events(first, T, B, O, torch.float32), known_events(_with_events(dense.clone(), first))):
        assert ev.shape == (T, B, O) and ev.values is None
        assert torch.equal(ev.crow, want.crow) and torch.equal(ev.channels, want.channels)
        assert torch.equal(ev.dense(), dense)


def test_no_events_and_empty_batch():
    ev, case = make_case(20, 3, 6, 5, F64, density=0.0, seed=1)
    assert ev.channels.numel() == 0
    check_against_composed(ev, case, F64)
    ev0 = SpikeEvents.from_dense(torch.zeros(9, 0, 6))
    w = torch.randn(5, 6, requires_grad=True)
    b = torch.zeros(5, requires_grad=True)
    s = single_spike_lif_events(ev0, w, b, torch.full((5,), 0.9), 1.0)
    assert s.shape == (9, 0, 5)
    gw, gb = torch.autograd.grad(s.sum(), [w, b], allow_unused=True)
    assert gw is None or not bool(gw.any())


def test_bad_input():
    ev, case = make_case(10, 2, 6, 5, F32)
    w = case["weight"].detach()
    with pytest.raises(TypeError, match="SpikeEvents"):
        single_spike_lif_events(ev.dense(), w, None, 0.9)
    with pytest.raises(ValueError, match="input features"):
        single_spike_lif_events(ev, torch.randn(5, 7), None, 0.9)
    with pytest.raises(ValueError, match="bias"):
        single_spike_lif_events(ev, w, torch.zeros(4), 0.9)
    with pytest.raises(ValueError, match="membrane"):
        single_spike_lif_events(ev, w, None, 0.9, return_membrane=True)
    from spikescan._checks import debug_mode

    with debug_mode(), pytest.raises(ValueError, match="weight contains non-finite"):
        single_spike_lif_events(ev, w.clone().fill_(float("nan")), None, 0.9)
    with pytest.raises(ValueError, match="on meta"):
        single_spike_lif_events(ev, torch.empty(5, 6, device="meta"), None, 0.9)


# --------------------------------------------------------------------------------------------
# the layer: SingleSpikeLIF(x, input_layer=EventLinear)
# --------------------------------------------------------------------------------------------


def test_layer_pair_fuses_and_equals_composition(monkeypatch):
    torch.manual_seed(0)
    lin = EventLinear(12, 9, density_threshold=1.0).double()  # the case's 5 % density runs as events
    neuron = SingleSpikeLIF(9, tau=0.01, input_scale=1.0)
    with torch.no_grad():
        lin.weight.mul_(6.0)
    ev, _ = make_case(60, 3, 12, 9, F64, seed=4)
    import spikescan.nn.single_spike as mod

    calls = []
    real = mod.single_spike_lif_events
    monkeypatch.setattr(mod, "single_spike_lif_events", lambda *a, **k: calls.append(1) or real(*a, **k))
    s = neuron(ev, input_layer=lin)
    assert calls, "events into EventLinear -> SingleSpikeLIF should take the fused kernel"
    gw, gb = torch.autograd.grad((s * incoming(60, 3, 9, F64)).sum(), [lin.weight, lin.bias])
    s_ref = neuron(lin(ev))
    gw_ref, gb_ref = torch.autograd.grad((s_ref * incoming(60, 3, 9, F64)).sum(), [lin.weight, lin.bias])
    assert torch.equal(s, s_ref) and torch.equal(gw, gw_ref)
    assert torch.allclose(gb, gb_ref, rtol=0, atol=1e-12 * max(float(gb_ref.abs().max()), 1.0))
    # not fused: dense layer mode, a membrane asked for, a dense input -- the composition, same result
    calls.clear()
    lin.mode = "dense"
    assert torch.equal(neuron(ev, input_layer=lin), s_ref) and not calls
    lin.mode = "auto"
    s2, v2 = neuron(ev, return_membrane=True, input_layer=lin)
    assert torch.equal(s2, s_ref) and not calls
    assert torch.equal(neuron(ev.dense().double(), input_layer=lin), s_ref) and not calls
    with pytest.raises(ValueError, match="out_features"):
        neuron(ev, input_layer=EventLinear(12, 8).double())
    lin.density_threshold = 0.01  # too dense for auto: densified, the composition
    assert torch.equal(neuron(ev, input_layer=lin), s_ref) and not calls


def test_feedforward_network_events_equal_dense(monkeypatch):
    """FastSNN's network on events (fused first pair) equals the same network on the dense tensor."""
    import spikescan.nn.single_spike as mod
    from spikescan.train.models import FeedForwardSNN

    calls = []
    real = mod.single_spike_lif_events
    monkeypatch.setattr(mod, "single_spike_lif_events", lambda *a, **k: calls.append(1) or real(*a, **k))

    torch.manual_seed(1)
    net = FeedForwardSNN(16, [20], 4, "single-spike", readout_layer="max-membrane", bias_init="zero",
                         neuron_kwargs={"input_scale": 1.0}, readout_kwargs={"input_scale": 1.0}).double()
    with torch.no_grad():
        net[0].weight.mul_(8.0)
    net[0].density_threshold = 1.0
    ev, _ = make_case(80, 5, 16, 20, F64, density=0.05, seed=6)
    out = net(ev)
    assert calls
    grads = torch.autograd.grad(out.square().sum(), list(net.parameters()))
    out_ref = net(ev.dense().double())
    ref = torch.autograd.grad(out_ref.square().sum(), list(net.parameters()))
    assert torch.allclose(out, out_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12 * max(float(b.abs().max()), 1.0))
