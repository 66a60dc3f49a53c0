"""The JAX neurons built from the decay per step (``beta`` / ``alpha``), as on the torch side
(tests/nn/test_beta.py): exact decays, errors, parity with the torch module, the converters."""

import inspect
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the JAX side needs jax (pip install 'spikescan[jax]')")
pytest.importorskip("flax", reason="the JAX modules need flax (pip install 'spikescan[jax]')")
import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from spikescan import nn as tnn  # noqa: E402
from spikescan.jax import nn as jnn  # noqa: E402
from spikescan.jax.export import from_torch, to_torch  # noqa: E402
from tests.jax._helpers import EPS32  # noqa: E402

DT = 1e-3
CLASSES = ["LI", "LIF", "PLIF", "SPSN"]


def _tau(beta, dt=DT):
    return -dt / math.log(beta)


def _x(T=30, B=3, F=5, seed=0):
    return (np.random.default_rng(seed).standard_normal((T, B, F)) * 1.5 + 0.4).astype(np.float32)


@pytest.mark.parametrize("name", CLASSES)
def test_beta_alpha_keyword_only_and_defaults_unchanged(name):
    params = inspect.signature(getattr(jnn, name).__init__).parameters
    tparams = inspect.signature(getattr(tnn, name)).parameters
    for p in ("beta", "alpha"):
        assert params[p].kind is inspect.Parameter.KEYWORD_ONLY and params[p].default is None
    for p in ("tau_syn", "tau_mem", "dt"):
        assert repr(params[p].default) == repr(tparams[p].default), p


@pytest.mark.parametrize("name", CLASSES)
def test_fixed_decay_is_exactly_beta_and_alpha_creates_the_stage(name):
    cls = getattr(jnn, name)
    m = cls(4, beta=0.9, alpha=0.8)
    assert m.syn is not None and m.syn() == 0.8 and m.syn.value == 0.8
    if name == "PLIF":  # sigmoid(logit(beta)) through the float32 w
        assert np.max(np.abs(np.asarray(m.mem()) - 0.9)) <= EPS32
    else:
        assert m.mem() == 0.9 and m.mem.value == 0.9 and math.isclose(m.mem.tau, _tau(0.9), rel_tol=1e-15)
    if name != "SPSN":  # the SPSN paper's neuron has a synaptic stage by default
        assert cls(4).syn is None and cls(4, beta=0.9).syn is None
        with pytest.raises(ValueError, match="alpha.*tau_syn"):
            cls(4, tau_syn=None, alpha=0.8)


@pytest.mark.parametrize("name, kw", [("LI", dict(alpha=0.7)), ("LIF", {}), ("LIF", dict(alpha=0.7)),
                                      ("SPSN", dict(alpha=0.7))])
def test_learned_decay_starts_at_exactly_beta(name, kw):
    m = getattr(jnn, name)(5, beta=0.9, learn_tau=True, **kw)
    mem = m.mem()
    assert mem.dtype == jnp.float32 and np.array_equal(np.asarray(mem), np.full(5, 0.9, np.float32))
    if "alpha" in kw and name != "LIF":  # LIF's synaptic decay is never learned
        assert np.array_equal(np.asarray(m.syn()), np.full(5, 0.7, np.float32))
    # the same function exp(-dt / tau) of the learned log tau, with its gradient
    log_tau = m.mem.log_tau[...]
    assert np.allclose(np.asarray(mem), np.asarray(jnp.exp(-DT / jnp.exp(log_tau))), rtol=1e-6, atol=0)
    g = jax.grad(lambda lt: jnp.sum(m.mem.beta ** jnp.exp(m.mem.log_tau0 - lt)))(log_tau)
    assert np.allclose(np.asarray(g), np.asarray(mem * DT / jnp.exp(log_tau)), rtol=1e-5, atol=0)
    m.mem.log_tau = nnx.Param(log_tau + 0.5)
    assert np.allclose(np.asarray(m.mem()), np.asarray(jnp.exp(-DT / jnp.exp(log_tau + 0.5))), rtol=1e-6, atol=0)


def test_plif_learned_decay_starts_at_beta():
    m = jnn.PLIF(4, beta=0.75)
    assert np.max(np.abs(np.asarray(m.mem()) - 0.75)) <= 1e-7
    assert np.array_equal(np.asarray(m.mem.w[...]), np.asarray(tnn.PLIF(4, beta=0.75).mem.w.detach()))


@pytest.mark.parametrize("name, beta_name, tau_kw", [
    ("LIF", "beta", dict(tau_mem=0.02)), ("LIF", "alpha", dict(tau_syn=0.02)), ("LIF", "alpha", dict(tau_syn=None)),
    ("PLIF", "beta", dict(tau_mem=0.01)), ("LI", "beta", dict(tau_mem=0.02)), ("LI", "alpha", dict(tau_syn=0.005)),
    ("SPSN", "beta", dict(tau_mem=0.02)), ("SPSN", "alpha", dict(tau_syn=None)), ("SPSN", "alpha", dict(tau_syn=0.02))])
def test_beta_and_tau_for_one_stage_is_an_error_naming_both(name, beta_name, tau_kw):
    (tau_name,) = tau_kw
    with pytest.raises(ValueError, match=rf"{beta_name}=.*{tau_name}=") as e:
        getattr(jnn, name)(4, **{beta_name: 0.9}, **tau_kw)
    assert beta_name in str(e.value) and tau_name in str(e.value)
    with pytest.raises(ValueError, match="beta.*tau_mem"):
        getattr(jnn, name)(4, None, 0.02, beta=0.9)  # positional too


