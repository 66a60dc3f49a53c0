"""spikescan.jax.lif: the custom-VJP scan ("fused") against the autodiff reference ("sequential"), both
against the float64 LIF and the torch reference: spikes, membranes, final state, and the gradients of
x, decay, threshold, v_reset, v0; both resets, detached reset, every surrogate, T = 1 and long T."""

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the JAX side needs jax (pip install 'spikescan[jax]')")
import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from spikescan.jax import lif  # noqa: E402
from spikescan.ops.lif import lif as torch_lif  # noqa: E402
from tests.jax._helpers import FMA_GRAD_TOL, assert_lif_matches, determined, lif64, lif_tolerance, rel_err  # noqa: E402

_FWD = {}


def _forward(backend, reset, surrogate="fast_sigmoid"):
    key = (backend, reset, surrogate)
    if key not in _FWD:
        _FWD[key] = jax.jit(lambda x, d, th, vr, v0: lif(x, d, th, reset=reset, v_reset=vr, v0=v0, surrogate=surrogate,
                                                        backend=backend, return_membrane=True, return_state=True))
    return _FWD[key]


def _case(rng, T, n, decay_lo=0.0, decay_hi=1.0, reset="subtract"):
    x = (rng.standard_normal((T, 2, n)) * 0.6 + 0.25).astype(np.float32)
    d = rng.uniform(decay_lo, decay_hi, n).astype(np.float32)
    th = rng.uniform(0.5, 1.5, n).astype(np.float32)
    vr = (rng.uniform(-0.2, 0.2, n) if reset == "zero" else np.zeros(n)).astype(np.float32)
    v0 = rng.uniform(-0.5, 0.5, (2, n)).astype(np.float32)
    return x, d, th, vr, v0


@settings(max_examples=10, deadline=None)
@given(T=st.sampled_from([1, 3, 40]), n=st.integers(1, 6), reset=st.sampled_from(["subtract", "zero"]),
       decays=st.sampled_from([(0.0, 1.0), (0.0, 0.05), (0.95, 1.0)]), seed=st.integers(0, 2**16))
def test_forward_matches_float64_and_torch(T, n, reset, decays, seed):
    x, d, th, vr, v0 = _case(np.random.default_rng(seed), T, n, *decays, reset=reset)
    s64, v64, p64 = lif64(x, d, th, reset, vr, v0)
    tol = lif_tolerance(x, v64, th, v0, vr)
    ts, tv, tstate = torch_lif(*(torch.from_numpy(a) for a in (x, d, th)), reset=reset, v_reset=torch.from_numpy(vr),
                               v0=torch.from_numpy(v0), backend="sequential", return_membrane=True,
                               return_state=True)
    assert_lif_matches(ts.numpy(), tv.numpy(), s64, v64, th, tol)
    outs = {b: _forward(b, reset)(x, d, th, vr, v0) for b in ("sequential", "fused")}
    for backend, (s, v, state) in outs.items():
        assert s.shape == v.shape == x.shape and state.shape == x.shape[1:]
        assert assert_lif_matches(s, v, s64, v64, th, tol) > 0
    # the two JAX backends run the same forward scan
    for a, b in zip(outs["sequential"], outs["fused"]):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_forward_on_the_paper_table_setting():
    """k = 0.2, V_th = 0.3, hard reset to 0 (Table 1), 10 000 neurons over T = 128: most steps determined."""
    x = np.random.default_rng(0).uniform(0, 0.5, (128, 10_000)).astype(np.float32)
    s64, v64, _ = lif64(x, np.float32(0.2), np.float32(0.3), "zero")
    s, v = lif(x, 0.2, 0.3, reset="zero", return_membrane=True)
    frac = assert_lif_matches(s, v, s64, v64, np.float32(0.3), lif_tolerance(x, v64, 0.3), min_fraction=0.99)
    assert 0.1 < float(s64.mean()) < 0.9 and frac > 0.99


def _loss(s, v, state, ws, wv, wp):
    return jnp.sum(s * ws) + jnp.sum(v * wv) + jnp.sum(state * wp)


_GRAD = {}


def _grads(backend, reset, surrogate, detach):
    key = (backend, reset, surrogate, detach)
    if key not in _GRAD:
        def f(x, d, th, vr, v0, ws, wv, wp):
            out = lif(x, d, th, reset=reset, v_reset=vr, v0=v0, surrogate=surrogate, detach_reset=detach,
                      backend=backend, return_membrane=True, return_state=True)
            return _loss(*out, ws, wv, wp)

        _GRAD[key] = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3, 4)))
    return _GRAD[key]


def _torch_grads(x, d, th, vr, v0, ws, wv, wp, reset, surrogate, detach):
    ts = [torch.tensor(a, requires_grad=True) for a in (x, d, th, vr, v0)]
    s, v, state = torch_lif(ts[0], ts[1], ts[2], reset=reset, v_reset=ts[3], v0=ts[4], surrogate=surrogate,
                            detach_reset=detach, backend="sequential", return_membrane=True, return_state=True)
    ((s * torch.from_numpy(ws)).sum() + (v * torch.from_numpy(wv)).sum() + (state * torch.from_numpy(wp)).sum()).backward()
    return [np.zeros(t.shape, np.float32) if t.grad is None else t.grad.numpy() for t in ts], s.detach().numpy()


