"""EventLinear: a drop-in nn.Linear that runs event-driven on sparse input that needs no gradient."""

from __future__ import annotations

import pytest
import torch

from spikescan.nn import EventLinear
from spikescan.ops.events import SpikeEvents


def _pair(seed=0, **kw):
    torch.manual_seed(seed)
    ref = torch.nn.Linear(40, 9)
    torch.manual_seed(seed)
    lin = EventLinear(40, 9, **kw)
    assert torch.equal(ref.weight, lin.weight) and torch.equal(ref.bias, lin.bias)  # same init draws
    return ref, lin


@pytest.mark.parametrize("density", [0.01, 0.5])
@pytest.mark.parametrize("mode", ["auto", "events", "dense"])
def test_every_mode_equals_nn_linear(mode, density):
    ref, lin = _pair(mode=mode)
    x = (torch.rand(30, 4, 40, generator=torch.Generator().manual_seed(2)) < density).float()
    for inp in (x, SpikeEvents.from_dense(x)):
        out = lin(inp)
        gw, gb = torch.autograd.grad(out.square().sum(), [lin.weight, lin.bias])
        want = ref(x)
        gw_ref, gb_ref = torch.autograd.grad(want.square().sum(), [ref.weight, ref.bias])
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gw, gw_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gb, gb_ref, rtol=1e-5, atol=1e-5)


def test_auto_picks_events_by_density(monkeypatch):
    from spikescan.nn import linear as mod

    calls = []
    real = mod.event_linear
    monkeypatch.setattr(mod, "event_linear", lambda *a, **k: calls.append(1) or real(*a, **k))
    _, lin = _pair(density_threshold=0.1)
    sparse = (torch.rand(10, 2, 40) < 0.05).float()
    dense = torch.rand(10, 2, 40)
    lin(sparse)
    assert len(calls) == 1
    lin(dense)
    lin(sparse[0])  # not time-first [T, B, C]
    assert len(calls) == 1
    g = sparse.clone().requires_grad_()  # a hidden layer's spikes: event-driven, with their dense gradient
    lin(g).sum().backward()
    assert len(calls) == 2
    torch.testing.assert_close(g.grad, lin.weight.sum(0).expand_as(g))


def test_state_dict_is_nn_linears():
    ref, lin = _pair()
    assert set(lin.state_dict()) == set(ref.state_dict())
    lin.load_state_dict(ref.state_dict())


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="mode"):
        EventLinear(3, 2, mode="sparse")
    with pytest.raises(ValueError, match="density_threshold"):
        EventLinear(3, 2, density_threshold=2.0)
