"""spikescan.jax.leaky_integrate / li: both backends against the float64 recurrence and the torch side,
outputs and gradients (x, decay, scale, v0), T = 1 to long T, decays 0 to 1."""

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the JAX side needs jax (pip install 'spikescan[jax]')")
import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from spikescan.jax import leaky_integrate, li  # noqa: E402
from tests.jax._helpers import leaky64, leaky_bound, rel_err, torch_leaky  # noqa: E402

BACKENDS = ("sequential", "associative")


_JIT = {}


def _jitted(backend):
    # one compile per backend and shape: eager JAX would compile every primitive of the scan
    if backend not in _JIT:
        _JIT[backend] = jax.jit(lambda x, d, v0: leaky_integrate(x, d, scale=0.75, v0=v0, backend=backend))
    return _JIT[backend]


def _bound(backend, x, d, scale=1.0, v0=None):
    if backend == "sequential":
        return leaky_bound(x, d, scale, v0)
    # each output passes through at most 2 ceil(log2 T) combines of 2 roundings each, plus the scale
    return leaky_bound(x, d, scale, v0, depth=4 * max(1, math.ceil(math.log2(x.shape[0]))) + 4)


@settings(max_examples=12, deadline=None)
@given(T=st.sampled_from([1, 2, 7, 64]), n=st.integers(1, 5),
       decay=st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0)),
       per_neuron=st.booleans(), seed=st.integers(0, 2**16))
def test_backends_match_float64_recurrence_and_torch(T, n, decay, per_neuron, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, 2, n)).astype(np.float32)
    d = (rng.uniform(0, 1, n) if per_neuron else np.full(n, decay)).astype(np.float32)
    v0 = rng.standard_normal(n).astype(np.float32)
    scale = np.float32(0.75)
    ref = leaky64(x, d, scale, v0)
    t = torch_leaky(torch.from_numpy(x), torch.from_numpy(d), scale=float(scale), v0=torch.from_numpy(v0),
                    backend="sequential").numpy()
    assert np.all(np.abs(t - ref) <= _bound("sequential", x, d, scale, v0))
    for backend in BACKENDS:
        u = np.asarray(_jitted(backend)(x, d, v0))
        assert u.dtype == np.float32 and u.shape == x.shape
        assert np.all(np.abs(u - ref) <= _bound(backend, x, d, scale, v0)), backend


def _loss_weights(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("T, decays", [(1, (0.3, 0.9)), (50, (0.0, 1.0)), (200, (0.05, 0.999))])
def test_gradients_match_torch(backend, T, decays):
    rng = np.random.default_rng(T)
    n = 3
    x = rng.standard_normal((T, 2, n)).astype(np.float32)
    d = np.array([decays[0], decays[1], 0.5], np.float32)
    scale = rng.uniform(0.5, 1.5, n).astype(np.float32)
    v0 = rng.standard_normal(n).astype(np.float32)
    w = _loss_weights(x.shape)

    def f(x, d, scale, v0):
        return jnp.sum(leaky_integrate(x, d, scale=scale, v0=v0, backend=backend) * w)

    gj = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))(x, d, scale, v0)
    ts = [torch.tensor(a, requires_grad=True) for a in (x, d, scale, v0)]
    (torch_leaky(ts[0], ts[1], scale=ts[2], v0=ts[3], backend="sequential") * torch.from_numpy(w)).sum().backward()
    for name, a, b in zip(("x", "decay", "scale", "v0"), gj, ts):
        assert np.asarray(a).shape == tuple(b.shape)
        assert rel_err(a, b.grad.numpy()) <= 1e-5, name


def test_long_sequence_float64_gradients_equal():
    """T = 1000 with a decay of 1: float64 leaves no room for rounding to hide a wrong gradient."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1000, 4))
        d = np.array([1.0, 0.9999, 0.5, 0.0])
        w = rng.standard_normal(x.shape)
        ts = [torch.tensor(a, requires_grad=True) for a in (x, d)]
        (torch_leaky(ts[0], ts[1], backend="sequential") * torch.from_numpy(w)).sum().backward()
        for backend in BACKENDS:
            g = jax.jit(jax.grad(lambda x, d: jnp.sum(leaky_integrate(x, d, backend=backend) * w),
                                 argnums=(0, 1)))(x, d)
            assert np.asarray(g[0]).dtype == np.float64
            assert rel_err(g[0], ts[0].grad.numpy()) <= 1e-10
            assert rel_err(g[1], ts[1].grad.numpy()) <= 1e-10


def test_li_is_the_two_stage_readout():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 2, 4)).astype(np.float32)
    a, b = 0.6, np.array([0.8, 0.9, 0.95, 0.5], np.float32)
    ref = leaky64(leaky64(x, np.float32(a)), b, (1.0 - b.astype(np.float64)))
    assert np.allclose(np.asarray(li(x, b, a)), ref, rtol=0, atol=1e-5)
    assert np.allclose(np.asarray(li(x, b)), leaky64(x, b, 1.0 - b.astype(np.float64)), rtol=0, atol=1e-5)


def test_jit_and_half_inputs():
    x = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    f = jax.jit(lambda x, d: leaky_integrate(x, d, backend="associative"))
    assert np.allclose(np.asarray(f(x, 0.9)), leaky64(x, np.float32(0.9)), atol=1e-5)
    h = leaky_integrate(jnp.asarray(x, jnp.bfloat16), 0.9)
    assert h.dtype == jnp.bfloat16


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(decay=1.5), ValueError, "decay must be <= 1"),
    (dict(decay=-0.1), ValueError, "decay must be >= 0"),
    (dict(decay=np.ones(7, np.float32)), ValueError, "decay of shape"),
    (dict(decay=0.5, v0=np.full(3, np.nan, np.float32)), ValueError, "v0 must be finite"),
    (dict(decay=0.5, backend="fft"), ValueError, "backend must be one of"),
    (dict(decay=True), TypeError, "decay must be a float"),
])
def test_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        leaky_integrate(np.zeros((4, 3), np.float32), **kwargs)


@pytest.mark.parametrize("x, error, match", [
    (np.zeros((0, 3), np.float32), ValueError, "T >= 1"),
    (np.zeros((4, 3), np.int32), TypeError, "floating dtype"),
    (torch.zeros(4, 3), TypeError, "torch tensor"),
    ([1.0, 2.0], TypeError, "array"),
])
def test_bad_input(x, error, match):
    with pytest.raises(error, match=match):
        leaky_integrate(x, 0.5)
