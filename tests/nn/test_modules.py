import math

import pytest
import torch
from torch import nn

from spikescan.nn import LI, LIF, PLIF, SPSN, TimeDistributed
from spikescan.ops.lif import lif
from spikescan.ops.scan import _BACKENDS


def _two_stage_loop(x, a, b):
    i = torch.zeros_like(x[0])
    u = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        i = a * i + x[t]
        u = b * u + (1 - b) * i
        out.append(u)
    return torch.stack(out)


@pytest.mark.parametrize("backend", sorted(set(_BACKENDS) | {"auto"}))
def test_spsn_membrane_matches_equations(backend):
    torch.manual_seed(0)
    x = torch.randn(50, 3, 8, dtype=torch.float64)
    layer = SPSN(8, tau_syn=0.01, tau_mem=0.03, backend=backend)
    a, b = math.exp(-1e-3 / 0.01), math.exp(-1e-3 / 0.03)
    torch.testing.assert_close(layer.membrane(x), _two_stage_loop(x, a, b), rtol=1e-6, atol=1e-8)
    li = LI(8, tau_syn=0.01, tau_mem=0.03, backend=backend)
    torch.testing.assert_close(li(x), _two_stage_loop(x, a, b), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("firing", ["sb", "gs"])
def test_spsn_spikes_binary_and_reproducible(firing):
    x = torch.randn(20, 4, 6)
    outs = []
    for _ in range(2):
        layer = SPSN(6, firing=firing, generator=torch.Generator().manual_seed(3))
        outs.append(layer(x))
    assert outs[0].shape == x.shape
    assert set(outs[0].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(outs[0], outs[1])


def test_spsn_learn_tau_gets_gradient():
    layer = SPSN(5, learn_tau=True, firing="gs", generator=torch.Generator().manual_seed(0))
    x = torch.randn(30, 2, 5) * 5
    layer(x).sum().backward()
    for p in (layer.syn.log_tau, layer.mem.log_tau):
        assert p.grad is not None and p.grad.shape == (5,) and torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0


def test_spsn_rejects_bad_input():
    layer = SPSN(4)
    with pytest.raises(ValueError, match="features"):
        layer(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="x"):
        layer(torch.randn(4))
    with pytest.raises(TypeError, match="x"):
        layer(torch.ones(5, 2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="firing"):
        SPSN(4, firing="poisson")
    with pytest.raises(ValueError, match="tau_mem"):
        SPSN(4, tau_mem=-1.0)


def test_lif_module_is_the_lif_op_on_the_scaled_current():
    torch.manual_seed(1)
    x = torch.rand(40, 3, 7) * 4
    layer = LIF(7, tau_syn=None, tau_mem=0.01, threshold=0.5, reset="subtract")
    b = math.exp(-0.1)
    expected = lif(x * (1 - b), b, 0.5, reset="subtract", surrogate=layer.surrogate, detach_reset=True)
    torch.testing.assert_close(layer(x), expected)
    assert layer(x).sum() > 0


def test_plif_learns_its_decay():
    layer = PLIF(6, tau_syn=None, tau_mem=0.005, reset="subtract", threshold=0.3)
    x = torch.rand(25, 4, 6) * 3
    layer(x).sum().backward()
    assert layer.mem.w.grad is not None and layer.mem.w.grad.abs().sum() > 0
    torch.testing.assert_close(layer.mem(), torch.full((6,), math.exp(-1e-3 / 0.005)))


def test_time_distributed_equals_per_step_loop():
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(5, 4, 2, 6, 6)
    y = TimeDistributed(conv)(x)
    torch.testing.assert_close(y, torch.stack([conv(x[t]) for t in range(5)]))
    with pytest.raises(ValueError, match="x"):
        TimeDistributed(conv)(torch.randn(3))
