import math

import pytest
import torch
from torch import nn

from spikescan.nn import LI, LIF, PLIF, SPSN, TimeDistributed
from spikescan.ops import spsn as fused
from spikescan.ops.firing import gumbel_spike, sigmoid_bernoulli
from spikescan.ops.lif import lif
from spikescan.ops import backends


def _two_stage_loop(x, a, b):
    i = torch.zeros_like(x[0])
    u = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        i = a * i + x[t]
        u = b * u + (1 - b) * i
        out.append(u)
    return torch.stack(out)


@pytest.mark.parametrize("backend", sorted(set(backends("leaky_integrate")) | {"auto"}))
def test_spsn_membrane_matches_equations(backend):
    torch.manual_seed(0)
    x = torch.randn(50, 3, 8, dtype=torch.float64)
    layer = SPSN(8, tau_syn=0.01, tau_mem=0.03, backend=backend)
    a, b = math.exp(-1e-3 / 0.01), math.exp(-1e-3 / 0.03)
    torch.testing.assert_close(layer.membrane(x), _two_stage_loop(x, a, b), rtol=1e-6, atol=1e-8)
    li = LI(8, tau_syn=0.01, tau_mem=0.03, backend=backend, input_scale="one_minus_decay")
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
    layer = LIF(7, tau_syn=None, tau_mem=0.01, threshold=0.5, reset="subtract", input_scale="one_minus_decay",
                detach_reset=True)
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


@pytest.mark.parametrize("cls", [LIF, PLIF])
def test_lif_modules_default_to_the_fused_kernel(cls, backend_patch):
    """backend="auto" runs ops.lif's fused kernel on the CPU; same spikes and gradients as the loop."""
    calls = backend_patch.count_calls("lif", "fused")
    torch.manual_seed(4)
    x = (torch.rand(50, 3, 6) * 3).requires_grad_()
    kw = dict(tau_syn=0.004, tau_mem=0.005, threshold=0.4, learn_threshold=True)
    fast = cls(6, **kw)
    slow = cls(6, **kw, backend="sequential")
    slow.load_state_dict(fast.state_dict())
    s_fast, s_slow = fast(x), slow(x)
    assert calls == [1] and torch.equal(s_fast, s_slow) and 0 < float(s_fast.detach().mean()) < 1
    params = [x, fast.threshold] + ([fast.mem.w] if cls is PLIF else [])
    params_slow = [x, slow.threshold] + ([slow.mem.w] if cls is PLIF else [])
    w = torch.randn(s_fast.shape)
    for a, b in zip(torch.autograd.grad((s_fast * w).sum(), params),
                    torch.autograd.grad((s_slow * w).sum(), params_slow)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    with pytest.raises(ValueError, match="backend"):
        cls(6, backend="fft")


def test_time_distributed_equals_per_step_loop():
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(5, 4, 2, 6, 6)
    y = TimeDistributed(conv)(x)
    torch.testing.assert_close(y, torch.stack([conv(x[t]) for t in range(5)]))
    with pytest.raises(ValueError, match="x"):
        TimeDistributed(conv)(torch.randn(3))


# ---- SPSN: the one-kernel step (backend="auto") against the two-scan path -------------------


def _next_seed(seed: int) -> int:
    """The counter-based RNG seed SPSN draws from a generator seeded with ``seed``."""
    return int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(seed)).item())


def test_spsn_auto_uses_the_fused_step(monkeypatch):
    calls = []
    real = fused.fused_spsn
    monkeypatch.setattr(fused, "fused_spsn", lambda *a, **k: calls.append(k["seed"]) or real(*a, **k))
    x = torch.randn(10, 2, 4)
    assert SPSN(4).uses_fused_step(x) and SPSN(4, backend="fused").uses_fused_step(x)
    assert not SPSN(4, backend="fused-scans").uses_fused_step(x)
    SPSN(4, generator=torch.Generator().manual_seed(5))(x)
    assert calls == [_next_seed(5)]
    SPSN(4, backend="chunked")(x)
    SPSN(4, backend="fused-scans")(x)  # the fused scan twice, then the torch firing op
    assert len(calls) == 1


