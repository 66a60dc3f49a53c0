"""State in, state out: a sequence split into chunks and fed with the carried state gives the
whole sequence's outputs (spikes bit for bit) and gradients, and ``step`` equals the sequence
call -- for every neuron module and backend (issue 14, item 1)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from spikescan.nn import IPSU, LI, LIF, PLIF, PSU, RLIF, RPSU, SPSN, MaxMembraneReadout, SingleSpikeLIF
from spikescan.nn.state import (LIFState, LIState, MaxMembraneState, PSUState, RLIFState, SingleSpikeState,
                                SPSNState)
from spikescan.ops.spsn import spsn_step

F32, F64 = torch.float32, torch.float64
T, B, F = 70, 3, 6  # T crosses two of the fused CPU kernels' 32-step checkpoint segments
CUTS = {"1": (1,), "T/2": (T // 2,), "T-1": (T - 1,), "1,T/2,T-1": (1, T // 2, T - 1)}

# Chunked and whole runs do the same floating-point operations step by step; only sums over time
# (parameter gradients, and the gradient reaching a chunk through the carried state) are split
# into per-chunk partial sums.  Reordering a sum of n <= T*B*F ~ 1.3e3 float64 terms moves it by
# at most n * eps64 ~ 1.5e-13 of the sum of the terms' magnitudes; measured <= 3e-15 of the
# gradient's largest entry, so 1e-12 of it leaves a factor ~7 for magnitude sums above the
# result.  (The issue asks for 1e-5.)
GRAD_TOL64 = 1e-12
# The parallel scans ("fft", "chunked") compute each chunk's membrane by another association of
# the same sums: float64 rounding of O(T) operations of size <= max|u| each; LI's output is
# that membrane, compared to this relative error.
SCAN_TOL64 = 1e-12


def _gen():
    return torch.Generator().manual_seed(7)


# name -> (factory(backend), backends, output is a time sequence)
MODULES = {
    "LIF": (lambda b: LIF(F, threshold=0.3, learn_tau=True, learn_threshold=True, backend=b),
            ("sequential", "fused"), True),
    "LIF-subtract-no-syn": (lambda b: LIF(F, tau_syn=None, threshold=0.3, reset="subtract", detach_reset=False,
                                          backend=b), ("sequential", "fused"), True),
    "PLIF": (lambda b: PLIF(F, threshold=0.3, backend=b), ("sequential", "fused"), True),
    "RLIF": (lambda b: RLIF(F, threshold=0.3, learn_tau=True, recurrent_bias=True), ("loop",), True),
    "LI": (lambda b: LI(F, learn_tau=True, backend=b), ("sequential", "fused", "fft", "chunked"), True),
    "SPSN-sb": (lambda b: SPSN(F, learn_tau=True, backend=b, generator=_gen()), ("sequential", "fused"), True),
    "SPSN-gs-no-syn": (lambda b: SPSN(F, tau_syn=None, firing="gs", logit_scale=2.0, backend=b, generator=_gen()),
                       ("sequential", "fused"), True),
    "PSU": (lambda b: PSU(threshold=0.3, backend=b), ("sequential", "auto"), True),
    "PSU-alpha": (lambda b: PSU(tau=3.0, threshold=0.3, learn_alpha=True, backend=b), ("sequential", "auto"), True),
    "SingleSpikeLIF": (lambda b: SingleSpikeLIF(F, threshold=0.3, learn_tau=True, backend=b),
                       ("sequential", "fused"), True),
    "SingleSpikeLIF-straight-through": (lambda b: SingleSpikeLIF(F, threshold=0.3, straight_through=True, backend=b),
                                        ("sequential", "fused"), True),
    "MaxMembraneReadout": (lambda b: MaxMembraneReadout(F, learn_tau=True, backend=b), ("sequential", "fused"),
                           False),
}
CASES = [(name, backend) for name, (_, backends, _) in MODULES.items() for backend in backends]
EXACT = sorted({(n, b) for n, b in CASES if not (n == "LI" and b in ("fft", "chunked"))})  # sorted: one order in every process (pytest-xdist)
# PSU's reset term integrates torch.sigmoid(H), and torch's CPU sigmoid may round the last bit
# differently for the same value depending on where it falls in the tensor (vectorized body or
# scalar tail): its state agrees to a few ulps (the spikes, compared exactly, are equal unless
# V lands within an ulp of the threshold).
SIGMOID_STATE = {"PSU", "PSU-alpha"}


def assert_states_equal(name, got, expected):
    for a, b in zip(tensors(got), tensors(expected)):
        assert a.dtype == b.dtype
        if name in SIGMOID_STATE:
            assert rel_err(a, b) <= 16 * torch.finfo(a.dtype).eps
        else:
            assert torch.equal(a, b)


def make(name, backend, dtype=F64):
    return MODULES[name][0](None if backend == "loop" else backend).to(dtype)


def x_for(dtype=F64, seed=0, shape=(T, B, F)):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=F64) * 2 + 0.5).to(dtype)


def reseed(m):
    if isinstance(m, SPSN):
        m.generator.manual_seed(7)  # the first call of a sequence draws its seed from here


def run(m, x, cuts=()):
    """The module over ``x`` in chunks split at ``cuts`` (none: the whole), each fed the state of
    the one before: ``(output, final state)``; the output is the chunks' outputs concatenated
    over time (a readout's: the last chunk's logits)."""
    reseed(m)
    outs, state, start = [], None, 0
    for stop in (*cuts, x.shape[0]):
        out, state = m(x[start:stop], state, return_state=True)
        outs.append(out)
        start = stop
    return (torch.cat(outs) if MODULES_BY_TYPE.get(type(m), True) else outs[-1]), state


MODULES_BY_TYPE = {MaxMembraneReadout: False}


def tensors(state):
    return [t for t in state if isinstance(t, torch.Tensor) and t.is_floating_point()]


def loss(out, state, seed=1):
    """A random linear function of the output and of the final state (so the gradient reaching
    the state's outputs is tested too)."""
    g = torch.Generator().manual_seed(seed)
    total = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for t in tensors(state):
        total = total + (t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum()
    return total


def grads(m, x, cuts=()):
    x = x.detach().requires_grad_()
    out, state = run(m, x, cuts)
    leaves = [x, *(p for p in m.parameters() if p.requires_grad)]
    return torch.autograd.grad(loss(out, state), leaves)


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def max_rel_err(ga, gb):
    return max(rel_err(a, b) for a, b in zip(ga, gb))


# ---- chunked == whole ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("cuts", CUTS, ids=str)
@pytest.mark.parametrize("name,backend", CASES)
def test_chunked_outputs_and_state_equal_whole(name, backend, cuts, dtype):
    m = make(name, backend, dtype)
    x = x_for(dtype)
    with torch.no_grad():
        whole, s_whole = run(m, x)
        chunked, s_chunked = run(m, x, CUTS[cuts])
    if MODULES[name][2] and not isinstance(m, LI):
        assert 0 < float(whole.mean()) < 1, "the test needs spikes and silences"
    if (name, backend) in EXACT:
        assert torch.equal(chunked, whole)
        assert_states_equal(name, s_chunked, s_whole)
    else:
        assert rel_err(chunked.double(), whole.double()) <= (SCAN_TOL64 if dtype == F64 else 1e-5)


@pytest.mark.parametrize("cuts", CUTS, ids=str)
@pytest.mark.parametrize("name,backend", CASES)
def test_chunked_gradients_equal_whole(name, backend, cuts):
    m = make(name, backend)
    x = x_for()
    err = max_rel_err(grads(m, x, CUTS[cuts]), grads(m, x))
    assert err <= GRAD_TOL64, err


@pytest.mark.parametrize("name,backend", [c for c in CASES if c[0] != "MaxMembraneReadout"])
def test_the_state_carries_the_gradient(name, backend):
    """The control of the test above: with the state detached between chunks (truncated BPTT)
    the first chunk's input gets only its own steps' gradient, which differs from the whole's --
    so the equality above is not vacuous."""
    m = make(name, backend)
    cut = T // 2
    x = x_for().requires_grad_()
    reseed(m)
    out1, state = m(x[:cut], return_state=True)
    out2 = m(x[cut:], type(state)(*(t.detach() if isinstance(t, torch.Tensor) else t for t in state)))
    g_truncated, = torch.autograd.grad(loss(torch.cat([out1, out2]), ()), [x])
    out, _ = run(m, x)
    g_whole, = torch.autograd.grad(loss(out, ()), [x])
    assert rel_err(g_truncated[cut:], g_whole[cut:]) <= GRAD_TOL64  # the last chunk's own steps
    assert rel_err(g_truncated[:cut], g_whole[:cut]) > 1e-3


@pytest.mark.parametrize("name,backend", [c for c in EXACT if c[0] not in ("PSU", "PSU-alpha")
                                          and not (c[0].startswith("SPSN") and c[1] != "fused")])
def test_stateless_call_equals_stateful(name, backend):
    """A plain call (no state asked for) computes what the stateful whole call computes.  (The
    non-fused SPSN backends draw torch.rand when stateless, the counter-based noise when
    stateful; PSU's stateless "auto" is the T×T matmul -- both tested apart.)"""
    m = make(name, backend)
    x = x_for()
    with torch.no_grad():
        reseed(m)
        plain = m(x)
        stateful, _ = run(m, x)
    assert torch.equal(plain, stateful)


def test_psu_recurrences_equal_the_matrix_form():
    m = PSU(threshold=0.3).double()  # auto: the T×T matmul without state, the recurrences with it
    x = x_for()
    s, v = m(x, return_membrane=True)
    s2, v2, _ = m(x, return_state=True, return_membrane=True)
    assert rel_err(v2, v) <= SCAN_TOL64
    assert torch.equal(s2, s)


def test_single_spike_chunks_cover_fired_and_silent_neurons():
    """The chunk tests above exercise both branches of the state: neurons that fired in the first
    chunk (and must stay silent) and neurons that fire only later."""
    m = make("SingleSpikeLIF", "fused")
    x = x_for()
    with torch.no_grad():
        s, state = m(x[:T // 2], return_state=True)
        s2 = m(x[T // 2:], state)
    fired = state.count > 0
    assert fired.any() and (~fired).any() and s2.sum() > 0
    assert torch.equal(state.count > 0, s.sum(0) > 0)
    assert float(s2[:, fired].sum()) == 0.0
    assert float(torch.cat([s, s2]).sum(0).max()) == 1.0


# ---- step == sequence --------------------------------------------------------------------------


def steps(m, x, state=None):
    outs = []
    for x_t in x.unbind(0):
        out, state = m.step(x_t, state)
        outs.append(out)
    return torch.stack(outs) if MODULES_BY_TYPE.get(type(m), True) else outs[-1], state


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("name,backend", sorted(EXACT))
def test_step_equals_sequence_call(name, backend, dtype):
    m = make(name, backend, dtype)
    x = x_for(dtype)[:40]
    with torch.no_grad():
        whole, s_whole = run(m, x)
        reseed(m)
        stepped, s_stepped = steps(m, x)
    assert torch.equal(stepped, whole)
    assert_states_equal(name, s_stepped, s_whole)
    assert stepped.dtype == x.dtype


@pytest.mark.parametrize("name,backend", sorted(EXACT))
def test_step_gradients_equal_sequence_call(name, backend):
    """BPTT through a loop of ``step`` calls equals the sequence call's gradient."""
    m = make(name, backend)
    x = x_for()[:40].requires_grad_()
    leaves = [x, *(p for p in m.parameters() if p.requires_grad)]
    out, state = run(m, x)
    g_whole = torch.autograd.grad(loss(out, state), leaves)
    reseed(m)
    out, state = steps(m, x)
    g_steps = torch.autograd.grad(loss(out, state), leaves)
    assert max_rel_err(g_steps, g_whole) <= GRAD_TOL64


def test_step_rechecks_parameters_after_they_change():
    """``step`` skips the parameters' finiteness scan while they are unchanged (nn.base.check_step_params)."""
    m = LIF(F, learn_tau=True)
    state = m.step(torch.randn(B, F))[1]
    m.step(torch.randn(B, F), state)
    with torch.no_grad():
        m.mem.log_tau[2] = float("nan")  # in place, as an optimizer step
    with pytest.raises(ValueError, match=r"LIF parameter mem\.log_tau must be finite, got 1 NaN"):
        m.step(torch.randn(B, F), state)


def test_step_continues_a_sequence_call_and_back():
    m = LIF(F, threshold=0.3)
    x = x_for(F32)
    whole = m(x)
    s1, state = m(x[:10], return_state=True)
    s2, state = steps(m, x[10:20], state)
    s3 = m(x[20:], state)
    assert torch.equal(torch.cat([s1, s2, s3]), whole)


def test_step_of_an_spsn_draws_the_noise_of_the_sequence():
    m = SPSN(F, generator=_gen())
    x = x_for(F32)
    _, state = m(x[:5], return_state=True)
    s, state = m.step(x[5], state)
    assert int(state.t) == 6 and state.seed.dtype == torch.int64
    m.generator.manual_seed(7)
    assert torch.equal(s, m(x[:6])[5])


# ---- membranes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name,backend", [c for c in CASES if c[0] in ("LIF", "PLIF", "RLIF", "SPSN-sb", "PSU",
                                                                       "SingleSpikeLIF")])
def test_membrane_of_chunks_equals_whole(name, backend):
    m = make(name, backend)
    x = x_for()
    with torch.no_grad():
        reseed(m)
        s, v, _ = m(x, return_state=True, return_membrane=True)
        reseed(m)
        s1, v1, state = m(x[:T // 2], return_state=True, return_membrane=True)
        s2, v2 = m(x[T // 2:], state, return_membrane=True)
    assert v.shape == x.shape and torch.equal(torch.cat([s1, s2]), s)
    assert rel_err(torch.cat([v1, v2]), v) <= SCAN_TOL64


def test_lif_membrane_is_the_ops_pre_reset_membrane():
    from spikescan.ops.lif import lif

    m = LIF(F, tau_syn=None, threshold=0.3, input_scale=1.0)
    x = x_for(F32)
    s, v = m(x, return_membrane=True)
    s_op, v_op = lif(x, m.mem(), 0.3, reset="zero", surrogate=m.surrogate, detach_reset=True,
                     return_membrane=True)
    assert torch.equal(s, s_op) and torch.equal(v, v_op)


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODULES)
def test_a_single_step_to_a_sequence_call_points_to_step(name):
    """Before: ``LIF(64)(x_t)`` read the batch axis of ``[B, N]`` as time, silently."""
    m = make(name, MODULES[name][1][0], F32)
    with pytest.raises(ValueError, match=r"3 or more dims.*got shape \(3, 6\).*\.step\(x_t, state\)"):
        m(torch.randn(3, 6))


@pytest.mark.parametrize("call,err,match", [
    (lambda: LIF(F)(x_for(F32), LIState(None, torch.zeros(B, F))), TypeError, r"LIFState .* got LIState"),
    (lambda: LIF(F)(x_for(F32), LIFState(None, torch.zeros(B + 1, F))), ValueError, r"state\.v"),
    (lambda: LIF(F)(x_for(F32), LIFState(None, torch.full((F,), float("nan")))), ValueError, r"state\.v must be finite"),
    (lambda: LIF(F, tau_syn=None)(x_for(F32), LIFState(torch.zeros(B, F), torch.zeros(B, F))), ValueError,
     r"state\.i must be None"),
    (lambda: LIF(F)(x_for(F32), LIFState(None, torch.zeros(B, F)), v0=torch.zeros(F)), TypeError,
     r"state or v0"),
    (lambda: LI(F)(x_for(F32), LIState(torch.zeros(B, 2 * F), torch.zeros(B, F))), ValueError,
     r"state\.i"),
    (lambda: RLIF(F)(x_for(F32), RLIFState(None, torch.zeros(B, F), torch.zeros(2, F))), ValueError, r"state\.s"),
    (lambda: SPSN(F)(x_for(F32), SPSNState(torch.zeros(B, F), torch.zeros(B, F), torch.tensor(1), torch.tensor(1.0))),
     TypeError, r"state\.t must be a 0-dim integer tensor"),
    (lambda: SPSN(F)(x_for(F32), SPSNState(torch.zeros(B, F), torch.zeros(B, F), 3, torch.tensor(0))),
     TypeError, r"state\.seed must be a 0-dim integer tensor"),
    (lambda: SPSN(F)(x_for(F32), SPSNState(torch.zeros(B, F), torch.zeros(B, F), torch.tensor(1), torch.tensor(-2))),
     ValueError, r"state\.t must be >= 0"),
    (lambda: PSU(backend="matrix")(x_for(F32), return_state=True), ValueError, r"backend='sequential' or 'auto'"),
    (lambda: PSU(backend="chunked").step(torch.randn(B, F)), ValueError, r"takes no initial state"),
    (lambda: IPSU(T)(x_for(F32), return_state=True), ValueError, r"IPSU carries no state.*PSU .* streams"),
    (lambda: RPSU(T)(x_for(F32), PSUState(torch.zeros(B, F), torch.zeros(B, F))), ValueError,
     r"RPSU carries no state"),
    (lambda: IPSU(T).step(torch.randn(B, F)), ValueError, r"IPSU carries no state"),
    (lambda: SingleSpikeLIF(F)(x_for(F32), MaxMembraneState(torch.zeros(B, F), torch.zeros(B, F))), TypeError,
     r"SingleSpikeState"),
    (lambda: LIF(F).step(torch.randn(F)), ValueError, r"2 or more dims"),
    (lambda: LIF(F).step(torch.randn(B, F + 1)), ValueError, r"x_t must have 6 features"),
    (lambda: MaxMembraneReadout(F).step(torch.randn(B, F), LIFState(None, torch.zeros(B, F))), TypeError,
     r"MaxMembraneState"),
])
def test_bad_state_is_a_clear_error(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_a_non_finite_state_is_found_in_debug_mode():
    """A state shaped like one step is data, like x: ``step`` and the sequence call scan it for
    NaN/Inf in debug mode only (no reduction and host sync per call otherwise), naming the field."""
    from spikescan._checks import debug_mode

    state = LIFState(None, torch.full((B, F), float("nan")))
    m = LIF(F)
    s, new = m.step(torch.randn(B, F), state)
    assert torch.isnan(new.v).all()
    with debug_mode(), pytest.raises(ValueError, match=r"state\.v contains non-finite values \(18 NaN"):
        m.step(torch.randn(B, F), state)
    with debug_mode(), pytest.raises(ValueError, match=r"state\.v contains non-finite values"):
        m(x_for(F32), state)
    assert torch.isnan(m(x_for(F32), state, return_state=True)[1].v).any()  # outside debug mode: data


# ---- the pre-state API -------------------------------------------------------------------------


def test_lif_v0_maps_to_the_state_with_a_deprecation_warning():
    m = LIF(F, threshold=0.3)
    x, v0 = x_for(F32), 0.2 * torch.rand(B, F)
    expected = m(x, LIFState(None, v0))
    for call in (lambda: m(x, v0), lambda: m(x, v0=v0)):
        with pytest.warns(DeprecationWarning, match=r"LIFState\(i=None, v=v0\)"):
            assert torch.equal(call(), expected)
    with pytest.raises(ValueError, match="v0"):  # a bad legacy v0 is named as such
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            m(x, v0=torch.zeros(2, F))


@pytest.mark.parametrize("m", [PSU(threshold=0.3), SingleSpikeLIF(F, threshold=0.3)], ids=lambda m: type(m).__name__)
def test_positional_return_membrane_is_deprecated(m):
    x = x_for(F32)
    with pytest.warns(DeprecationWarning, match="return_membrane=True by keyword"):
        s, v = m(x, True)
    s2, v2 = m(x, return_membrane=True)
    assert torch.equal(s, s2) and torch.equal(v, v2)


# ---- the SPSN step with an initial state (ops.spsn) ------------------------------------------


@pytest.mark.parametrize("firing", ["sb", "gs"])
def test_fused_spsn_with_initial_state_equals_reference(firing):
    """The kernels' new initial-state inputs and final-state outputs (and their gradients) match
    the reference composition, which takes them through ``leaky_integrate``'s ``v0``."""
    g = torch.Generator().manual_seed(3)
    x = 2 * torch.randn(37, 2, 5, generator=g, dtype=F64)
    a, b = (0.5 + 0.45 * torch.rand(5, generator=g, dtype=F64) for _ in range(2))
    i0, u0 = torch.randn(2, 5, generator=g, dtype=F64), torch.randn(2, 5, generator=g, dtype=F64)
    res = []
    for backend in ("fused", "reference"):
        leaves = [t.clone().requires_grad_() for t in (x, a, b, i0, u0)]
        s, i_last, u_last = spsn_step(leaves[0], *leaves[1:3], i0=leaves[3], u0=leaves[4], t0=11, seed=5,
                                      firing=firing, tau=0.5, logit_scale=2.0, backend=backend, return_state=True)
        res.append((s, i_last, u_last, torch.autograd.grad(loss(s, (i_last, u_last)), leaves)))
    (s, i, u, gf), (sr, ir, ur, gr) = res
    assert int((s != sr).sum()) <= 1  # a draw within rounding of the boundary may flip (ops.spsn docstring)
    assert torch.equal(i, ir) and torch.equal(u, ur)  # the integrations are bit-identical
    if torch.equal(s, sr):
        assert max_rel_err(gf, gr) <= GRAD_TOL64


@pytest.mark.parametrize("kwargs,err,match", [
    ({"t0": -1}, ValueError, r"t0 must be >= 0"),
    ({"t0": 1.5}, TypeError, r"t0 must be an int"),
    ({"t0": torch.tensor([1, 2])}, TypeError, r"t0 must be an int or a 0-dim integer tensor"),
    ({"i0": torch.zeros(4, 5)}, ValueError, r"i0"),
    ({"u0": torch.tensor(float("inf"))}, ValueError, r"u0 must be finite"),
])
def test_spsn_step_bad_state(kwargs, err, match):
    with pytest.raises(err, match=match):
        spsn_step(torch.randn(4, 2, 5), 0.9, 0.8, seed=1, **kwargs)


_TRITON_PROBE = textwrap.dedent("""
    import json, torch
    from spikescan.ops._backend import force_kernels
    from spikescan.ops.spsn import spsn_step
    out = {}
    with force_kernels("triton"):
        for firing in ("sb", "gs"):
            g = torch.Generator().manual_seed(0)
            x = 2 * torch.randn(9, 2, 5, generator=g, dtype=torch.float64)
            w = torch.randn(9, 2, 5, generator=g, dtype=torch.float64)
            a, b = (0.5 + 0.45 * torch.rand(5, generator=g, dtype=torch.float64) for _ in range(2))
            kw = dict(seed=5, firing=firing, tau=0.5, logit_scale=2.0, backend="fused", return_state=True)

            def run(cut):
                leaves = [t.clone().requires_grad_() for t in (x, a, b)]
                if cut is None:
                    s, i, u = spsn_step(*leaves, **kw)
                else:
                    s1, i1, u1 = spsn_step(leaves[0][:cut], *leaves[1:], **kw)
                    s2, i, u = spsn_step(leaves[0][cut:], *leaves[1:], i0=i1, u0=u1, t0=cut, **kw)
                    s = torch.cat([s1, s2])
                grads = torch.autograd.grad((s * w).sum() + u.sum(), leaves)
                return s, u, grads

            s, u, gw = run(None)
            for cut in (1, 4, 8):
                sc, uc, gc = run(cut)
                err = max(float((p - q).abs().max() / q.abs().max()) for p, q in zip(gc, gw))
                out[f"{firing}-{cut}"] = [bool(torch.equal(sc, s)), bool(torch.equal(uc, u)), err]
    print(json.dumps(out))
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (its interpreter)")
def test_triton_spsn_chunks_equal_whole_in_the_interpreter():
    """The GPU kernel's initial state, final state and their gradients (no GPU here: Triton's
    interpreter, which must be switched on before triton is imported, hence a new process)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", _TRITON_PROBE], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(out) == 6
    for key, (same_s, same_u, err) in out.items():
        assert same_s and same_u and err <= GRAD_TOL64, (key, err)


def test_step_latency_benchmark_runs(tmp_path, capsys):
    """The benchmark's plumbing on a tiny layer (its timings are not checked: no timing in tests)."""
    from spikescan.bench import step_latency

    out = step_latency.main(["--modules", "LIF", "SPSN", "--neurons", "4", "--batch-sizes", "1,2", "--steps", "3",
                             "--repeats", "1", "--out", str(tmp_path)])
    assert [(r["module"], r["batch"]) for r in out["results"]] == [("LIF", 1), ("LIF", 2), ("SPSN", 1), ("SPSN", 2)]
    assert json.loads((tmp_path / "results.json").read_text())["results"] == out["results"]
    assert "sequence-T1 (us)" in capsys.readouterr().out
