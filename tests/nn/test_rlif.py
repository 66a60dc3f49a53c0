"""spikescan.nn.RLIF: the recurrent LIF layer (sequential loop with spike feedback)."""

from __future__ import annotations

import math

import pytest
import torch

from spikescan.nn import LIF, RLIF
from spikescan.nn.state import LIFState, RLIFState
from spikescan.ops.lif import lif
from spikescan.ops import leaky_integrate
from spikescan.surrogate import FastSigmoid, Triangle

F64 = torch.float64


def _zero_recurrent(layer: RLIF) -> RLIF:
    with torch.no_grad():
        layer.recurrent.weight.zero_()
    return layer


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("tau_syn", [None, 0.004])
def test_zero_recurrent_weight_is_lif(reset, tau_syn):
    """W_rec = 0: the layer is LIF, i.e. ops.lif on the (1 - b)-scaled synaptic current."""
    torch.manual_seed(0)
    x = torch.rand(60, 3, 5) * 3
    v0 = 0.2 * torch.rand(3, 5)
    kw = dict(tau_syn=tau_syn, tau_mem=0.01, threshold=0.6, reset=reset, v_reset=0.0, detach_reset=True,
              input_scale="one_minus_decay")
    layer = _zero_recurrent(RLIF(5, **kw))
    s, v = layer(x, RLIFState(None, v0, None), return_membrane=True)
    b = math.exp(-0.1)
    current = x if tau_syn is None else leaky_integrate(x, math.exp(-1e-3 / tau_syn), backend="sequential")
    s_ref, v_ref = lif(current * (1 - b), b, 0.6, reset=reset, v0=v0, surrogate=layer.surrogate,
                       detach_reset=True, backend="sequential", return_membrane=True)
    assert torch.equal(s, s_ref) and 0 < float(s.detach().mean()) < 1
    torch.testing.assert_close(v, v_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s, LIF(5, **kw)(x, LIFState(None, v0)))


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_zero_recurrent_weight_gradients_match_lif(reset):
    torch.manual_seed(1)
    x = (torch.rand(40, 2, 4) * 3).requires_grad_()
    kw = dict(tau_syn=None, tau_mem=0.01, threshold=0.5, reset=reset, detach_reset=False, learn_threshold=True)
    rl = _zero_recurrent(RLIF(4, **kw))
    li = LIF(4, **kw, backend="sequential")
    w = torch.randn(40, 2, 4)
    (gx_r, gth_r) = torch.autograd.grad((rl(x) * w).sum(), [x, rl.threshold])
    (gx_l, gth_l) = torch.autograd.grad((li(x) * w).sum(), [x, li.threshold])
    torch.testing.assert_close(gx_r, gx_l, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gth_r, gth_l, rtol=1e-5, atol=1e-6)


def test_recurrent_path_matters():
    """A nonzero W_rec changes the output, and the spike feedback equals the equation by hand."""
    # float64: the loop below multiplies by W in another order than nn.Linear (BLAS), and in
    # float32 a near-tie membrane could flip a spike on some hosts
    torch.manual_seed(2)
    x = torch.rand(50, 2, 6, dtype=torch.float64) * 2.5
    kw = dict(tau_syn=None, tau_mem=0.005, threshold=0.4, reset="subtract", input_scale="one_minus_decay")
    layer = RLIF(6, **kw).double()
    with torch.no_grad():
        layer.recurrent.weight.copy_(torch.randn(6, 6))
    s = layer(x)
    s0 = _zero_recurrent(RLIF(6, **kw))(x)
    assert not torch.equal(s, s0)
    # independent loop of the module docstring's equations
    b = math.exp(-0.2)
    W = layer.recurrent.weight
    v_post, prev, out = torch.zeros(2, 6, dtype=x.dtype), torch.zeros(2, 6, dtype=x.dtype), []
    for t in range(50):
        v = b * v_post + (x[t] + prev @ W.T) * (1 - b)
        prev = (v >= 0.4).to(x.dtype)
        v_post = v - 0.4 * prev
        out.append(prev)
    torch.testing.assert_close(s, torch.stack(out))


def test_recurrent_weight_gets_gradient_through_spikes():
    torch.manual_seed(3)
    layer = RLIF(5, tau_syn=0.005, tau_mem=0.005, threshold=0.3, learn_tau=True,
                 surrogate=FastSigmoid(10.0), recurrent_bias=True)
    layer(torch.rand(30, 4, 5) * 3).sum().backward()
    for p in (layer.recurrent.weight, layer.recurrent.bias, layer.mem.log_tau):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_gradcheck_float64(reset, detach_reset):
    """Gradcheck on the membrane: a triangle surrogate narrower than every |v - threshold| makes
    the surrogate derivative equal the step's true one (zero), so finite differences check the
    whole graph exactly -- leak, resets, threshold, v0 and W_rec (through the fixed spikes)."""
    g = torch.Generator().manual_seed(4)
    T, B, F = 6, 2, 3
    layer = RLIF(F, tau_syn=0.004, tau_mem=0.003, threshold=0.5, reset=reset, v_reset=0.0,
                 surrogate=Triangle(width=1e-3), detach_reset=detach_reset, learn_tau=True,
                 learn_threshold=True, input_scale="one_minus_decay").double()
    with torch.no_grad():
        layer.recurrent.weight.copy_(0.5 * torch.randn(F, F, generator=g, dtype=F64))
    x = (torch.rand(T, B, F, generator=g, dtype=F64) * 2.5).requires_grad_()
    v0 = (0.3 * torch.rand(B, F, generator=g, dtype=F64)).requires_grad_()
    s, v = layer(x, RLIFState(None, v0, None), return_membrane=True)
    assert float((v - layer.threshold).detach().abs().min()) > 1e-2 and 0 < float(s.detach().mean()) < 1
    assert float(s[:-1].detach().sum()) > 0  # some spike feeds back
    names = ("recurrent.weight", "threshold", "mem.log_tau")  # LIF learns only the membrane tau
    params = [dict(layer.named_parameters())[n].detach().clone().requires_grad_() for n in names]

    def f(x, v0, *p):  # the layer with its parameters replaced by gradcheck's perturbed copies
        _, v = torch.func.functional_call(layer, dict(zip(names, p)), (x, RLIFState(None, v0, None)),
                                          {"return_membrane": True})
        return v

    assert torch.autograd.gradcheck(f, (x, v0, *params), eps=1e-6, atol=1e-8)


def test_bad_input():
    layer = RLIF(4)
    with pytest.raises(ValueError, match="features"):
        layer(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="x"):
        layer(torch.randn(4))
    with pytest.raises(TypeError, match="x"):
        layer(torch.ones(5, 2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="state.v"):
        layer(torch.randn(5, 2, 4), RLIFState(None, torch.zeros(3), None))
    with pytest.raises(ValueError, match="state.v"):
        layer(torch.randn(5, 2, 4), RLIFState(None, torch.full((4,), float("nan")), None))
    with pytest.raises(ValueError, match="reset"):
        RLIF(4, reset="hard")
    with pytest.raises(ValueError, match="threshold"):
        RLIF(4, threshold=0.0)
    with pytest.raises(ValueError, match="tau_mem"):
        RLIF(4, tau_mem=-1.0)
    with pytest.raises(ValueError, match="input_scale"):
        RLIF(4, input_scale="none")
    learn = RLIF(4, learn_threshold=True)
    with torch.no_grad():
        learn.threshold.fill_(-1.0)
    with pytest.raises(ValueError, match="threshold"):
        learn(torch.randn(5, 2, 4))