@pytest.mark.parametrize("firing", ["sb", "gs"])
def test_spsn_fused_step_reproducible(firing):
    x = torch.randn(30, 3, 6)
    a = SPSN(6, firing=firing, generator=torch.Generator().manual_seed(1))(x)
    b = SPSN(6, firing=firing, generator=torch.Generator().manual_seed(1))(x)
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}
    layer = SPSN(6, firing=firing)  # global generator
    torch.manual_seed(7)
    c = layer(x)
    torch.manual_seed(7)
    assert torch.equal(c, layer(x))
    assert not torch.equal(c, layer(x))  # a new seed every forward


@pytest.mark.parametrize("firing, gs_tau, logit_scale", [("sb", 1.0, 1.0), ("gs", 1.0, 2.0), ("gs", 0.5, 1.0)])
@pytest.mark.parametrize("tau_syn", [0.004, None])
def test_spsn_fused_step_equals_two_scan_path_with_same_uniforms(firing, gs_tau, logit_scale, tau_syn):
    """Same uniforms (``fused.spsn_uniforms``) fed to the unfused firing op: same spikes (up to
    draws within rounding of the boundary) and the same gradients, learn_tau included."""
    torch.manual_seed(0)
    x = (2.0 * torch.randn(80, 3, 5)).requires_grad_()
    kw = dict(tau_syn=tau_syn, tau_mem=0.006, firing=firing, gs_tau=gs_tau, logit_scale=logit_scale,
              learn_tau=True)
    layer = SPSN(5, generator=torch.Generator().manual_seed(11), **kw)
    ref = SPSN(5, backend="sequential", **kw)
    ref.load_state_dict(layer.state_dict())
    s = layer(x)
    U = fused.spsn_uniforms(_next_seed(11), x.shape)
    u = ref.membrane(x)
    torch.testing.assert_close(u, layer.membrane(x), rtol=1e-5, atol=1e-6)
    if firing == "sb":
        s_ref = sigmoid_bernoulli(u, noise=U)
        margin = (U - torch.sigmoid(u)).abs()
    else:
        s_ref = gumbel_spike(u, tau=gs_tau, logit_scale=logit_scale, noise=torch.logit(U))
        margin = (logit_scale * u + torch.logit(U)).abs()
    differ = s != s_ref
    assert not bool((differ & (margin.detach() > 1e-5)).any()) and int(differ.sum()) <= 2
    assert 0 < float(s.detach().mean()) < 1
    w = torch.randn(s.shape)
    params = [layer.mem.log_tau] + ([layer.syn.log_tau] if tau_syn else [])
    ref_params = [ref.mem.log_tau] + ([ref.syn.log_tau] if tau_syn else [])
    g = torch.autograd.grad((s * w).sum(), [x] + params)
    g_ref = torch.autograd.grad((s_ref * w).sum(), [x] + ref_params)
    for a, b in zip(g, g_ref):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@pytest.mark.parametrize("firing, logit_scale", [("sb", 1.0), ("gs", 2.0)])
def test_spsn_fused_step_firing_rate(firing, logit_scale):
    """Spike counts of the fused step against the probabilities of the two-scan membrane."""
    torch.manual_seed(3)
    x = torch.randn(200, 8, 16)
    layer = SPSN(16, firing=firing, logit_scale=logit_scale, generator=torch.Generator().manual_seed(2))
    s = layer(x)
    p = torch.sigmoid(logit_scale * SPSN(16, backend="sequential").membrane(x))
    expected, sd = float(p.sum()), float((p * (1 - p)).sum()) ** 0.5
    assert abs(float(s.sum()) - expected) <= 5 * sd
