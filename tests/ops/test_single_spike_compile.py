"""torch.library.opcheck of the FastSNN custom ops, and torch.compile(fullgraph=True) of the
FastSNN F-MNIST networks equal to eager.

The networks are the presets' own (``build_model(preset_config("fastsnn-fmnist"), 784, 10)``:
EventLinear -> SingleSpikeLIF -> EventLinear -> MaxMembraneReadout, and the ``-lif`` preset
with the exact LIF), fed a dense [T, B, 784] input (under the compiler EventLinear stays dense).
Compared in float64: Inductor may reorder the float ops of the linear layers, which moves
results by ~1e-16 relative, so the hidden spikes (membranes far from the threshold on that
scale) are identical and the gradients agree to 1e-10.
"""

from __future__ import annotations

import pytest
import torch

from spikescan.ops.events import SpikeEvents
from spikescan.ops.first_spike import max_membrane_readout, single_spike_lif, single_spike_lif_events
from spikescan.ops.single_spike.fused import (max_membrane_fused_backward, max_membrane_fused_forward,
                                              single_spike_events_fused_backward, single_spike_events_fused_forward,
                                              single_spike_events_linear_fused_backward,
                                              single_spike_events_linear_fused_forward, single_spike_fused_backward,
                                              single_spike_fused_forward)

pytest.importorskip("numba", reason="the fused FastSNN kernels on the CPU are numba")

F32, F64 = torch.float32, torch.float64
CODES = ((0, 100.0), (1, 2.0), (2, 4.0), (3, 0.5))  # fast sigmoid, atan, sigmoid, triangle


def _inputs(T=37, N=12, dtype=F32, grad=True):
    g = torch.Generator().manual_seed(T)
    x = (torch.randn(T, N, generator=g, dtype=dtype) * 0.6 + 0.15).requires_grad_(grad)
    d = (0.6 + 0.35 * torch.rand(N, generator=g, dtype=dtype)).requires_grad_(grad)
    c = (0.5 + torch.rand(N, generator=g, dtype=dtype)).requires_grad_(grad)
    th = (0.5 + 0.5 * torch.rand(N, generator=g, dtype=dtype)).requires_grad_(grad)
    v0 = (0.2 * torch.randn(N, generator=g, dtype=dtype)).requires_grad_(grad)
    return x, d, c, th, v0


@pytest.mark.parametrize("store_v", [False, True])
@pytest.mark.parametrize("straight", [False, True])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_opcheck_single_spike_forward(store_v, straight, dtype):
    x, d, c, th, v0 = _inputs(dtype=dtype)
    for code, param in CODES:
        torch.library.opcheck(single_spike_fused_forward, (x, d, c, th, v0, code, param, straight, store_v, True))
    nograd = tuple(t.detach() for t in (x, d, c, th, v0))  # need_grad=False: nothing kept for a backward
    torch.library.opcheck(single_spike_fused_forward, (*nograd, 0, 100.0, straight, store_v, False))


@pytest.mark.parametrize("T", [1, 33])
def test_opcheck_single_spike_backward(T):
    x, d, c, th, v0 = (t.detach() for t in _inputs(T=T))
    s, v, first, ck = single_spike_fused_forward(x, d, c, th, v0, 0, 100.0, False, True, True)
    g = torch.randn_like(x)
    for gv in (None, g):
        for straight in (False, True):
            torch.library.opcheck(single_spike_fused_backward,
                                  (x, v, ck, first, g, gv, d, c, th, v0, 0, 100.0, straight, True))
    torch.library.opcheck(single_spike_fused_backward,  # one row shared by every step, no parameter sums
                          (x, v, ck, first, torch.ones(1, 12).expand(T, 12), None, d, c, th, v0, 2, 4.0, False,
                           False))


@pytest.mark.parametrize("T", [1, 33])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_opcheck_max_membrane(T, dtype):
    x, d, c, _, v0 = _inputs(T=T, dtype=dtype)
    torch.library.opcheck(max_membrane_fused_forward, (x, d, c, v0, True))
    x, d, c, v0 = (t.detach() for t in (x, d, c, v0))
    torch.library.opcheck(max_membrane_fused_forward, (x, d, c, v0, False))
    mx, cnt, v, ck = max_membrane_fused_forward(x, d, c, v0, True)
    torch.library.opcheck(max_membrane_fused_backward, (x, v, ck, torch.randn(12, dtype=dtype), d, c, v0, mx, cnt,
                                                        True))


