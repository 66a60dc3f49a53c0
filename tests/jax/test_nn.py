"""The Flax NNX modules against their spikescan.nn counterparts built with the same arguments and
parameters: spikes, membranes and the gradients of the input and every learned parameter; the SNN
wrapper (per-step Linear/Conv + neurons) against the layers applied by hand; keys and chunking."""

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the JAX side needs jax (pip install 'spikescan[jax]')")
pytest.importorskip("flax", reason="the JAX modules need flax (pip install 'spikescan[jax]')")
import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from spikescan import nn as tnn  # noqa: E402
from spikescan.jax import nn as jnn  # noqa: E402
from spikescan.ops.firing import gumbel_spike as torch_gumbel  # noqa: E402
from spikescan.ops.firing import sigmoid_bernoulli as torch_sb  # noqa: E402
from tests.jax._helpers import EPS32, FMA_GRAD_TOL, rel_err  # noqa: E402


# the LIF modules' gradients where XLA may contract to FMA (see tests/jax/_helpers.py; their
# default surrogate FastSigmoid(100) is the steepest: measured 1.1e-5); without the contraction
# they agree to 1e-6 (tests/jax/test_exact.py)
STEEP_GRAD_TOL = FMA_GRAD_TOL


def _x(T=40, B=3, F=5, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal((T, B, F)) * scale + 0.3).astype(np.float32)


def _run(module, *args, method=None, **kwargs):
    """``module(*args)`` (or ``module.method``) compiled once: eager JAX compiles every primitive separately."""
    fn = nnx.jit(lambda m, *a: (getattr(m, method) if method else m)(*a, **kwargs))
    return fn(module, *args)


