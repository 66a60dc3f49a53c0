"""SingleSpikeLIF and MaxMembraneReadout modules."""

import math

import pytest
import torch
from torch import nn

from spikescan.nn.single_spike import MaxMembraneReadout, SingleSpikeLIF
from spikescan.ops.first_spike import _single_spike_lif_sequential
from spikescan.ops import leaky_integrate

F64 = torch.float64


@pytest.mark.parametrize("input_scale", ["one_minus_decay", 1.0])
def test_single_spike_lif_matches_reference(input_scale):
    torch.manual_seed(0)
    m = SingleSpikeLIF(20, tau=0.01, dt=1e-3, input_scale=input_scale).double()
    x = 3.0 * torch.rand(100, 8, 20, dtype=F64) * (1.0 if input_scale != 1.0 else 0.1)
    s = m(x)
    b = math.exp(-0.1)
    s_ref, _ = _single_spike_lif_sequential(x, b, 1.0, scale=None if input_scale != 1.0 else 1.0)
    assert torch.equal(s, s_ref)
    assert s.sum(0).max() <= 1 and s.sum() > 0


def test_learn_tau_gets_gradient_and_network_trains():
    torch.manual_seed(0)
    T, B = 40, 16
    net_in = nn.Linear(10, 30)
    hidden = SingleSpikeLIF(30, learn_tau=True)
    net_out = nn.Linear(30, 3)
    readout = MaxMembraneReadout(3)
    params = [*net_in.parameters(), *hidden.parameters(), *net_out.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    x = (torch.rand(T, B, 10) < 0.3).float() * 4.0
    y = torch.randint(0, 3, (B,))
    losses = []
    for _ in range(15):
        opt.zero_grad()
        logits = readout(net_out(hidden(net_in(x))))
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    assert hidden.mem.log_tau.grad is not None and net_in.weight.grad.abs().sum() > 0
    assert losses[-1] < losses[0]


def test_readout_is_max_of_leaky_membrane():
    r = MaxMembraneReadout(4, tau=0.02, dt=1e-3)
    x = torch.randn(30, 2, 4)
    b = math.exp(-1e-3 / 0.02)
    torch.testing.assert_close(r(x), leaky_integrate(x, b, scale=1 - b).amax(0))
    assert r(x).shape == (2, 4)


def test_bad_inputs():
    with pytest.raises(ValueError, match="x must have 5 features"):
        SingleSpikeLIF(5)(torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="threshold must be"):
        SingleSpikeLIF(5, threshold=0.0)
    with pytest.raises(ValueError, match="input_scale must be"):
        SingleSpikeLIF(5, input_scale="code")
    with pytest.raises(ValueError, match="tau must be"):
        SingleSpikeLIF(5, tau=-1.0)
    with pytest.raises(ValueError, match="x must have 3 features"):
        MaxMembraneReadout(3)(torch.randn(3, 2, 4))