@pytest.mark.parametrize("bad", [0, 1.0, -0.5, 1.5, float("nan"), True, "0.9"])
@pytest.mark.parametrize("name", ["beta", "alpha"])
def test_beta_outside_the_open_unit_interval_is_a_clear_error(bad, name):
    with pytest.raises(ValueError, match=rf"{name} .*\(0, 1\)"):
        jnn.LIF(4, **{name: bad})


def _f64(v):
    return v.detach().double().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, np.float64)


def _lif_membrane_tol(x):
    # tests/jax/_helpers.py: at most 3 roundings of the largest magnitude per step, 4 allowed, on the
    # torch and the JAX side each
    return 2 * 4 * (x.shape[0] + 1) * EPS32 * float(np.max(np.abs(x))) / (1 - 0.9)


@pytest.mark.parametrize("name, kw", [("LIF", dict(beta=0.9)), ("LIF", dict(beta=0.9, alpha=0.8, learn_tau=True)),
                                      ("LIF", dict(beta=0.85, reset="subtract", input_scale="one_minus_decay")),
                                      ("PLIF", dict(beta=0.9, alpha=0.6)), ("LI", dict(beta=0.9, alpha=0.7)),
                                      ("LI", dict(beta=0.95, learn_tau=True)), ("SPSN", dict(beta=0.9, alpha=0.7))])
def test_beta_built_jax_module_matches_the_torch_one(name, kw):
    F = 5
    jm = getattr(jnn, name)(F, **kw)
    tm = getattr(tnn, name)(F, **kw)
    if hasattr(tm, "backend"):
        tm.backend = "sequential"
    # the same decays: exactly (fixed, learned at start), PLIF's sigmoid to an ulp of float32
    for stage in ("mem", "syn"):
        if getattr(jm, stage) is None:
            assert getattr(tm, stage) is None
            continue
        dj, dt = getattr(jm, stage)(), getattr(tm, stage)()
        if name == "PLIF" and stage == "mem":
            assert np.max(np.abs(np.asarray(dj) - dt.detach().numpy())) <= EPS32
        else:
            assert np.array_equal(_f64(dj), _f64(dt)), stage
    x = _x(F=F)
    xt = torch.from_numpy(x)
    if name == "SPSN":
        out_j, out_t = jm.membrane(x), tm.membrane(xt)
    elif name == "LI":
        out_j, out_t = jm(x), tm(xt)
    else:
        out_j, out_t = jm(x, return_membrane=True)[1], tm(xt, return_membrane=True)[1]
    out_j, out_t = np.asarray(out_j), out_t.detach().numpy()
    if name in ("LIF", "PLIF"):  # compared while no membrane is within the rounding of its threshold
        tol = _lif_membrane_tol(x)
        first = np.argmax(np.abs(out_t - 1.0) <= 1e-3, axis=0)
        close = np.any(np.abs(out_t - 1.0) <= 1e-3, axis=0)
        steps = np.where(close, first, x.shape[0])
        mask = np.arange(x.shape[0])[:, None, None] < steps[None]
        assert mask.mean() > 0.3
        assert np.max(np.abs(out_j - out_t)[mask]) <= tol
    else:
        assert np.max(np.abs(out_j - out_t)) <= 8 * (x.shape[0] + 1) * EPS32 * float(np.max(np.abs(x))) / (1 - 0.95)


def _same_decay(a, b):
    return np.array_equal(_f64(a()), _f64(b()))


@pytest.mark.parametrize("layer", [
    lambda: jnn.LIF(4, beta=0.9, alpha=0.8), lambda: jnn.LIF(4, beta=0.9, learn_tau=True),
    lambda: jnn.PLIF(4, beta=0.7), lambda: jnn.LI(4, beta=0.95, alpha=0.5),
    lambda: jnn.LI(4, beta=0.95, alpha=0.5, learn_tau=True), lambda: jnn.SPSN(4, beta=0.9, alpha=0.7),
    lambda: jnn.SPSN(4, beta=0.9, alpha=0.7, learn_tau=True)])
def test_beta_built_modules_round_trip_through_the_converters(layer):
    jm = layer()
    (tm,) = to_torch(jm)
    (back,) = from_torch(torch.nn.Sequential(tm)).layers
    assert type(back) is type(jm) and type(tm).__name__ == type(jm).__name__
    for stage in ("mem", "syn"):
        if getattr(jm, stage) is None:
            assert getattr(tm, stage) is None and getattr(back, stage) is None
            continue
        assert _same_decay(getattr(jm, stage), getattr(tm, stage)), stage  # the fixed value survives exactly
        assert np.array_equal(np.asarray(getattr(jm, stage)()), np.asarray(getattr(back, stage)())), stage
    (tm2,) = to_torch(back, dtype=torch.float64)
    if isinstance(jm.mem, jnn.Decay):  # float64 torch: beta itself (learned: beta ** 1, exactly)
        assert np.array_equal(_f64(tm2.mem()), np.broadcast_to(jm.mem.beta if jm.mem.learn else jm.mem.value,
                                                                np.shape(_f64(tm2.mem()))))


def test_torch_beta_module_converts_with_its_exact_decay():
    tm = tnn.LIF(3, beta=0.9, alpha=0.8, learn_tau=True).double()
    with torch.no_grad():
        tm.mem.log_tau.add_(torch.tensor([0.0, 0.2, -0.2], dtype=torch.float64))
    (jm,) = from_torch(torch.nn.Sequential(tm)).layers
    assert jm.syn() == 0.8 and jm.mem.beta == 0.9
    assert float(jm.mem()[0]) == np.float32(0.9)
    with jax.enable_x64(True):
        assert np.allclose(np.asarray(jm.mem(), np.float64), tm.mem().detach().numpy(), rtol=1e-6, atol=0)