@pytest.mark.parametrize("reset, surrogate, detach, T, decays", [
    ("subtract", "fast_sigmoid", False, 1, (0.1, 0.9)), ("zero", "triangle", True, 1, (0.0, 1.0)),
    ("subtract", "atan", True, 60, (0.0, 1.0)), ("zero", "sigmoid", False, 60, (0.0, 1.0)),
    ("zero", "fast_sigmoid", True, 250, (0.9, 0.999)), ("subtract", "fast_sigmoid", False, 250, (0.9, 0.999)),
])
def test_gradients_match_torch(reset, surrogate, detach, T, decays):
    rng = np.random.default_rng(T)
    x, d, th, vr, v0 = _case(rng, T, 4, reset=reset)
    d[:2] = decays
    ws, wv = rng.standard_normal(x.shape).astype(np.float32), rng.standard_normal(x.shape).astype(np.float32) * 0.1
    wp = rng.standard_normal(x.shape[1:]).astype(np.float32)
    s64, v64, _ = lif64(x, d, th, reset, vr, v0)
    # a gradient comparison needs the same spikes on both sides: the test data has no undetermined step
    assert determined(v64, th, lif_tolerance(x, v64, th, v0, vr)).all()
    tg, ts = _torch_grads(x, d, th, vr, v0, ws, wv, wp, reset, surrogate, detach)
    assert np.array_equal(ts, s64)
    for backend in ("sequential", "fused"):
        g = _grads(backend, reset, surrogate, detach)(x, d, th, vr, v0, ws, wv, wp)
        for name, a, b in zip(("x", "decay", "threshold", "v_reset", "v0"), g, tg):
            assert np.asarray(a).shape == b.shape, (backend, name)
            assert rel_err(a, b) <= FMA_GRAD_TOL, (backend, name, rel_err(a, b))


def test_scalar_parameters_get_scalar_gradients():
    x = np.random.default_rng(1).standard_normal((30, 3, 2)).astype(np.float32) + 0.5

    def f(x, d, th, backend):
        return jnp.sum(lif(x, d, th, backend=backend) * jnp.arange(30.0)[:, None, None])

    ref = jax.grad(lambda x, d, th: f(x, d, th, "sequential"), argnums=(1, 2))(x, 0.8, 1.0)
    got = jax.grad(lambda x, d, th: f(x, d, th, "fused"), argnums=(1, 2))(x, 0.8, 1.0)
    for a, b in zip(got, ref):
        assert np.shape(a) == () and rel_err(a, b) <= 1e-5  # the same JAX forward on both sides


def test_chunks_continue_the_sequence():
    x, d, th, vr, v0 = _case(np.random.default_rng(5), 40, 3, reset="zero")
    s, state = lif(x, d, th, reset="zero", v_reset=vr, return_state=True)
    s1, mid = lif(x[:17], d, th, reset="zero", v_reset=vr, return_state=True)
    s2, end = lif(x[17:], d, th, reset="zero", v_reset=vr, v0=mid, return_state=True)
    assert np.array_equal(np.concatenate([s1, s2]), np.asarray(s)) and np.array_equal(end, state)


def test_float64_long_sequence_gradients_equal_torch():
    """T = 1000, decay 1 and 0.999: in float64 the two sides agree to 1e-10."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        x = rng.standard_normal((1000, 2, 3)) * 0.3 + 0.05
        d, th = np.array([1.0, 0.999, 0.5]), np.array([1.0, 0.7, 0.4])
        ws = rng.standard_normal(x.shape)
        ts = [torch.tensor(a, requires_grad=True) for a in (x, d, th)]
        (torch_lif(*ts, backend="sequential") * torch.from_numpy(ws)).sum().backward()
        g = jax.jit(jax.grad(lambda x, d, th: jnp.sum(lif(x, d, th) * ws), argnums=(0, 1, 2)))(x, d, th)
        assert np.asarray(g[0]).dtype == np.float64
        for a, b in zip(g, ts):
            assert rel_err(a, b.grad.numpy()) <= 1e-10


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(decay=1.2), ValueError, "decay must be <= 1"),
    (dict(decay=0.5, threshold=0.0), ValueError, "threshold must be > 0"),
    (dict(decay=0.5, reset="hard"), ValueError, "reset must be one of"),
    (dict(decay=0.5, v_reset=0.3, reset="subtract"), ValueError, "v_reset is used only with reset='zero'"),
    (dict(decay=0.5, surrogate="nope"), ValueError, "unknown surrogate"),
    (dict(decay=0.5, backend="numba"), ValueError, "backend must be one of"),
    (dict(decay=np.ones((5, 3), np.float32)), ValueError, "decay of shape"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        lif(np.zeros((4, 2, 3), np.float32), **kwargs)


def test_custom_surrogate_is_refused_with_the_reason():
    from dataclasses import dataclass
    from typing import ClassVar

    from spikescan.surrogate import Surrogate

    @dataclass(frozen=True)
    class Mine(Surrogate):
        width: float = 1.0
        kind: ClassVar[str] = "mine"
        _param_name: ClassVar[str] = "width"

    with pytest.raises(ValueError, match="built-in surrogates"):
        lif(np.zeros((4, 3), np.float32), 0.5, surrogate=Mine())
