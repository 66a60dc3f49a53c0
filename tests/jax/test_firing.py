"""spikescan.jax firing functions against spikescan.ops.firing and spikescan.surrogate: the same noise
gives the same spikes, the same gradients; keys reproduce draws; bad arguments name themselves."""

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the JAX side needs jax (pip install 'spikescan[jax]')")
import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from spikescan import surrogate as torch_surrogate  # noqa: E402
from spikescan.jax import gumbel_spike, heaviside, sigmoid_bernoulli, surrogate_grad  # noqa: E402
from spikescan.ops.firing import gumbel_spike as torch_gumbel  # noqa: E402
from spikescan.ops.firing import heaviside as torch_heaviside  # noqa: E402
from spikescan.ops.firing import sigmoid_bernoulli as torch_sb  # noqa: E402
from tests.jax._helpers import EPS32, rel_err  # noqa: E402

KINDS = [("fast_sigmoid", 25.0), ("fast_sigmoid", 100.0), ("atan", 2.0), ("sigmoid", 4.0), ("triangle", 0.5)]


@pytest.mark.parametrize("kind, param", KINDS)
def test_surrogate_formulas_match_the_torch_reference(kind, param):
    x = np.linspace(-3, 3, 601, dtype=np.float32)
    ref = torch_surrogate.surrogate_grad(kind, param, torch.from_numpy(x).double()).numpy()
    got = np.asarray(surrogate_grad(kind, param, jnp.asarray(x)))
    # a handful of float32 roundings (and one ulp of exp in sigmoid) of values <= param
    assert np.max(np.abs(got - ref)) <= 16 * EPS32 * max(1.0, param)


@pytest.mark.parametrize("kind, param", KINDS)
def test_heaviside_forward_and_surrogate_gradient(kind, param):
    u = np.random.default_rng(0).standard_normal(200).astype(np.float32)
    u[:3] = [0.0, -0.0, 1e-30]
    sg = torch_surrogate.get(kind, **{torch_surrogate.get(kind)._param_name: param})
    s = heaviside(u, sg)
    assert np.array_equal(np.asarray(s), (u >= 0).astype(np.float32))
    w = np.random.default_rng(1).standard_normal(200).astype(np.float32)
    g = jax.grad(lambda u: jnp.sum(heaviside(u, sg) * w))(u)
    ut = torch.tensor(u, requires_grad=True)
    (torch_heaviside(ut, sg) * torch.from_numpy(w)).sum().backward()
    assert rel_err(g, ut.grad.numpy()) <= 1e-5


@settings(max_examples=8, deadline=None)
@given(n=st.sampled_from([1, 7, 300]), seed=st.integers(0, 2**16), scale=st.sampled_from([0.1, 1.0, 8.0]))
def test_sigmoid_bernoulli_same_noise_same_spikes_and_gradient(n, seed, scale):
    rng = np.random.default_rng(seed)
    u = (rng.standard_normal(n) * scale).astype(np.float32)
    noise = rng.uniform(0, 1, n).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    s, g = jax.value_and_grad(lambda u: jnp.sum(sigmoid_bernoulli(u, noise=noise) * w))(u)
    ut = torch.tensor(u, requires_grad=True)
    st_ = torch_sb(ut, noise=torch.from_numpy(noise))
    (st_ * torch.from_numpy(w)).sum().backward()
    # sigmoid differs between the two libraries by an ulp or two: spikes are determined where the
    # uniform is farther than that from p
    p = 1.0 / (1.0 + np.exp(-u.astype(np.float64)))
    far = np.abs(noise - p) > 8 * EPS32
    js = np.asarray(sigmoid_bernoulli(u, noise=noise))
    assert np.array_equal(js[far], st_.detach().numpy()[far])
    assert rel_err(g, ut.grad.numpy()) <= 1e-5
    # the p-scaled straight-through gradient of the authors' code: p^2 (1 - p); p rounded to float32
    # moves 1 - p by up to eps32 / 2 (all of it where p is near 1), plus a few roundings of the products
    expected = w * p * p * (1 - p)
    assert np.all(np.abs(np.asarray(g) - expected) <= 1e-5 * np.abs(expected) + 2 * EPS32 * np.abs(w))


@pytest.mark.parametrize("tau, logit_scale", [(1.0, 1.0), (0.5, 2.0)])
def test_gumbel_same_noise_same_spikes_and_gradient(tau, logit_scale):
    rng = np.random.default_rng(7)
    u = rng.standard_normal(500).astype(np.float32)
    noise = np.array(jax.random.logistic(jax.random.key(0), (500,)))  # a writable copy for torch
    w = rng.standard_normal(500).astype(np.float32)
    g = jax.grad(lambda u: jnp.sum(gumbel_spike(u, tau=tau, logit_scale=logit_scale, noise=noise) * w))(u)
    ut = torch.tensor(u, requires_grad=True)
    s = torch_gumbel(ut, tau=tau, logit_scale=logit_scale, noise=torch.from_numpy(noise))
    (s * torch.from_numpy(w)).sum().backward()
    z = logit_scale * u.astype(np.float64) + noise
    far = np.abs(z) > 8 * EPS32 * (np.abs(logit_scale * u) + np.abs(noise))
    js = np.asarray(gumbel_spike(u, tau=tau, logit_scale=logit_scale, noise=noise))
    assert np.array_equal(js[far], s.detach().numpy()[far]) and far.mean() > 0.99
    assert rel_err(g, ut.grad.numpy()) <= 1e-5


def test_keys_reproduce_and_rates_follow_the_probability():
    u = jnp.full((20_000,), 0.8)
    a = sigmoid_bernoulli(u, jax.random.key(3))
    assert np.array_equal(np.asarray(a), np.asarray(sigmoid_bernoulli(u, jax.random.key(3))))
    assert not np.array_equal(np.asarray(a), np.asarray(sigmoid_bernoulli(u, jax.random.key(4))))
    p = 1 / (1 + np.exp(-0.8))
    sd = np.sqrt(p * (1 - p) / u.size)
    for s in (a, gumbel_spike(u, jax.random.key(5)), gumbel_spike(u / 2, jax.random.key(6), logit_scale=2.0)):
        # a fixed key: deterministic; 6 standard deviations of the binomial rate
        assert abs(float(jnp.mean(s)) - p) < 6 * sd


@pytest.mark.parametrize("call, error, match", [
    (lambda u: sigmoid_bernoulli(u), ValueError, "exactly one of key"),
    (lambda u: sigmoid_bernoulli(u, jax.random.key(0), noise=np.zeros(4, np.float32)), ValueError, "exactly one"),
    (lambda u: sigmoid_bernoulli(u, noise=np.zeros(5, np.float32)), ValueError, "does not broadcast"),
    (lambda u: gumbel_spike(u, jax.random.key(0), tau=0.0), ValueError, "tau must be a finite number > 0"),
    (lambda u: gumbel_spike(u, jax.random.key(0), logit_scale="2"), TypeError, "logit_scale must be a float"),
    (lambda u: heaviside(u.astype(np.int32)), TypeError, "floating dtype"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(np.zeros(4, np.float32))
