"""PSU / IPSU / RPSU modules: initialisation, T checks, causality after training, learnable alpha."""

import math

import pytest
import torch
from torch import nn

from spikescan.nn.psu import IPSU, PSU, RPSU
from spikescan.ops import psu as P

F64 = torch.float64


def _make(name, T, **kw):
    return PSU(**kw) if name == "psu" else {"ipsu": IPSU, "rpsu": RPSU}[name](T, **kw)


@pytest.mark.parametrize("cls", [IPSU, RPSU])
def test_init_like_linear_T_T_kaiming_fan_out(cls):
    torch.manual_seed(0)
    T = 256
    m = cls(T)
    assert m.weight.shape == (T, T) and m.bias.shape == (T,)
    assert torch.count_nonzero(m.bias) == 0
    assert abs(float(m.weight.detach().std()) - math.sqrt(2.0 / T)) < 0.05 * math.sqrt(2.0 / T)
    assert torch.equal(m.masked_weight(), torch.tril(m.weight))
    assert "T=256" in repr(m)


@pytest.mark.parametrize("name", ["psu", "ipsu", "rpsu"])
def test_module_matches_op(name):
    T = 12
    m = _make(name, T, tau=3.0, threshold=0.4, leak="psu_code")
    x = torch.randn(T, 4, 2, 3)
    s, v = m(x, return_membrane=True)
    if name == "psu":
        s_op, v_op = P.psu(x, 3.0, 0.4, leak="psu_code", return_membrane=True)
    else:
        fn = P.ipsu if name == "ipsu" else P.rpsu
        s_op, v_op = fn(x, m.weight, m.bias, 3.0, 0.4, leak="psu_code", return_membrane=True)
    assert torch.equal(s, s_op) and torch.allclose(v, v_op)
    assert s.shape == x.shape


@pytest.mark.parametrize("cls", [IPSU, RPSU])
def test_wrong_T_is_named(cls):
    m = cls(8)
    with pytest.raises(ValueError, match=r"built for T = 8 .* x has T = 9"):
        m(torch.randn(9, 2, 3))


def test_bad_construction():
    with pytest.raises(ValueError, match="T .* positive int"):
        IPSU(0)
    with pytest.raises(ValueError, match="tau must be"):
        PSU(tau=0.5)
    with pytest.raises(ValueError, match="threshold must be"):
        RPSU(4, threshold=-1.0)
    with pytest.raises(ValueError, match="leak must be one of"):
        PSU(leak="x")
    with pytest.raises(ValueError, match="backend must be one of"):
        IPSU(4, backend="fft")
    with pytest.raises(ValueError, match="learn_alpha=True needs the arctan"):
        PSU(learn_alpha=True, surrogate="fast_sigmoid")
    with pytest.raises(ValueError, match="time-first with at least 2 dims"):
        PSU()(torch.randn(5))


@pytest.mark.parametrize("name", ["ipsu", "rpsu"])
@pytest.mark.parametrize("backend", ["matrix", "chunked"])
def test_causality_after_training_steps(name, backend):
    """Train the T×T matrix a few steps (AdamW, weight decay on), then perturb x[t]."""
    torch.manual_seed(0)
    T, B, C = 16, 8, 6
    m = _make(name, T, threshold=0.3, backend=backend, learn_alpha=True)
    lin = nn.Linear(5, C)
    opt = torch.optim.AdamW(list(m.parameters()) + list(lin.parameters()), lr=0.05, weight_decay=0.01)
    x_in = torch.randn(T, B, 5)
    target = torch.rand(T, B, C)
    w_before = m.weight.detach().clone()
    alpha_before = m.alpha.item()
    for _ in range(5):
        opt.zero_grad()
        s, v = m(lin(x_in), return_membrane=True)
        loss = ((s - target) ** 2).mean() + 0.01 * (v**2).mean()
        loss.backward()
        assert torch.count_nonzero(torch.triu(m.weight.grad, diagonal=1)) == 0
        opt.step()
    assert not torch.equal(torch.tril(m.weight), torch.tril(w_before))  # the lower triangle learned
    assert m.alpha.item() != alpha_before

    with torch.no_grad():
        x = lin(x_in)
        s0, v0 = m(x, return_membrane=True)
        for t in (0, 7, T - 1):
            xp = x.clone()
            xp[t] += 2.0 * torch.randn(B, C)
            s1, v1 = m(xp, return_membrane=True)
            assert torch.equal(v1[:t], v0[:t]) and torch.equal(s1[:t], s0[:t])
            assert not torch.equal(v1[t:], v0[t:])


def test_learn_alpha_same_forward_and_atan_gradient():
    torch.manual_seed(0)
    x = torch.randn(10, 3, 4, dtype=F64, requires_grad=True)
    fixed = PSU(threshold=0.5)
    learn = PSU(threshold=0.5, learn_alpha=True).double()
    assert torch.equal(fixed(x), learn(x))
    (g_fixed,) = torch.autograd.grad(fixed(x).sum(), x)
    (g_learn,) = torch.autograd.grad(learn(x).sum(), x)
    torch.testing.assert_close(g_fixed, g_learn)
    learn(x).sum().backward()
    assert learn.alpha.grad is not None and learn.alpha.grad != 0


def test_default_surrogate_is_atan_2():
    assert PSU().surrogate.kind == "atan" and PSU().surrogate.param == 2.0


def test_state_dict_round_trip_and_device_dtype():
    m = IPSU(6)
    m2 = IPSU(6)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(6, 2, 3)
    assert torch.equal(m(x), m2(x))
    assert m.double()(x.double()).dtype == F64
