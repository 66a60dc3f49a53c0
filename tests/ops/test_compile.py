"""torch.compile, torch.library.opcheck and autocast on the fused ops and the modules built on them.

Compiled graphs are compared with eager in float64: Inductor may reorder the float ops of the
Linear layers, which in float64 moves results by ~1e-16 relative, so spikes (membranes far
from the threshold on that scale) and gradients agree to 1e-10.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikescan.nn import LI, LIF, PLIF
from spikescan.ops import leaky_integrate, lif
from spikescan.ops.leaky.fused import leaky_fused_backward, leaky_fused_forward
from spikescan.ops.lif.fused import lif_fused_backward, lif_fused_forward

F64 = torch.float64


def _lif_inputs(T=37, N=12, dtype=torch.float32, grad=True):
    g = torch.Generator().manual_seed(T)
    x = (torch.randn(T, N, generator=g, dtype=dtype) * 0.7 + 0.3).requires_grad_(grad)
    d = (0.2 + 0.7 * torch.rand(N, generator=g, dtype=dtype)).requires_grad_(grad)
    th = (0.5 + torch.rand(N, generator=g, dtype=dtype)).requires_grad_(grad)
    vr = torch.full((N,), 0.1, dtype=dtype, requires_grad=grad)
    v0 = (0.2 * torch.randn(N, generator=g, dtype=dtype)).requires_grad_(grad)
    return x, d, th, vr, v0


@pytest.mark.parametrize("zero_reset", [False, True])
@pytest.mark.parametrize("store_v", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_opcheck_lif_forward(zero_reset, store_v, dtype):
    x, d, th, vr, v0 = _lif_inputs(dtype=dtype)
    if not zero_reset:
        vr = torch.zeros_like(vr)
    for code, param in ((0, 25.0), (1, 2.0), (2, 4.0), (3, 0.5)):
        torch.library.opcheck(lif_fused_forward, (x, d, th, vr, v0, zero_reset, False, code, param, store_v, True))


def test_opcheck_lif_backward():
    x, d, th, vr, v0 = (t.detach() for t in _lif_inputs())
    s, v, last, ck = lif_fused_forward(x, d, th, vr, v0, True, False, 0, 25.0, True, True)
    g = torch.randn_like(x)
    torch.library.opcheck(lif_fused_backward, (x, v, ck, g, g, torch.ones(12), d, th, vr, v0, True, False, 0, 25.0,
                                               True))


@pytest.mark.parametrize("T", [1, 33])
def test_opcheck_leaky(T):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(T, 9, generator=g, requires_grad=True)
    d, c, v0 = (torch.rand(9, generator=g).requires_grad_() for _ in range(3))
    torch.library.opcheck(leaky_fused_forward, (x, d, c, v0))
    u = leaky_fused_forward(x, d, c, v0).detach()
    torch.library.opcheck(leaky_fused_backward, (torch.randn(T, 9), u, x.detach(), d.detach(), c.detach(),
                                                 v0.detach(), T))


def test_double_backward_is_a_clear_error():
    x = torch.randn(20, 4, requires_grad=True)
    # the loss's gradient depends on x, so a second backward has to go through the kernel's backward
    (g,) = torch.autograd.grad((lif(x, 0.9, 0.5, backend="fused") * x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice|no autograd formula"):
        g.sum().backward()


class _Net(nn.Module):
    def __init__(self, neuron):
        super().__init__()
        self.fc1, self.neuron, self.fc2, self.readout = nn.Linear(20, 32), neuron(32), nn.Linear(32, 5), LI(5)

    def forward(self, x):
        return self.readout(self.fc2(self.neuron(self.fc1(x)))).mean(0)


NEURONS = {
    "LIF": lambda f: LIF(f, threshold=0.3),
    "LIF-subtract-learned": lambda f: LIF(f, threshold=0.3, reset="subtract", learn_tau=True, learn_threshold=True),
    "PLIF": lambda f: PLIF(f, threshold=0.3, learn_threshold=True),
    "LI-only": lambda f: LI(f),
}


@pytest.mark.parametrize("name", sorted(NEURONS))
def test_compile_fullgraph_equals_eager(name):
    torch.manual_seed(0)
    net = _Net(NEURONS[name]).to(F64)
    x = torch.rand(40, 8, 20, dtype=F64)
    eager = net(x)
    g_eager = torch.autograd.grad(eager.square().sum(), list(net.parameters()))
    compiled = torch.compile(net, fullgraph=True, backend="inductor")
    out = compiled(x)
    g_comp = torch.autograd.grad(out.square().sum(), list(net.parameters()))
    torch.testing.assert_close(out, eager, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    spikes = net.neuron(net.fc1(x))
    if name != "LI-only":
        assert 0 < spikes.mean() < 1  # the comparison covers firing neurons


def test_compiled_graph_calls_the_kernels():
    """The fused custom ops appear in the compiled graph (not a decomposition or a graph break)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("aot_eager")
    net = _Net(NEURONS["LIF"])
    torch.compile(net, fullgraph=True, backend=counter)(torch.rand(12, 2, 20))
    assert counter.frame_count == 1
    ops = {str(n.target) for g in counter.graphs for n in g.graph.nodes if n.op == "call_function"}
    assert any("lif_fused_forward" in o for o in ops) and any("leaky_fused_forward" in o for o in ops)


@pytest.mark.parametrize("backend", ["fused", "sequential"])
def test_autocast_bf16(backend):
    """Under CPU bf16 autocast the ops return bfloat16, computed in float32 (equal to the float32
    result rounded to bfloat16: a spike is exactly 0/1, the membrane rounds once)."""
    x = torch.randn(30, 4, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s, v = lif(x, 0.9, 0.5, backend=backend, return_membrane=True)
        u = leaky_integrate(x, 0.8, backend="fused" if backend == "fused" else "chunked")
    s32, v32 = lif(x, 0.9, 0.5, backend=backend, return_membrane=True)
    assert s.dtype == v.dtype == u.dtype == torch.bfloat16
    assert torch.equal(s.float(), s32) and torch.equal(v, v32.to(torch.bfloat16))
    assert torch.equal(u, leaky_integrate(x, 0.8).to(torch.bfloat16))


def test_autocast_module_trains():
    torch.manual_seed(1)
    net = _Net(NEURONS["LIF"])
    x = torch.rand(25, 4, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out.float().square().sum(), list(net.parameters()))
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert grads[0].abs().sum() > 0
