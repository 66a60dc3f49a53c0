"""The README's migration table ("Coming from snnTorch / Norse / SpikingJelly"), row by row.

Each test builds the peer's neuron and the spikescan neuron from the row's mapping, runs the
same input and compares: spikes exactly, membranes (where the peer exposes them) to rounding.
Rows whose equations do not map exactly document the known difference instead.

Both sides run in float64 where the peer allows it (all three do for these neurons: the peers'
float32 parameter tensors promote to the float64 input; the spikescan side gets the peer's
float32-rounded decay, so both use the same number).  The peers' update formulas round
differently from ours (Norse's and SpikingJelly's Euler form ``v + (x - v) / tau`` against
``b v + (1 - b) x``), so every case first checks that no membrane of the spikescan run comes
within ``MARGIN`` of its threshold: a spike that differs is then a real difference, not
rounding.  The inputs are random currents, scaled so that each neuron fires several times.
"""

from __future__ import annotations

import math

import pytest
import torch

from spikescan.nn import LIF, PLIF
from spikescan.nn.state import LIFState
from spikescan.surrogate import ATan, FastSigmoid, Sigmoid

pytestmark = pytest.mark.interop

T, B, N = 40, 3, 16
MARGIN = 1e-6  # far above float64 rounding of these |v| < 10 membranes over T steps
MEM_TOL = 1e-9


def _importorskip(name):
    return pytest.importorskip(name, reason=f"{name} is not installed (pip install 'spikescan[peers]')")


def _inputs(seed: int = 0, scale: float = 1.0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, N, generator=g, dtype=torch.float64) * scale).to(dtype)


def _f32(x: float) -> float:
    """``x`` rounded to float32, as the peers store their parameters."""
    return float(torch.tensor(x, dtype=torch.float32))


def _run(module, x, *, grad: bool = False):
    """spikescan ``(s, v)`` (v pre-reset) on the reference loop, with the away-from-threshold check."""
    module.backend = "sequential"
    x = x.clone().requires_grad_(grad)
    s, v = module(x, return_membrane=True)
    th = module.threshold
    assert (v.detach() - th).abs().min() > MARGIN, "an input too close to the threshold: pick another seed"
    assert 0 < s.sum() < s.numel(), "the test input must make the neurons fire sometimes"
    return x, s, v


def _post_reset(module, s, v):
    if module.reset == "zero":
        return v * (1 - s) + module.v_reset * s
    return v - module.threshold * s


# ---------------------------------------------------------------------------------------------
# snnTorch


def _snn_loop(neuron, x, synaptic: bool = False):
    spk, mems, syns = [], [], []
    if synaptic:
        syn, mem = neuron.init_synaptic()
    else:
        mem = neuron.init_leaky()
    for x_t in x:
        if synaptic:
            s_t, syn, mem = neuron(x_t, syn, mem)
            syns.append(syn)
        else:
            s_t, mem = neuron(x_t, mem)
        spk.append(s_t)
        mems.append(mem)
    return torch.stack(spk).to(x.dtype), torch.stack(mems), (torch.stack(syns) if synaptic else None)