def _events_inputs(T=40, B=3, C=10, O=6, dtype=F64, values=False):
    g = torch.Generator().manual_seed(5)
    dense = (torch.rand(T, B, C, generator=g, dtype=F64) < 0.2).to(F64)
    if values:
        dense = dense * (0.2 + torch.rand(T, B, C, generator=g, dtype=F64))
    ev = SpikeEvents.from_dense(dense.to(dtype))
    vals = torch.empty(0, dtype=dtype) if ev.values is None else ev.values
    w = (torch.rand(O, C, generator=g, dtype=dtype) - 0.3).requires_grad_()
    b = (0.05 * torch.randn(O, generator=g, dtype=dtype)).requires_grad_()
    M = B * O
    d = torch.full((M,), 0.9, dtype=dtype, requires_grad=True)
    c = torch.ones(M, dtype=dtype, requires_grad=True)
    th = (0.4 + 0.4 * torch.rand(M, generator=g, dtype=dtype)).requires_grad_()
    v0 = torch.zeros(M, dtype=dtype, requires_grad=True)
    return ev, (ev.crow, ev.channels, vals, w, b, d, c, th, v0, T, B)


@pytest.mark.parametrize("values, dtype", [(False, F64), (True, F32)])  # (the kernels' numerics in both
def test_opcheck_single_spike_events(values, dtype):                    # dtypes: test_single_spike_events)
    ev, args = _events_inputs(dtype=dtype, values=values)
    # the surrogate constants and straight_through only pass through the forward (to the backward)
    for code, param, straight in ((*CODES[0], False), (*CODES[1], True)):
        torch.library.opcheck(single_spike_events_fused_forward, (*args, code, param, straight, True))
    crow, channels, vals, w, b, d, c, th, v0, T, B = (a.detach() if torch.is_tensor(a) else a for a in args)
    torch.library.opcheck(single_spike_events_fused_forward,
                          (crow, channels, vals, w, b, d, c, th, v0, T, B, 0, 100.0, False, False))
    s, ck, first = single_spike_events_fused_forward(crow, channels, vals, w, b, d, c, th, v0, T, B, 0, 100.0, False,
                                                     True)
    g = torch.randn_like(s)
    for need in ((True, True, True), (False, True, False)):
        torch.library.opcheck(single_spike_events_fused_backward,
                              (crow, channels, vals, w, b, ck, first, g, d, c, th, T, B, 0, 100.0, False, *need))


@pytest.mark.parametrize("dtype", [F32])  # (float64 numerics: test_single_spike_events_linear)
def test_opcheck_single_spike_events_linear(dtype):
    ev, args = _events_inputs(dtype=dtype)
    crow, channels, vals, w, b, d, c, th, v0, T, B = args
    g = torch.Generator().manual_seed(6)
    w2 = torch.randn(3, w.shape[0], generator=g, dtype=dtype, requires_grad=True)
    b2 = torch.randn(3, generator=g, dtype=dtype, requires_grad=True)
    head = (crow, channels, vals, w, b, w2, b2, d, c, th, v0, T, B)
    for code, param, straight in ((*CODES[0], False), (*CODES[1], True)):
        torch.library.opcheck(single_spike_events_linear_fused_forward, (*head, code, param, straight, True))
    plain = tuple(a.detach() if torch.is_tensor(a) else a for a in head)
    torch.library.opcheck(single_spike_events_linear_fused_forward, (*plain, 0, 100.0, False, False))
    s, y, ck, first = single_spike_events_linear_fused_forward(*plain, 0, 100.0, False, True)
    crow, channels, vals, w, b, w2, b2, d, c, th, v0, T, B = plain
    gs, gy = torch.randn_like(s), torch.randn_like(y)
    for need in ((True, True, True, True, True, True), (False, False, True, False, False, False)):
        torch.library.opcheck(single_spike_events_linear_fused_backward,
                              (crow, channels, vals, w, b, w2, ck, first, gs, gy, d, c, th, T, B, 0, 100.0, False,
                               *need))


def test_backward_without_saved_state_is_a_clear_error():
    x, d, c, th, v0 = _inputs()
    s, *_ = single_spike_fused_forward(x, d, c, th, v0, 0, 100.0, False, False, False)
    with pytest.raises(RuntimeError, match="ran with need_grad=False"):
        s.sum().backward()


