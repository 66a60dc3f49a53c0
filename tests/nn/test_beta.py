"""Neurons built from the decay per step (``beta`` / ``alpha``, snnTorch's and the SPSN paper's
names) as well as from ``tau`` / ``dt``."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from spikescan.nn import LI, LIF, PLIF, RLIF, SPSN, MaxMembraneReadout, SingleSpikeLIF

DT = 1e-3


def _tau(beta, dt=DT):
    return -dt / math.log(beta)


# (class, kwargs with beta/alpha, the same neuron from tau)
CASES = [
    (LIF, dict(beta=0.9), dict(tau_mem=_tau(0.9))),
    (LIF, dict(beta=0.9, alpha=0.8), dict(tau_mem=_tau(0.9), tau_syn=_tau(0.8))),
    (LIF, dict(beta=0.7, tau_syn=None, input_scale=1.0, reset="subtract"),
     dict(tau_mem=_tau(0.7), tau_syn=None, input_scale=1.0, reset="subtract")),
    (PLIF, dict(beta=0.8, tau_syn=None), dict(tau_mem=_tau(0.8), tau_syn=None)),
    (RLIF, dict(beta=0.9, alpha=0.6), dict(tau_mem=_tau(0.9), tau_syn=_tau(0.6))),
    (LI, dict(beta=0.95, alpha=0.5), dict(tau_mem=_tau(0.95), tau_syn=_tau(0.5))),
    (LI, dict(beta=0.95, tau_syn=None), dict(tau_mem=_tau(0.95), tau_syn=None)),
    (SPSN, dict(beta=0.9, alpha=0.7), dict(tau_mem=_tau(0.9), tau_syn=_tau(0.7))),
    (SingleSpikeLIF, dict(beta=0.85), dict(tau=_tau(0.85))),
    (MaxMembraneReadout, dict(beta=0.85), dict(tau=_tau(0.85))),
]


def _decays(m):
    syn = getattr(m, "syn", None)
    return m.mem(), None if syn is None else syn()


@pytest.mark.parametrize("cls,beta_kw,tau_kw", CASES, ids=lambda v: getattr(v, "__name__", None) or str(v))
def test_beta_is_the_decay_and_matches_the_tau_neuron(cls, beta_kw, tau_kw):
    torch.manual_seed(0)
    m, ref = cls(6, **beta_kw), cls(6, **tau_kw)
    mem, syn = _decays(m)
    want = beta_kw["beta"]
    if cls is PLIF:  # sigmoid(logit(beta)), rounded through the float32 w
        torch.testing.assert_close(mem, torch.full((6,), want), rtol=0, atol=1e-7)
    else:
        assert mem == want  # exactly the number given
    if "alpha" in beta_kw:
        assert syn == beta_kw["alpha"]
    rmem, rsyn = _decays(ref)
    torch.testing.assert_close(torch.as_tensor(mem, dtype=torch.float64), torch.as_tensor(rmem, dtype=torch.float64),
                               rtol=1e-12, atol=1e-7 if cls is PLIF else 0)
    if syn is not None:
        assert math.isclose(syn, rsyn, rel_tol=1e-13)
    if cls is SPSN:
        return  # stochastic
    if isinstance(m, RLIF):
        ref.recurrent.load_state_dict(m.recurrent.state_dict())
    x = torch.rand(20, 2, 6, dtype=torch.float64) * 3
    out, out_ref = m.double()(x), ref.double()(x)
    torch.testing.assert_close(out, out_ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cls,kw", [(LIF, {}), (LIF, dict(alpha=0.8)), (LI, dict(alpha=0.8)), (SPSN, dict(alpha=0.8)),
                                    (RLIF, {}), (SingleSpikeLIF, {}), (MaxMembraneReadout, {})])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_learned_decay_starts_at_exactly_beta(cls, kw, dtype):
    m = cls(5, beta=0.9, learn_tau=True, **kw).to(dtype)
    mem, syn = _decays(m)
    assert mem.dtype == dtype and torch.equal(mem, torch.full((5,), 0.9, dtype=dtype))
    if "alpha" in kw and cls is not LIF:  # LIF's synaptic decay is never learned
        assert torch.equal(syn, torch.full((5,), 0.8, dtype=dtype))
    # the same function exp(-dt / tau) of the learned log tau, with its gradient
    log_tau = m.mem.log_tau
    torch.testing.assert_close(mem, torch.exp(-DT / torch.exp(log_tau)), rtol=1e-6 if dtype == torch.float32 else 1e-7,
                               atol=0)
    (g,) = torch.autograd.grad(mem.sum(), log_tau)
    torch.testing.assert_close(g, mem.detach() * DT / torch.exp(log_tau.detach()), rtol=1e-5, atol=0)
    with torch.no_grad():
        log_tau.add_(0.5)
    torch.testing.assert_close(m.mem(), torch.exp(-DT / torch.exp(log_tau)), rtol=1e-6, atol=0)


def test_plif_learned_decay_starts_at_beta():
    m = PLIF(4, beta=0.75, tau_syn=None)
    torch.testing.assert_close(m.mem(), torch.full((4,), 0.75), rtol=0, atol=1e-7)
    with torch.device("cpu"):
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            m64 = PLIF(4, beta=0.75, tau_syn=None)
        finally:
            torch.set_default_dtype(old)
    torch.testing.assert_close(m64.mem(), torch.full((4,), 0.75, dtype=torch.float64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("cls,beta_name,tau_kw", [
    (LIF, "beta", dict(tau_mem=0.02)), (LIF, "alpha", dict(tau_syn=0.02)), (LIF, "alpha", dict(tau_syn=None)),
    (PLIF, "beta", dict(tau_mem=0.01)), (RLIF, "beta", dict(tau_mem=0.02)), (LI, "beta", dict(tau_mem=0.02)),
    (LI, "alpha", dict(tau_syn=0.005)), (SPSN, "beta", dict(tau_mem=0.02)), (SPSN, "alpha", dict(tau_syn=None)),
    (SingleSpikeLIF, "beta", dict(tau=0.01)), (MaxMembraneReadout, "beta", dict(tau=0.02))])
def test_beta_and_tau_for_one_stage_is_an_error_naming_both(cls, beta_name, tau_kw):
    (tau_name,) = tau_kw
    with pytest.raises(ValueError, match=rf"{beta_name}=.*{tau_name}=|{tau_name}=.*{beta_name}=") as e:
        cls(4, **{beta_name: 0.9}, **tau_kw)
    assert beta_name in str(e.value) and tau_name in str(e.value)


def test_beta_and_tau_positional_is_an_error_too():
    with pytest.raises(ValueError, match="beta.*tau_mem"):
        LIF(4, None, 0.02, beta=0.9)


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, -0.5, 1.5, float("nan"), float("inf"), True, "0.9"])
@pytest.mark.parametrize("name", ["beta", "alpha"])
def test_beta_outside_the_open_unit_interval_is_a_clear_error(bad, name):
    with pytest.raises(ValueError, match=rf"{name} .*\(0, 1\)"):
        LIF(4, **{name: bad})


@pytest.mark.parametrize("cls", [LIF, PLIF, RLIF, LI, SPSN, SingleSpikeLIF, MaxMembraneReadout])
def test_beta_alpha_are_keyword_only_and_defaults_unchanged(cls):
    params = inspect.signature(cls).parameters
    assert params["beta"].kind is inspect.Parameter.KEYWORD_ONLY and params["beta"].default is None
    if "alpha" in params:
        assert params["alpha"].kind is inspect.Parameter.KEYWORD_ONLY
    for name in ("tau", "tau_mem"):
        if name in params:
            d = params[name].default
            assert isinstance(d, float) and repr(d) in ("0.02", "0.01")
    if "tau_syn" in params:  # spikescan.defaults: no synaptic stage, except the SPSN paper's neuron
        d = params["tau_syn"].default
        assert (repr(d) == "0.02") if cls is SPSN else (repr(d) == "None" and not d)


@pytest.mark.parametrize("cls", [LIF, PLIF, RLIF, LI])
def test_alpha_creates_the_synaptic_stage_the_default_leaves_out(cls):
    assert cls(4).syn is None
    m = cls(4, alpha=0.8)
    assert m.syn is not None and m.syn() == 0.8
    with pytest.raises(ValueError, match="alpha.*tau_syn"):
        cls(4, tau_syn=None, alpha=0.8)  # an explicit "no stage" contradicts alpha


def test_existing_calls_unchanged():
    # positional and keyword time constants, as before
    a, b = LIF(4, 0.02, 0.02, 1e-3), LIF(4)
    assert a.mem() == b.mem() == math.exp(-1e-3 / 0.02) and a.syn() == math.exp(-1e-3 / 0.02)
    assert b.syn is None and LIF(4, tau_syn=None).syn is None and LI(4, None).syn is None
    assert SingleSpikeLIF(4, 0.01).mem() == math.exp(-0.1)
    m = LIF(4, learn_tau=True)
    assert torch.equal(m.mem(), torch.exp(-1e-3 / torch.exp(m.mem.log_tau)))
    assert set(dict(m.named_parameters())) == {"mem.log_tau"}
    assert set(dict(LIF(4, beta=0.9, learn_tau=True).named_parameters())) == {"mem.log_tau"}


def test_state_dict_round_trip_of_a_learned_beta_neuron():
    m = LIF(4, beta=0.9, learn_tau=True)
    with torch.no_grad():
        m.mem.log_tau.add_(torch.linspace(-0.3, 0.3, 4))
    m2 = LIF(4, beta=0.9, learn_tau=True)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.mem(), m.mem())