@pytest.mark.parametrize("surrogate", ["atan", "fast_sigmoid", "sigmoid"])
def test_snntorch_leaky_zero_reset(surrogate):
    """``Leaky(beta, threshold, reset_mechanism="zero", spike_grad)`` (reset_delay default) is
    ``LIF(beta=, detach_reset=True, threshold=, surrogate=)`` (snnTorch detaches the zero
    reset's spike): spikes, pre-reset membranes and input gradients."""
    snn = _importorskip("snntorch")
    from snntorch import surrogate as sg
    beta, th = 0.9, 0.8
    peer_grad, ours = {"atan": (sg.atan(alpha=3.0), ATan(3.0)),
                       "fast_sigmoid": (sg.fast_sigmoid(slope=25), FastSigmoid(25.0)),
                       "sigmoid": (sg.sigmoid(slope=10), Sigmoid(10.0))}[surrogate]
    peer = snn.Leaky(beta=beta, threshold=th, reset_mechanism="zero", spike_grad=peer_grad)
    m = LIF(N, beta=_f32(beta), reset="zero", detach_reset=True, threshold=th, surrogate=ours)
    x, s, v = _run(m, _inputs(1, 0.3), grad=True)
    xp = x.detach().clone().requires_grad_(True)
    ps, pv, _ = _snn_loop(peer, xp)
    assert torch.equal(ps, s)
    torch.testing.assert_close(pv, v, rtol=0, atol=MEM_TOL)
    w = torch.randn(T, B, N, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    (gp,) = torch.autograd.grad((ps * w).sum(), xp)
    (g,) = torch.autograd.grad((s * w).sum(), x)
    # snnTorch's spikes are float32 whatever the input: its backward rounds to float32
    torch.testing.assert_close(gp, g, rtol=1e-5, atol=1e-6 * float(g.abs().max()))


def test_snntorch_leaky_subtract_reset_delay_false():
    """``Leaky(beta, reset_mechanism="subtract", reset_delay=False)`` is
    ``LIF(beta=, tau_syn=None, input_scale=1.0, reset="subtract", detach_reset=False)``
    (exact while a membrane after its reset stays below threshold, as here; snnTorch returns
    the post-reset membrane then)."""
    snn = _importorskip("snntorch")
    beta, th = 0.85, 1.0
    peer = snn.Leaky(beta=beta, threshold=th, reset_mechanism="subtract", reset_delay=False)
    m = LIF(N, beta=_f32(beta), tau_syn=None, input_scale=1.0, reset="subtract", detach_reset=False, threshold=th)
    x, s, v = _run(m, _inputs(2, 0.4))
    assert (_post_reset(m, s, v) < th).all()
    ps, pv, _ = _snn_loop(peer, x)
    assert torch.equal(ps, s)
    torch.testing.assert_close(pv, _post_reset(m, s, v), rtol=0, atol=MEM_TOL)


def test_snntorch_leaky_subtract_default_reset_delay_is_a_known_difference():
    """snnTorch's default ``reset_delay=True`` subtracts the threshold at the step *after* a
    spike, outside the decay: ``v[t] = beta v[t-1] + x[t] - th s[t-1]``; spikescan subtracts it
    from the membrane that then decays: ``v[t] = beta (v[t-1] - th s[t-1]) + x[t]``.  No
    spikescan setting gives snnTorch's equation; ``reset_delay=False`` is the exact row.  The
    two agree up to the first spike and the membranes differ by ``(1 - beta) th`` just after."""
    snn = _importorskip("snntorch")
    beta, th = 0.85, 1.0
    peer = snn.Leaky(beta=beta, threshold=th, reset_mechanism="subtract")
    m = LIF(N, beta=_f32(beta), tau_syn=None, input_scale=1.0, reset="subtract", threshold=th)
    x, s, v = _run(m, _inputs(2, 0.4))
    ps, pv, _ = _snn_loop(peer, x)
    first = s.reshape(T, -1).argmax(0)  # step of each neuron's first spike
    fired = s.reshape(T, -1).any(0)
    steps = torch.arange(T)[:, None]
    upto = (steps <= first[None]) | ~fired[None]
    pv2, v2 = pv.reshape(T, -1), v.reshape(T, -1)
    torch.testing.assert_close(pv2[upto], v2[upto], rtol=0, atol=MEM_TOL)
    after = torch.zeros_like(upto)
    after[first[fired] + 1, torch.nonzero(fired)[:, 0]] = first[fired] + 1 < T
    diff = (v2 - pv2)[after]  # ours is higher: beta th subtracted instead of th
    torch.testing.assert_close(diff, torch.full_like(diff, (1 - _f32(beta)) * th), rtol=0, atol=1e-7)


def test_snntorch_synaptic_reset_delay_false():
    """``Synaptic(alpha, beta, reset_mechanism="subtract", reset_delay=False)`` is
    ``LIF(alpha=, beta=, input_scale=1.0, reset="subtract", detach_reset=False)``; its ``syn``
    is our current ``i``."""
    snn = _importorskip("snntorch")
    alpha, beta, th = 0.7, 0.9, 1.0
    peer = snn.Synaptic(alpha=alpha, beta=beta, threshold=th, reset_mechanism="subtract", reset_delay=False)
    m = LIF(N, alpha=_f32(alpha), beta=_f32(beta), input_scale=1.0, reset="subtract", detach_reset=False,
            threshold=th)
    x, s, v = _run(m, _inputs(3, 0.12))
    assert (_post_reset(m, s, v) < th).all()
    ps, pv, psyn = _snn_loop(peer, x, synaptic=True)
    assert torch.equal(ps, s)
    torch.testing.assert_close(pv, _post_reset(m, s, v), rtol=0, atol=MEM_TOL)
    _, state = m(x, return_state=True)
    torch.testing.assert_close(psyn[-1], state.i, rtol=0, atol=MEM_TOL)


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_snntorch_synaptic_zero_reset_delay_false(reset):
    """``Synaptic(alpha, beta, reset_mechanism=, reset_delay=False)`` is
    ``LIF(alpha=, beta=, input_scale=1.0, reset=, detach_reset=False)`` for both resets;
    snnTorch returns the post-reset membrane."""
    snn = _importorskip("snntorch")
    alpha, beta, th = 0.7, 0.9, 1.0
    peer = snn.Synaptic(alpha=alpha, beta=beta, threshold=th, reset_mechanism=reset, reset_delay=False)
    m = LIF(N, alpha=_f32(alpha), beta=_f32(beta), input_scale=1.0, reset=reset, detach_reset=False, threshold=th)
    x, s, v = _run(m, _inputs(3, 0.12))
    assert (_post_reset(m, s, v) < th).all()
    ps, pv, _ = _snn_loop(peer, x, synaptic=True)
    assert torch.equal(ps, s)
    torch.testing.assert_close(pv, _post_reset(m, s, v), rtol=0, atol=MEM_TOL)


def test_snntorch_synaptic_zero_reset_default_delay_is_a_known_difference():
    """snnTorch's ``Synaptic(reset_mechanism="zero")`` with the default ``reset_delay=True``
    zeroes the whole update of the step after a spike, the new synaptic current included
    (``mem[t] = (1 - s[t-1]) (beta mem[t-1] + syn[t])``); spikescan zeroes the membrane and
    integrates that step's current (``v[t] = beta (1 - s[t-1]) v[t-1] + i[t]``).  Closest:
    ``reset_delay=False`` (exact, above).  The runs agree up to each neuron's first spike; at
    the step after it snnTorch's membrane is 0 and ours is ``i[t]``."""
    snn = _importorskip("snntorch")
    alpha, beta, th = 0.7, 0.9, 1.0
    peer = snn.Synaptic(alpha=alpha, beta=beta, threshold=th, reset_mechanism="zero")
    m = LIF(N, alpha=_f32(alpha), beta=_f32(beta), input_scale=1.0, reset="zero", threshold=th)
    x, s, v = _run(m, _inputs(3, 0.12))
    ps, pv, _ = _snn_loop(peer, x, synaptic=True)
    s2, pv2, v2 = s.reshape(T, -1), pv.reshape(T, -1), v.reshape(T, -1)
    first, fired = s2.argmax(0), s2.any(0)
    upto = (torch.arange(T)[:, None] <= first[None]) | ~fired[None]
    torch.testing.assert_close(pv2[upto], v2[upto], rtol=0, atol=MEM_TOL)
    cols = torch.nonzero(fired & (first + 1 < T))[:, 0]
    after = first[cols] + 1
    assert (pv2[after, cols] == 0).all() and (v2[after, cols] > 0).all()


# ---------------------------------------------------------------------------------------------
# Norse


@pytest.mark.parametrize("v_reset", [0.0, -0.2])
def test_norse_lif_parameters(v_reset):
    """``norse.torch.LIF(LIFParameters(tau_mem_inv, tau_syn_inv, v_th, v_reset, method="super",
    alpha), dt)`` (``v_leak = 0``) is ``LIF(beta=1 - dt*tau_mem_inv, alpha=1 - dt*tau_syn_inv,
    threshold=v_th, v_reset=v_reset, reset="zero", detach_reset=False,
    surrogate=FastSigmoid(1.0), input_scale="one_minus_decay")`` (Norse's forward-Euler decays;
    ``1 - beta`` = ``dt*tau_mem_inv``).  Norse exposes the post-reset membrane and current of
    the last step.  Spikes, that state and input gradients.

    Norse 1.1.0's ``SuperSpike`` backward is ``1 / (|x| + 1)^2`` whatever ``alpha`` (it drops
    the parameter), so the surrogate is ``FastSigmoid(1.0)``, not ``FastSigmoid(alpha)``."""
    norse = _importorskip("norse.torch")
    dt, tm, ts, th = 1e-3, 200.0, 400.0, 0.3
    p = norse.LIFParameters(tau_mem_inv=torch.tensor(tm), tau_syn_inv=torch.tensor(ts), v_th=torch.tensor(th),
                            v_reset=torch.tensor(v_reset), method="super", alpha=torch.tensor(60.0))
    peer = norse.LIF(p, dt=dt)
    # Norse forms dt * tau_inv in float32 (its parameters' dtype): the same numbers here
    dm, ds = float(dt * torch.tensor(tm)), float(dt * torch.tensor(ts))
    m = LIF(N, beta=1 - dm, alpha=1 - ds, threshold=_f32(th), v_reset=_f32(v_reset), reset="zero",
            detach_reset=False, surrogate=FastSigmoid(1.0), input_scale="one_minus_decay")
    x, s, v = _run(m, _inputs(4, 0.5), grad=True)
    xp = x.detach().clone().requires_grad_(True)
    ps, pstate = peer(xp)
    assert torch.equal(ps.to(s.dtype), s)
    w = torch.randn(T, B, N, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    (gp,) = torch.autograd.grad((ps * w).sum(), xp)
    (g,) = torch.autograd.grad((s * w).sum(), x)
    torch.testing.assert_close(gp, g, rtol=1e-5, atol=1e-6 * float(g.abs().max()))
    x = x.detach()
    _, state = m(x, return_state=True)
    torch.testing.assert_close(pstate.v, state.v, rtol=0, atol=MEM_TOL)
    # Norse stores the current after this step's decay: a i[T-1]
    torch.testing.assert_close(pstate.i, (1 - ds) * state.i, rtol=0, atol=MEM_TOL)


# ---------------------------------------------------------------------------------------------
# SpikingJelly


def _sj_surrogate(name):
    from spikingjelly.activation_based import surrogate as sg
    return {"atan": (sg.ATan(alpha=3.0), ATan(3.0)), "sigmoid": (sg.Sigmoid(alpha=6.0), Sigmoid(6.0))}[name]


def _sj_run(node, x):
    from spikingjelly.activation_based import functional
    functional.reset_net(node)
    return node(x).to(x.dtype)


@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("surrogate", ["atan", "sigmoid"])
def test_spikingjelly_lif_node(decay_input, v_reset, detach_reset, surrogate):
    """``LIFNode(tau, decay_input, v_threshold, v_reset, detach_reset, surrogate_function)``
    (``step_mode="m"``) is ``LIF(beta=1 - 1/tau, tau_syn=None, threshold=v_threshold,
    reset="zero" (v_reset=0.0) / "subtract" (v_reset=None), detach_reset=,
    input_scale="one_minus_decay" (decay_input=True) / 1.0 (False), surrogate=ATan(alpha) /
    Sigmoid(alpha))``: spikes and input gradients."""
    _importorskip("spikingjelly")
    from spikingjelly.activation_based import neuron
    tau, th = 4.0, 0.6
    peer_sg, ours = _sj_surrogate(surrogate)
    node = neuron.LIFNode(tau=tau, decay_input=decay_input, v_threshold=th, v_reset=v_reset,
                          detach_reset=detach_reset, surrogate_function=peer_sg, step_mode="m")
    m = LIF(N, beta=1 - 1 / tau, tau_syn=None, threshold=th, reset="zero" if v_reset is not None else "subtract",
            detach_reset=detach_reset, input_scale="one_minus_decay" if decay_input else 1.0, surrogate=ours)
    x, s, _ = _run(m, _inputs(5, 1.5 if decay_input else 0.35), grad=True)
    xp = x.detach().clone().requires_grad_(True)
    ps = _sj_run(node, xp)
    assert torch.equal(ps, s)
    w = torch.randn(T, B, N, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    (gp,) = torch.autograd.grad((ps * w).sum(), xp)
    (g,) = torch.autograd.grad((s * w).sum(), x)
    torch.testing.assert_close(gp, g, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("decay_input", [True, False])
def test_spikingjelly_nonzero_v_reset_is_an_input_offset(decay_input):
    """A SpikingJelly ``v_reset != 0`` also moves the leak's resting point to ``v_reset``
    (``v + (x - (v - v_reset)) / tau``); spikescan leaks to 0.  Closest: ``v_reset=`` the same
    and the input offset by ``v_reset`` (``decay_input=True``) or ``v_reset / tau`` (False),
    and the initial membrane ``v_reset`` (SpikingJelly starts every neuron at ``v_reset``),
    which gives identical spikes."""
    _importorskip("spikingjelly")
    from spikingjelly.activation_based import neuron
    tau, th, vr = 4.0, 0.6, -0.3
    node = neuron.LIFNode(tau=tau, decay_input=decay_input, v_threshold=th, v_reset=vr, step_mode="m")
    m = LIF(N, beta=1 - 1 / tau, tau_syn=None, threshold=th, reset="zero", v_reset=vr,
            input_scale="one_minus_decay" if decay_input else 1.0)
    x = _inputs(6, 2.0 if decay_input else 0.5)
    offset = vr if decay_input else vr / tau
    m.backend = "sequential"
    s = m(x + offset, LIFState(i=None, v=torch.full((B, N), vr, dtype=x.dtype)))
    assert 0 < s.sum() < s.numel()
    assert torch.equal(_sj_run(node, x), s)
    _, s_plain, _ = _run(LIF(N, beta=1 - 1 / tau, tau_syn=None, threshold=th, reset="zero", v_reset=vr,
                             input_scale="one_minus_decay" if decay_input else 1.0), x)
    assert not torch.equal(s_plain, s)  # without the offset the resting points differ


@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_spikingjelly_parametric_lif_node(decay_input, v_reset):
    """``ParametricLIFNode(init_tau, decay_input, v_threshold, v_reset, detach_reset,
    surrogate_function)`` is ``PLIF(beta=1 - 1/init_tau, tau_syn=None, ...)`` as the LIFNode
    row; SpikingJelly learns ``w`` with ``1/tau = sigmoid(w)``, we learn ``w' = -w``
    (``beta = sigmoid(w')``), so the decay gradients are opposite in sign."""
    _importorskip("spikingjelly")
    from spikingjelly.activation_based import neuron
    init_tau, th = 3.0, 0.6
    node = neuron.ParametricLIFNode(init_tau=init_tau, decay_input=decay_input, v_threshold=th, v_reset=v_reset,
                                    detach_reset=True, surrogate_function=_sj_surrogate("atan")[0],
                                    step_mode="m").double()
    m = PLIF(N, beta=1 - 1 / init_tau, tau_syn=None, threshold=th, reset="zero" if v_reset is not None else "subtract",
             detach_reset=True, input_scale="one_minus_decay" if decay_input else 1.0, surrogate=ATan(3.0)).double()
    torch.testing.assert_close(m.mem(), 1 - node.w.sigmoid().expand(N), rtol=0, atol=1e-15)
    x, s, _ = _run(m, _inputs(7, 1.5 if decay_input else 0.4))
    ps = _sj_run(node, x)
    assert torch.equal(ps, s)
    w = torch.randn(T, B, N, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    (ps * w).sum().backward()
    (s * w).sum().backward()
    torch.testing.assert_close(-m.mem.w.grad.sum(), node.w.grad, rtol=1e-6, atol=1e-9)


def test_beta_is_the_peers_decay_exactly():
    """The mapping's arithmetic: ``beta`` is used as given (no ``tau`` round trip)."""
    assert LIF(3, beta=0.9).mem() == 0.9
    assert math.isclose(LIF(3, beta=0.9).mem._tau, -1e-3 / math.log(0.9))