def test_double_backward_is_a_clear_error():
    x = torch.randn(20, 4, dtype=F64, requires_grad=True)
    # the losses' gradients depend on x, so a second backward goes through the kernels' backward
    (g,) = torch.autograd.grad((single_spike_lif(x, 0.9, 0.5, backend="fused") * x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice|no autograd formula"):
        g.sum().backward()
    (g,) = torch.autograd.grad(max_membrane_readout(x, 0.9, backend="fused").square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice|no autograd formula"):
        g.sum().backward()


# --------------------------------------------------------------------------------------------
# torch.compile of the FastSNN F-MNIST networks
# --------------------------------------------------------------------------------------------


def _network(preset: str, dtype=F64):
    from spikescan.train.loop import build_model
    from spikescan.train.presets import preset_config

    torch.manual_seed(0)
    net = build_model(preset_config(preset), 784, 10).to(dtype)
    hidden = net[1]
    if getattr(hidden, "input_scale", 1.0) == "one_minus_decay":
        # the preset's (1 - beta) input factor leaves the fresh network silent on this input:
        # undo it in the weights, so that the compiled graph is compared on firing neurons
        with torch.no_grad():
            net[0].weight.div_(1.0 - float(hidden.mem()))
    return net


def _dense_input(T=100, B=8, dtype=F64):
    g = torch.Generator().manual_seed(1)
    return (torch.rand(T, B, 784, generator=g, dtype=F64) < 0.05).to(dtype)


@pytest.mark.parametrize("preset", ["fastsnn-fmnist", "fastsnn-fmnist-lif"])
def test_compile_fullgraph_fastsnn_fmnist_equals_eager(preset):
    net = _network(preset)
    x = _dense_input()
    hidden = []
    hook = net[1].register_forward_hook(lambda module, args, out: hidden.append(out.detach()))
    try:
        eager = net(x)
        g_eager = torch.autograd.grad(eager.square().sum(), list(net.parameters()))
        compiled = torch.compile(net, fullgraph=True, backend="inductor")  # fullgraph: any graph break raises
        out = compiled(x)
        g_comp = torch.autograd.grad(out.square().sum(), list(net.parameters()))
    finally:
        hook.remove()
    s_eager, s_comp = hidden
    assert torch.equal(s_comp, s_eager)
    assert 0 < float(s_eager.mean()) < 1  # the comparison covers firing neurons
    torch.testing.assert_close(out, eager, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_comp, g_eager):
        assert float(b.abs().max()) > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * float(b.abs().max()))


@pytest.mark.parametrize("preset, expect", [("fastsnn-fmnist", "single_spike_fused_forward"),
                                            ("fastsnn-fmnist-lif", "lif_fused_forward")])
def test_compiled_graph_calls_the_kernels(preset, expect):
    """The custom ops appear in the one compiled graph (no decomposition, no graph break)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("aot_eager")
    net = _network(preset, F32)
    out = torch.compile(net, fullgraph=True, backend=counter)(_dense_input(T=20, B=2, dtype=F32))
    out.sum().backward()
    assert counter.frame_count == 1
    ops = {str(n.target) for g in counter.graphs for n in g.graph.nodes if n.op == "call_function"}
    assert any(expect in o for o in ops) and any("max_membrane_fused_forward" in o for o in ops)


def test_compile_events_layer_equals_eager():
    """The events-fed op compiles too (the CSR arrays are tensor inputs of its custom op)."""
    ev, args = _events_inputs()
    w, b = args[3], args[4]

    def layer(crow, channels, weight, bias):
        events = SpikeEvents(crow, channels, ev.shape, dtype=ev.dtype, check=False)
        return single_spike_lif_events(events, weight, bias, 0.9, 0.6, scale=1.0)

    eager = layer(ev.crow, ev.channels, w, b)
    g_eager = torch.autograd.grad((eager * torch.arange(eager.numel()).view_as(eager)).sum(), [w, b])
    out = torch.compile(layer, fullgraph=True, backend="aot_eager")(ev.crow, ev.channels, w, b)
    g_comp = torch.autograd.grad((out * torch.arange(out.numel()).view_as(out)).sum(), [w, b])
    assert torch.equal(out, eager) and 0 < float(eager.detach().sum())
    for a, b_ in zip(g_comp, g_eager):
        assert torch.equal(a, b_)


def test_compile_events_linear_layer_equals_eager():
    """... and so does the op with the linear layer its spikes feed."""
    ev, args = _events_inputs()
    w, b = args[3], args[4]
    w2 = torch.randn(3, w.shape[0], generator=torch.Generator().manual_seed(2), dtype=w.dtype, requires_grad=True)

    def layers(crow, channels, weight, bias, out_weight):
        events = SpikeEvents(crow, channels, ev.shape, dtype=ev.dtype, check=False)
        return single_spike_lif_events(events, weight, bias, 0.9, 0.6, scale=1.0, out_weight=out_weight)[1]

    eager = layers(ev.crow, ev.channels, w, b, w2)
    g_eager = torch.autograd.grad(eager.square().sum(), [w, b, w2])
    out = torch.compile(layers, fullgraph=True, backend="aot_eager")(ev.crow, ev.channels, w, b, w2)
    g_comp = torch.autograd.grad(out.square().sum(), [w, b, w2])
    assert torch.equal(out, eager) and 0 < float(g_eager[0].abs().sum())
    for a, b_ in zip(g_comp, g_eager):
        assert torch.equal(a, b_)


@pytest.mark.parametrize("backend", ["fused", "sequential"])
def test_autocast_bf16(backend):
    """Under CPU bf16 autocast the ops return bfloat16, computed in float32."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 4, 6, generator=g) * 0.5 + 0.2
    ref_s = single_spike_lif(x, 0.9, 0.5, backend=backend)
    ref_m = max_membrane_readout(x, 0.9, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = single_spike_lif(x, 0.9, 0.5, backend=backend)
        m = max_membrane_readout(x, 0.9, backend=backend)
    assert s.dtype == m.dtype == torch.bfloat16
    assert torch.equal(s, ref_s.to(torch.bfloat16)) and torch.equal(m, ref_m.to(torch.bfloat16))
