"""spikescan.defaults: one default set for ops.lif / nn.LIF family / nn.LI and the JAX side,
and defaults under which a fresh network fires and learns."""

from __future__ import annotations

import ast
import inspect
import math

import pytest
import torch
from torch import nn

import spikescan.defaults as D
from spikescan import surrogate as surrogate_lib
from spikescan.nn import LI, LIF, PLIF, RLIF
from spikescan.ops import leaky_integrate, lif

F64 = torch.float64
#: constructor argument -> the default it must have
MODULE_DEFAULTS = {"tau_syn": D.TAU_SYN, "tau_mem": D.TAU_MEM, "dt": D.DT, "threshold": D.THRESHOLD,
                   "reset": D.RESET, "v_reset": D.V_RESET, "detach_reset": D.DETACH_RESET,
                   "input_scale": D.INPUT_SCALE}
OP_DEFAULTS = {"threshold": D.THRESHOLD, "reset": D.RESET, "v_reset": D.V_RESET, "detach_reset": D.DETACH_RESET}


def _defaults(fn, names):
    params = inspect.signature(fn).parameters
    return {n: params[n].default for n in names if n in params}


def _same(got: dict, want: dict):
    # repr: a defaulted time constant is a marked float (repr "0.02") or a marked None (repr "None")
    return {k: repr(v) for k, v in got.items()} == {k: repr(want[k]) for k in got}


def test_the_defaults_module_imports_nothing():
    """Every layer imports it, so it must not import any of them (no circle possible)."""
    tree = ast.parse(inspect.getsource(D))
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [getattr(n, "module", None) for n in imports] == ["__future__"]


@pytest.mark.parametrize("cls", [LIF, PLIF, RLIF, LI])
def test_torch_modules_take_the_shared_defaults(cls):
    got = _defaults(cls, MODULE_DEFAULTS)
    assert {"tau_syn", "tau_mem", "dt", "input_scale"} <= set(got)
    assert _same(got, MODULE_DEFAULTS), got
    m = cls(3)
    assert m.syn is None and m.input_scale == D.INPUT_SCALE
    torch.testing.assert_close(torch.as_tensor(m.mem(), dtype=F64).expand(3),
                               torch.full((3,), math.exp(-D.DT / D.TAU_MEM), dtype=F64), rtol=1e-7, atol=0)
    if cls is not LI:
        assert (m.reset, m.v_reset, m.detach_reset, m.threshold) == (D.RESET, D.V_RESET, D.DETACH_RESET,
                                                                     D.THRESHOLD)
        assert m.surrogate == surrogate_lib.get(D.SURROGATE, slope=D.SURROGATE_SLOPE) == surrogate_lib.DEFAULT


def test_ops_lif_takes_the_shared_defaults():
    got = _defaults(lif, OP_DEFAULTS)
    assert set(got) == set(OP_DEFAULTS) and _same(got, OP_DEFAULTS)
    assert inspect.signature(lif).parameters["surrogate"].default is None  # None: surrogate.DEFAULT


def test_jax_side_takes_the_shared_defaults():
    pytest.importorskip("flax")
    from spikescan.jax import lif as jax_lif
    from spikescan.jax import nn as jnn

    assert _same(_defaults(jax_lif, OP_DEFAULTS), OP_DEFAULTS)
    for cls in (jnn.LIF, jnn.PLIF, jnn.LI):
        got = _defaults(cls.__init__, MODULE_DEFAULTS)
        assert {"tau_syn", "tau_mem", "dt", "input_scale"} <= set(got) and _same(got, MODULE_DEFAULTS), cls
    assert jnn.LIF(3).surrogate == surrogate_lib.DEFAULT


@pytest.mark.parametrize("backend", ["sequential", "fused"])
def test_default_lif_module_is_the_default_op(backend):
    """``nn.LIF(n)(x) == ops.lif(x, exp(-dt/tau_mem))``: spikes bit for bit, input gradients equal."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(40, 3, 7, generator=g, dtype=F64) * 0.3).requires_grad_()
    layer = LIF(7, backend=backend)
    s = layer(x)
    s_op = lif(x, math.exp(-D.DT / D.TAU_MEM), backend=backend)
    assert torch.equal(s, s_op) and 0 < float(s.mean()) < 0.5
    w = torch.randn(s.shape, generator=g, dtype=F64)
    (g_mod,) = torch.autograd.grad((s * w).sum(), x)
    (g_op,) = torch.autograd.grad((s_op * w).sum(), x)
    assert torch.equal(g_mod, g_op)


def test_default_li_module_is_the_default_op():
    x = torch.randn(30, 2, 5, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(LI(5, backend="sequential")(x),
                       leaky_integrate(x, math.exp(-D.DT / D.TAU_MEM), backend="sequential"))


def _rate_task(seed: int, n=128, steps=30, n_in=20, classes=5):
    """Five noisy rate-coded prototypes: 0/1 inputs ``[T, B, n_in]`` and labels."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(classes, n_in, generator=g, dtype=F64)
    y = torch.randint(0, classes, (n,), generator=g)
    return (torch.rand(steps, n, n_in, generator=g, dtype=F64) < protos[y]).to(F64), y


