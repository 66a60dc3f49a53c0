"""The JAX modules to and from the torch side and NIR: parameters copied exactly (float64 outputs agree
to rounding), NIR files written from JAX load in torch and the other way, SPSN exported as its
deterministic firing."""

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the JAX side needs jax (pip install 'spikescan[jax]')")
pytest.importorskip("flax", reason="the JAX modules need flax (pip install 'spikescan[jax]')")
pytest.importorskip("nir", reason="NIR export needs nir (pip install 'spikescan[nir]')")
import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from spikescan import export as texport  # noqa: E402
from spikescan import nn as tnn  # noqa: E402
from spikescan.jax import nn as jnn  # noqa: E402
from spikescan.jax.export import from_nir, from_torch, read, to_nir, to_torch, write  # noqa: E402


def _jax_net(seed=0):
    r = nnx.Rngs(seed)
    net = jnn.SNN(nnx.Linear(6, 8, rngs=r),
                  jnn.LIF(8, tau_syn=0.02, threshold=0.3, learn_tau=True, learn_threshold=True),
                  nnx.Linear(8, 5, rngs=r), jnn.PLIF(5, tau_syn=None, threshold=0.2), nnx.Linear(5, 4, rngs=r),
                  jnn.LI(4, tau_syn=0.02, learn_tau=True, input_scale="one_minus_decay"))
    # per-neuron parameters away from their initial values, so a forgotten copy shows
    rng = np.random.default_rng(seed)
    net.layers[1].mem.log_tau = nnx.Param(jnp.log(jnp.asarray(rng.uniform(0.005, 0.03, 8), jnp.float32)))
    net.layers[1].threshold = nnx.Param(jnp.asarray(rng.uniform(0.2, 0.4, 8), jnp.float32))
    net.layers[3].mem.w = nnx.Param(jnp.asarray(rng.uniform(0.5, 3.0, 5), jnp.float32))
    net.layers[5].syn.log_tau = nnx.Param(jnp.log(jnp.asarray(rng.uniform(0.005, 0.03, 4), jnp.float32)))
    return net


def _loop(model):
    """The torch chain on its reference loops: float64 numba kernels would compile for seconds here."""
    for m in model:
        if hasattr(m, "backend"):
            m.backend = "sequential"
    return model


def _x(T=30, B=3, F=6, seed=1):
    return np.random.default_rng(seed).uniform(0, 1.5, (T, B, F))


def _run64(net, x):
    """The JAX network with float64 parameters on float64 ``x``, compiled once (call under enable_x64)."""
    graphdef, state = nnx.split(net)
    state = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state)
    return np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.asarray(x)))


def test_to_torch_computes_the_same_network():
    net = _jax_net()
    tm = _loop(to_torch(net, dtype=torch.float64))
    assert [type(m).__name__ for m in tm] == ["Linear", "LIF", "Linear", "PLIF", "Linear", "LI"]
    x = _x()
    with jax.enable_x64(True):
        out = _run64(net, x)
        assert out.dtype == np.float64
    ref = tm(torch.from_numpy(x)).detach().numpy()
    # float64: a flipped spike would move the readout by ~1e-2, rounding by ~1e-15
    assert np.max(np.abs(out - ref)) <= 1e-9 and np.max(np.abs(ref)) > 1e-3


def test_from_torch_computes_the_same_network_and_round_trips():
    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Linear(6, 7), tnn.LIF(7, threshold=0.25, learn_tau=True),
                             torch.nn.Linear(7, 3), tnn.LI(3, tau_syn=None)).double()
    _loop(tm)
    with torch.no_grad():
        tm[1].mem.log_tau.add_(torch.linspace(-0.5, 0.5, 7, dtype=torch.float64))
    net = from_torch(tm)
    x = _x(F=6, seed=2)
    with jax.enable_x64(True):
        out = _run64(net, x)
    assert np.max(np.abs(out - tm(torch.from_numpy(x)).detach().numpy())) <= 1e-6  # the JAX copy is float32
    back = to_torch(net, dtype=torch.float64)
    for (name, p), q in zip(tm.named_parameters(), back.parameters()):
        assert torch.equal(p.float().double(), q), name


def test_nir_file_from_jax_loads_in_torch_and_back(tmp_path):
    # a layout the NIR import takes: per-neuron thresholds and readout decays; spikescan.export's
    # import needs one input scale per LIF layer, so that LIF's decay is shared
    r = nnx.Rngs(3)
    net = jnn.SNN(nnx.Linear(6, 8, rngs=r), jnn.LIF(8, threshold=0.3, learn_threshold=True), nnx.Linear(8, 4, rngs=r),
                  jnn.LI(4, learn_tau=True))
    net.layers[1].threshold = nnx.Param(jnp.asarray(np.random.default_rng(3).uniform(0.2, 0.4, 8), jnp.float32))
    net.layers[3].mem.log_tau = nnx.Param(jnp.log(jnp.linspace(0.01, 0.03, 4)))
    path = tmp_path / "net.nir"
    write(path, net)
    t_model = _loop(texport.read(path).double())
    j_model = read(path)
    x = _x(seed=4)
    with jax.enable_x64(True):
        out = _run64(j_model, x)
        orig = _run64(net, x)
    assert np.max(np.abs(out - t_model(torch.from_numpy(x)).detach().numpy())) <= 1e-9
    # NIR stores float32 time constants: the re-imported decays are the originals to float32 rounding
    assert np.max(np.abs(out - orig)) <= 1e-3 * np.max(np.abs(orig))


def test_torch_written_nir_loads_in_jax(tmp_path):
    tm = torch.nn.Sequential(torch.nn.Linear(6, 5), tnn.LIF(5, tau_syn=None, threshold=0.2),
                             torch.nn.Linear(5, 3), tnn.LI(3))
    texport.write(tmp_path / "t.nir", tm)
    net = read(tmp_path / "t.nir")
    x = _x(seed=5)
    with jax.enable_x64(True):
        out = _run64(net, x)
    ref = _loop(texport.read(tmp_path / "t.nir").double())(torch.from_numpy(x)).detach().numpy()
    assert np.max(np.abs(out - ref)) <= 1e-9


def test_spsn_exports_its_deterministic_firing():
    r = nnx.Rngs(0)
    net = jnn.SNN(nnx.Linear(6, 4, rngs=r), jnn.SPSN(4, rngs=r), nnx.Linear(4, 2, rngs=r), jnn.LI(2))
    with pytest.raises(ValueError, match="stochastic SPSN"):
        to_nir(net)
    graph = to_nir(net, spsn="threshold")
    j, t = from_nir(graph), _loop(texport.from_nir(graph).double())
    assert [type(m).__name__ for m in j.layers] == ["Linear", "LI", "Threshold", "Linear", "LI"]
    x = _x(seed=6) * 4 - 2
    with jax.enable_x64(True):
        out = _run64(j, x)
    assert np.max(np.abs(out - t(torch.from_numpy(x)).detach().numpy())) <= 1e-9


def test_unsupported_layers_are_named():
    net = jnn.SNN(nnx.Linear(3, 3, rngs=nnx.Rngs(0)), jax.nn.relu)
    with pytest.raises(ValueError, match="layer 1 .* no torch counterpart"):
        to_torch(net)
    with pytest.raises(ValueError, match="layer 0 .* no JAX counterpart"):
        from_torch(torch.nn.Sequential(torch.nn.ReLU()))