def _grad(module, x, loss):
    """Gradients of ``loss(module(x))`` w.r.t. x and the module's parameters, one compile."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    @jax.jit
    def f(params, x):
        return loss(nnx.merge(graphdef, params, rest)(x))

    gp, gx = jax.grad(f, argnums=(0, 1))(params, x)
    return gx, {".".join(map(str, k)): v[...] for k, v in nnx.to_flat_state(gp)}


def _torch_grad(module, x, loss):
    xt = torch.tensor(x, requires_grad=True)
    loss(module(xt)).backward()
    return xt.grad.numpy(), {k: p.grad.numpy() for k, p in module.named_parameters()}


def _set(jparam_owner, name, value):
    setattr(jparam_owner, name, nnx.Param(jnp.asarray(value, jnp.float32)))


def _membrane_margin_ok(v, threshold, margin):
    return bool(np.all(np.abs(v - threshold) > margin))


@pytest.mark.parametrize("cls", ["LIF", "PLIF"])
@pytest.mark.parametrize("reset, tau_syn", [("zero", 0.005), ("subtract", None)])
def test_lif_modules_match_torch(cls, reset, tau_syn):
    rng = np.random.default_rng(1)
    F = 5
    kw = dict(tau_syn=tau_syn, tau_mem=0.01, threshold=0.4, reset=reset, learn_threshold=True)
    if cls == "LIF":
        kw["learn_tau"] = True
    jm, tm = getattr(jnn, cls)(F, **kw), getattr(tnn, cls)(F, **kw, backend="sequential")
    th = rng.uniform(0.3, 0.5, F).astype(np.float32)
    _set(jm, "threshold", th)
    tm.threshold = torch.nn.Parameter(torch.tensor(th))
    if cls == "LIF":
        log_tau = np.log(rng.uniform(0.005, 0.02, F)).astype(np.float32)
        _set(jm.mem, "log_tau", log_tau)
        tm.mem.log_tau = torch.nn.Parameter(torch.tensor(log_tau))
    else:
        w = rng.uniform(1.0, 3.0, F).astype(np.float32)
        _set(jm.mem, "w", w)
        tm.mem.w = torch.nn.Parameter(torch.tensor(w))
    x = _x(F=F, scale=2.0)
    s_j, v_j = _run(jm, x, return_membrane=True)
    with torch.no_grad():
        b = tm.mem()
        v_t = tnn_lif_membrane(tm, torch.from_numpy(x), b)
    # the decays differ between the libraries by an ulp of exp/sigmoid (and FMA): a few eps32 of
    # the membrane per step; the spikes and gradients are compared only on data where no membrane
    # comes within a safe margin of its threshold
    margin = 1e-4
    assert _membrane_margin_ok(v_t, th, margin)
    # (relative to the membrane's scale: with the default unscaled input it reaches ~10, not ~1)
    assert np.max(np.abs(np.asarray(v_j) - v_t)) <= 1e-5 * max(1.0, float(np.abs(v_t).max()))
    s_t = tm(torch.from_numpy(x)).detach().numpy()
    assert np.array_equal(np.asarray(s_j), s_t) and 0.05 < s_t.mean() < 0.95
    wl = rng.standard_normal(x.shape).astype(np.float32)
    gx, gp = _grad(jm, x, lambda s: jnp.sum(s * wl))
    tgx, tgp = _torch_grad(tm, x, lambda s: (s * torch.from_numpy(wl)).sum())
    assert rel_err(gx, tgx) <= STEEP_GRAD_TOL
    assert set(tgp) == set(gp)
    for k, g in gp.items():
        assert rel_err(g, tgp[k]) <= STEEP_GRAD_TOL, k


def tnn_lif_membrane(tm, x, b):
    """The pre-reset membrane of a torch LIF module, through the public op it runs."""
    from spikescan.ops.lif import lif

    th = tm.threshold
    current = tm._input(x, b)
    return lif(current, b, th, reset=tm.reset, v_reset=tm.v_reset, backend="sequential",
               return_membrane=True)[1].numpy()


@pytest.mark.parametrize("tau_syn, learn", [(0.005, True), (None, False)])
def test_li_and_spsn_membranes_match_torch(tau_syn, learn):
    x = _x(T=30, F=4)
    jli, tli = jnn.LI(4, tau_syn=tau_syn, tau_mem=0.01, learn_tau=learn), tnn.LI(4, tau_syn, 0.01, learn_tau=learn)
    js, ts = (jnn.SPSN(4, tau_syn=tau_syn, tau_mem=0.01, learn_tau=learn, rngs=nnx.Rngs(0)),
              tnn.SPSN(4, tau_syn, 0.01, learn_tau=learn, backend="sequential"))
    u_t = tli(torch.from_numpy(x)).detach().numpy()
    # two leaky scans of T steps: 2 (T + 1) roundings of the summed magnitudes, twice
    tol = 8 * (x.shape[0] + 1) * EPS32 * float(np.max(np.abs(x)))
    assert np.max(np.abs(np.asarray(_run(jli, x)) - u_t)) <= tol
    assert np.max(np.abs(np.asarray(_run(js, x, method="membrane")) - ts.membrane(torch.from_numpy(x)).detach().numpy())) <= tol
    w = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    gx, gp = _grad(jli, x, lambda u: jnp.sum(u * w))
    tgx, tgp = _torch_grad(tli, x, lambda u: (u * torch.from_numpy(w)).sum())
    assert rel_err(gx, tgx) <= 1e-5
    assert set(tgp) == set(gp)
    for k, g in gp.items():
        assert rel_err(g, tgp[k]) <= 1e-5, k


@pytest.mark.parametrize("firing", ["sb", "gs"])
def test_spsn_same_noise_same_spikes_and_gradients(firing):
    x = _x(T=25, F=6, scale=3.0)
    jm = jnn.SPSN(6, tau_syn=0.005, tau_mem=0.01, firing=firing, learn_tau=True, logit_scale=2.0)
    tm = tnn.SPSN(6, 0.005, 0.01, firing=firing, learn_tau=True, logit_scale=2.0, backend="sequential")
    key = jax.random.key(0)
    noise = np.array(jax.random.uniform(key, x.shape) if firing == "sb" else jax.random.logistic(key, x.shape))
    w = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)

    def t_spikes(xt):
        u = tm.membrane(xt)
        if firing == "sb":
            return torch_sb(u, noise=torch.from_numpy(noise)), u
        return torch_gumbel(u, logit_scale=2.0, noise=torch.from_numpy(noise)), u

    s_j = np.asarray(_run(jm, x, noise=noise))
    s_t, u_t = t_spikes(torch.from_numpy(x))
    u = u_t.detach().numpy().astype(np.float64)
    edge = (np.abs(noise - 1 / (1 + np.exp(-u))) if firing == "sb" else np.abs(2 * u + noise))
    assert np.all(edge > 1e-4)  # this draw has no spike within rounding of its decision boundary
    assert np.array_equal(s_j, s_t.detach().numpy())
    graphdef, params, rest = nnx.split(jm, nnx.Param, ...)
    gp, gx = jax.jit(jax.grad(lambda p, x: jnp.sum(nnx.merge(graphdef, p, rest)(x, noise=noise) * w),
                              argnums=(0, 1)))(params, x)
    xt = torch.tensor(x, requires_grad=True)
    (t_spikes(xt)[0] * torch.from_numpy(w)).sum().backward()
    assert rel_err(gx, xt.grad.numpy()) <= 1e-5
    assert rel_err(gp["mem"]["log_tau"][...], tm.mem.log_tau.grad.numpy()) <= 1e-5
    assert rel_err(gp["syn"]["log_tau"][...], tm.syn.log_tau.grad.numpy()) <= 1e-5


def test_spsn_randomness_from_keys_and_rngs():
    x = jnp.asarray(_x(T=10, F=4))
    m = jnn.SPSN(4, rngs=nnx.Rngs(spikes=0))
    call = nnx.jit(lambda m, x, k=None: m(x, k))
    a, b = call(m, x), call(m, x)
    assert not np.array_equal(np.asarray(a), np.asarray(b))  # the stream advances
    k = jax.random.key(1)
    assert np.array_equal(np.asarray(call(m, x, k)), np.asarray(call(m, x, k)))
    with pytest.raises(ValueError, match="needs randomness"):
        jnn.SPSN(4)(x)


def test_snn_applies_per_step_layers_to_every_step():
    r = nnx.Rngs(0)
    conv, lif = nnx.Conv(2, 3, (3, 3), rngs=r), jnn.LIF(3, threshold=0.2)
    net = jnn.SNN(conv, lif)
    x = np.random.default_rng(0).uniform(0, 1, (3, 2, 5, 5, 2)).astype(np.float32)
    by_hand = lif(jnp.stack([conv(x[t]) for t in range(3)]))
    out = net(x)
    assert out.shape == (3, 2, 5, 5, 3) and np.array_equal(np.asarray(out), np.asarray(by_hand))


def test_snn_wrapper_is_one_jitted_program_with_the_same_result():
    r = nnx.Rngs(0, spikes=1)
    layers = (nnx.Linear(8, 16, rngs=r), jnn.SPSN(16, rngs=r), nnx.Linear(16, 3, rngs=r), jnn.LI(3))
    net = jnn.snn_wrapper(layers)
    x = _x(T=6, F=8)
    k = jax.random.key(7)
    # the layers one after the other, each jitted on its own
    h = x
    for i, layer in enumerate(layers):
        if isinstance(layer, nnx.Linear):
            h = _run(layer, h.reshape(-1, h.shape[-1])).reshape(h.shape[:2] + (-1,))
        elif isinstance(layer, jnn.SPSN):
            h = _run(layer, h, jax.random.split(k, 1)[0])
        else:
            h = _run(layer, h)
    assert np.allclose(np.asarray(net(x, k)), np.asarray(h), rtol=0, atol=1e-6)
    first, second = net(x), net(x)  # without a key: the layers' rngs advance through the jitted call
    assert not np.array_equal(np.asarray(first), np.asarray(second))


def test_lif_module_chunks_continue():
    m = jnn.LIF(4, tau_syn=None, threshold=0.5, input_scale=1.0)
    x = _x(T=30, F=4)
    whole = np.asarray(m(x))
    s1, v1 = m(x[:11], return_membrane=True)
    from spikescan.jax import lif

    _, state = lif(x[:11], m.mem(), 0.5, reset="zero", return_state=True)
    s2 = m(x[11:], v0=state)
    assert np.array_equal(np.concatenate([np.asarray(s1), np.asarray(s2)]), whole)


@pytest.mark.parametrize("build, x, error, match", [
    (lambda: jnn.LIF(4), np.zeros((5, 2, 3), np.float32), ValueError, "4 features"),
    (lambda: jnn.LIF(4), np.zeros((4,), np.float32), ValueError, "time-first"),
    (lambda: jnn.LI(0), None, ValueError, "features must be a positive int"),
    (lambda: jnn.LIF(3, tau_mem=1e-9), None, ValueError, "tau_mem"),
    (lambda: jnn.SPSN(3, firing="bernoulli"), None, ValueError, "firing must be one of"),
    (lambda: jnn.LIF(3, threshold=-1.0), None, ValueError, "threshold must be a number > 0"),
    (lambda: jnn.SNN(), None, ValueError, "at least one layer"),
])
def test_bad_arguments(build, x, error, match):
    with pytest.raises(error, match=match):
        m = build()
        m(x)