@pytest.mark.parametrize("readout", ["LI membrane", "LIF spike count"])
def test_a_fresh_two_layer_network_with_defaults_fires_and_learns(readout):
    """``Linear -> LIF -> Linear -> LI`` (or ``-> LIF``, spike counts as logits), every module
    at its defaults and ``nn.Linear``'s default init: hidden neurons fire from the first batch
    and 30 Adam steps take the cross-entropy well below chance (ln 5).  float64 keeps spike
    ties away; the bounds leave a wide margin (measured: hidden rate 0.088, loss 2.04 -> 0.0004
    for the LI readout and 2.05 -> 0.009 for spike counts in 30 steps; chance 1.61)."""
    torch.manual_seed(0)
    x, y = _rate_task(0)
    out = LI(5) if readout == "LI membrane" else LIF(5)
    net = nn.Sequential(nn.Linear(20, 64), LIF(64), nn.Linear(64, 5), out).to(F64)
    with torch.no_grad():
        hidden_rate = float(net[:2](x).mean())
        assert 0.01 < hidden_rate < 0.5
        if readout != "LI membrane":
            assert float(net(x).sum()) > 0  # the output layer fires too: its counts carry gradient
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        out_t = net(x)
        logits = out_t.mean(0) if readout == "LI membrane" else out_t.sum(0)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        assert float(net[0].weight.grad.abs().sum()) > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * math.log(5) and min(losses[:10]) < 0.9 * losses[0]


def test_the_training_command_states_its_lif_settings_instead_of_using_the_defaults():
    """``spikescan train``'s LIF is the SPSN paper's baseline whatever the library defaults: the
    presets and :data:`TRAIN_NEURON_SETTINGS` write it out."""
    from spikescan.train.loop import build_model
    from spikescan.train.models import TRAIN_NEURON_SETTINGS
    from spikescan.train.presets import preset_config

    for kind in ("lif", "plif", "rlif"):
        assert TRAIN_NEURON_SETTINGS[kind] == {"reset": "zero", "detach_reset": True,
                                               "surrogate": "fast_sigmoid(slope=100)",
                                               "input_scale": "one_minus_decay"}
    net = build_model(preset_config(None, {"neuron": "lif", "dt": 1e-3}), 16, 4)
    hidden, readout = net[1], net[-1]
    assert isinstance(hidden, LIF) and hidden.syn is not None
    assert (hidden.reset, hidden.detach_reset, hidden.input_scale) == ("zero", True, "one_minus_decay")
    assert hidden.surrogate == surrogate_lib.FastSigmoid(100.0)
    assert isinstance(readout, LI) and readout.syn is not None and readout.input_scale == "one_minus_decay"
    spsn_lif = build_model(preset_config("spsn-shd-lif"), 700, 20)[1]
    assert (spsn_lif.reset, spsn_lif.detach_reset, spsn_lif.input_scale) == ("zero", True, "one_minus_decay")
    fast_lif = build_model(preset_config("fastsnn-fmnist-lif"), 784, 10)[1]
    assert (fast_lif.reset, fast_lif.detach_reset, fast_lif.input_scale, fast_lif.syn) == ("subtract", True, 1.0,
                                                                                          None)
    assert fast_lif.surrogate == surrogate_lib.FastSigmoid(100.0)


def test_neuron_kwargs_may_give_the_decay_per_step():
    from spikescan.train.loop import build_model
    from spikescan.train.presets import preset_config

    cfg = preset_config(None, {"neuron": "lif", "dt": 1e-3, "neuron_kwargs": {"beta": 0.9, "alpha": 0.5}})
    net = build_model(cfg, 16, 4)
    assert net[1].mem() == 0.9 and net[1].syn() == 0.5


@pytest.mark.parametrize("spec, want", [("fast_sigmoid(100)", surrogate_lib.FastSigmoid(100.0)),
                                        ("FastSigmoid(slope=100.0)", surrogate_lib.FastSigmoid(100.0)),
                                        (" atan( alpha = 3 ) ", surrogate_lib.ATan(3.0))])
def test_a_surrogate_named_with_its_parameter(spec, want):
    assert surrogate_lib.get(spec) == want
    assert surrogate_lib.get(repr(want)) == want  # a repr reads back


@pytest.mark.parametrize("spec, match", [("fast_sigmoid(alpha=2)", "takes only 'slope'"),
                                         ("fast_sigmoid(x)", "must be a number"),
                                         ("fast_sigmoid(-1)", "> 0"), ("nosuch(1)", "unknown surrogate")])
def test_a_bad_surrogate_spec_names_what_is_wrong(spec, match):
    with pytest.raises(ValueError, match=match):
        surrogate_lib.get(spec)


def test_a_network_at_the_defaults_exports_to_nir_and_reads_back():
    """The default reset (to 0) is the one NIR's LIF node carries: a default network round-trips."""
    pytest.importorskip("nir")
    from spikescan.export import from_nir, to_nir

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), LIF(8), nn.Linear(8, 3), LI(3)).eval()
    back = from_nir(to_nir(net))
    assert [type(m).__name__ for m in back] == ["Linear", "LIF", "Linear", "LI"]
    assert (back[1].syn, back[1].input_scale, back[1].reset, back[3].syn, back[3].input_scale) == (
        None, 1.0, "zero", None, 1.0)
    x = torch.rand(40, 3, 6)
    with torch.no_grad():
        assert net[:2](x).sum() > 0 and torch.equal(back(x), net(x))
