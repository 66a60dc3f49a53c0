"""Property-based fuzz (hypothesis) of every fast backend against its sequential reference.

Ops: ``leaky_integrate`` (fft, chunked with both inner scans, fused), ``lif`` (fused),
``fused_spsn`` (sb, gs), ``psu`` / ``ipsu`` / ``rpsu`` (matrix, chunked), ``first_spike`` and
``single_spike_lif`` (the fused kernel and the composed op with every leaky backend).  Outputs and the gradients of the input and of every
parameter that can require one are compared.  Runs are reproducible (``derandomize=True``) and
sized for a 2-core CI machine; most of the file's time is numba compiling the backward kernels'
specialisations, so the draws avoid combinations that only add compilations.

How the tolerances are set (no tolerance is a guess):

* Bit-exact where the code promises it.  The fused forwards perform the reference's operations
  in the same order without FMA contraction (``fastmath=False``), so fused leaky integration,
  LIF spikes / membranes / final states and the SPSN integrations equal the sequential
  reference of the same dtype bit for bit -- on every host, since IEEE-754 fixes the result of
  each single operation.  LIF spikes are therefore compared exactly, with no near-threshold
  exemption.
* Everything else by running error analysis: every quantity here is a sum of terms, and a sum
  computed in any order with any nesting depth ``n`` errs by at most ``n * u * sum |terms|``
  (``u`` the unit roundoff, 2**-24 in float32, 2**-53 in float64; Higham, "Accuracy and
  Stability of Numerical Algorithms", 3.1).  ``sum |terms|`` (the *magnitude* ``M``) is computed
  in float64 by the same linear recurrences run on absolute values (all decays are >= 0, so the
  recurrence on ``|x|`` sums exactly the terms' absolute values); nonlinear steps enter by their
  Lipschitz constants (a sigmoid moves an error by <= 1/4, ...).  The test then demands
  ``|backend - reference| <= 2 * n * u * M`` elementwise (2: both sides round).  For float32
  this is the familiar "T * eps relative" for decays near 1 and much less for decays near 0,
  where the magnitudes stay small.  An FFT convolution errs normwise instead,
  ``||err||_inf <= c u log2(n) ||y||_2 ||h||_2 <= c u log2(n) T max|terms|`` per neuron
  (Higham 24.1), which is added for ``fft``.
* Stochastic / threshold decisions computed by different formulas (the SPSN kernel's
  ``U (1 + exp(-u)) < 1`` against ``U < sigmoid(u)``; a membrane from an FFT against one from a
  loop) can legitimately differ only where the reference lies within the bound above of the
  decision boundary; those elements (for the single-spike neuron, whose later spikes depend on
  the first, those neurons) are exempted explicitly, and only those.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikescan.ops import psu as P
from spikescan.ops.leaky import parallel as S
from spikescan.ops._kernels._common import SEGMENT, uniforms_reference
from spikescan.ops.first_spike import _single_spike_lif_sequential, first_spike, single_spike_lif
from spikescan.ops.firing import gumbel_spike, sigmoid_bernoulli
from spikescan.ops.spsn import fused_spsn, spsn_uniforms
from spikescan.ops.lif import lif
from spikescan.ops import leaky_integrate
from spikescan.surrogate import ATan, FastSigmoid, Sigmoid, Triangle

F32, F64 = torch.float32, torch.float64
UNIT = {F32: 2.0**-24, F64: 2.0**-53}  # unit roundoff: |fl(a op b) - (a op b)| <= u |a op b|
FFT_C = 8.0  # the constant of the FFT convolution bound (radix-2/3/5 FFTs with accurate twiddles: ~5)

# Examples per test are sized for CI (the whole file well under 90 s on 2 cores, most of it numba
# compiling the kernels' variants); SPIKESCAN_FUZZ_SCALE=10 runs ten times as many (nightly).
SCALE = max(1, int(os.environ.get("SPIKESCAN_FUZZ_SCALE", "1")))
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                   HealthCheck.filter_too_much, HealthCheck.large_base_example])

assert SEGMENT == 32  # T_EDGES straddles the fused CPU kernels' 32-step segments
# Lengths around the kernels' boundaries: the 4-step forward sweeps, the 2-step reverse walks,
# the 32-step backward segments and the default chunk of "chunked" (32).
T_EDGES = (1, 2, 3, 4, 5, 7, 8, 31, 32, 33, 35, 63, 64, 65, 96, 97, 127, 128, 129)
T_LONG = (1000, 2049)
SPECIAL_DECAYS = (0.0, 1e-6, 0.5, 0.9, 0.999999, 1.0)


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------


class Case(dict):
    """A drawn problem; printed by hypothesis as shapes and settings (tensors are reproduced by
    re-running: the draws are derandomized)."""

    def __repr__(self):
        def short(v):
            if torch.is_tensor(v):
                return f"tensor{tuple(v.shape)}:{str(v.dtype)[6:]}" + ("" if v.numel() > 4 else f"={v.tolist()}")
            return repr(v)

        return "Case(" + ", ".join(f"{k}={short(v)}" for k, v in self.items()) + ")"


@st.composite
def time_steps(draw, long=T_LONG, max_short=140):
    """T: 4 % long, 56 % at a kernel boundary, 40 % anywhere in 1..max_short."""
    k = draw(st.integers(0, 99))
    if k < 4:
        return draw(st.sampled_from(long))
    if k < 60:
        return draw(st.sampled_from(T_EDGES))
    return draw(st.integers(1, max_short))


@st.composite
def feature_shapes(draw, T, max_numel=48):
    """The per-step shape: 0 to 3 dims (extra feature dims included), few elements when T is long."""
    rest = draw(st.lists(st.integers(1, 5), max_size=3))
    cap = 8 if T > 200 else max_numel
    while math.prod(rest) > cap:
        rest.pop()
    return tuple(rest)


def param_shape(draw, rest):
    """A shape that broadcasts to ``rest``: some leading dims dropped, each kept dim 1 or full."""
    k = draw(st.integers(0, len(rest)))
    return tuple(draw(st.sampled_from([1, n])) for n in rest[len(rest) - k:])


def decay_values(draw, shape, gen, dtype, specials=SPECIAL_DECAYS):
    """Decays in [0, 1]: one special value everywhere, uniform, or uniform mixed with specials."""
    mode = draw(st.sampled_from(["special", "uniform", "mixed"]))
    if mode == "special":
        return torch.full(shape, draw(st.sampled_from(specials)), dtype=dtype)
    d = torch.rand(shape, generator=gen, dtype=F64)
    if mode == "mixed":
        pick = torch.randint(0, 2 * len(specials), shape, generator=gen)
        table = torch.tensor(specials, dtype=F64)
        d = torch.where(pick < len(specials), table[pick.clamp(max=len(specials) - 1)], d)
    return d.to(dtype)


def maybe_noncontiguous(draw, x):
    """``x`` itself or an equal, non-contiguous view (time not the outermost dim in memory)."""
    if x.dim() >= 2 and draw(st.booleans()):
        return x.movedim(0, -1).contiguous().movedim(-1, 0)
    return x


# --------------------------------------------------------------------------------------------
# error bounds
# --------------------------------------------------------------------------------------------


def reduced(t, shape):
    """``t`` summed to ``shape`` (a parameter's gradient magnitude)."""
    return t.sum_to_size(shape) if tuple(t.shape) != tuple(shape) else t


def leak(z, decay, v0=None):
    """float64 ``P z`` (``u[t] = decay u[t-1] + z[t]``); on nonnegative ``z`` it is the magnitude."""
    return leaky_integrate(z, decay, v0=v0, backend="sequential")


def leak_reverse(z, decay):
    """float64 ``P^T z`` (the reverse-time recurrence)."""
    return leak(z.flip(0), decay).flip(0)


def max_over_time(t):
    return t.amax(0, keepdim=True).expand_as(t) if t.shape[0] else t


def fft_len(T):
    return S._fft_len(2 * T)


def assert_close(name, got, ref, tol):
    """``|got - ref| <= tol`` elementwise (float64), with the worst offender in the message."""
    got, ref = got.detach().double(), ref.detach().double()
    tol = torch.as_tensor(tol, dtype=F64).expand_as(ref)
    assert got.shape == ref.shape, (name, got.shape, ref.shape)
    excess = (got - ref).abs() - tol
    if bool((excess > 0).any()):
        i = int(excess.flatten().argmax())
        raise AssertionError(f"{name}: |got - ref| = {float((got - ref).abs().flatten()[i]):.3e} > tol "
                             f"{float(tol.flatten()[i]):.3e} at flat index {i} (got {float(got.flatten()[i])!r}, "
                             f"ref {float(ref.flatten()[i])!r})")


# --------------------------------------------------------------------------------------------
# leaky integration: fft, chunked (loop and matmul inner scans), fused vs sequential
# --------------------------------------------------------------------------------------------


@st.composite
def leaky_problems(draw):
    T = draw(time_steps())
    rest = draw(feature_shapes(T))
    dtype = draw(st.sampled_from([F32, F64]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    amp = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    x = amp * (torch.randn((T,) + rest, generator=g, dtype=F64) + draw(st.sampled_from([0.0, 0.0, 1.0])))
    x = maybe_noncontiguous(draw, x.to(dtype))
    decay = decay_values(draw, param_shape(draw, rest), g, dtype)
    scale = draw(st.sampled_from(["one", "float", "tensor"]))
    if scale == "one":
        scale = 1.0
    elif scale == "float":
        scale = draw(st.sampled_from([0.5, -2.0, 1e-3]))
    else:
        scale = torch.randn(param_shape(draw, rest), generator=g, dtype=dtype)
    v0 = None
    if draw(st.booleans()):
        v0 = (amp * torch.randn(param_shape(draw, rest), generator=g, dtype=F64)).to(dtype)
    return Case(x=x, decay=decay, scale=scale, v0=v0, chunk=draw(st.sampled_from([None, None, 2, 3, 5, 8, 64])),
                intra=draw(st.sampled_from(["loop", "matmul"])), sum_loss=draw(st.booleans()),
                float_decay=decay.dim() == 0 and draw(st.booleans()), seed=draw(st.integers(0, 2**31 - 1)))


def _leaky_run(p, backend, dtype):
    """``(u, grads)`` for the tensor leaves among (x, decay, scale, v0), in ``dtype``."""
    names = ["x"] + [k for k in ("decay", "scale", "v0") if torch.is_tensor(p[k]) and not (
        k == "decay" and p["float_decay"])]
    leaves = {k: p[k].detach().to(dtype).requires_grad_() for k in names}
    decay = float(p["decay"]) if p["float_decay"] else leaves["decay"]
    u = leaky_integrate(leaves["x"], decay, scale=leaves.get("scale", p["scale"]), v0=leaves.get("v0"),
                        backend=backend, chunk_size=p["chunk"])
    if p["sum_loss"]:  # an incoming gradient broadcast over time (the kernels' one-row path)
        grads = torch.autograd.grad(u.sum(), list(leaves.values()))
    else:
        gu = torch.randn(u.shape, generator=torch.Generator().manual_seed(p["seed"]), dtype=F64).to(dtype)
        grads = torch.autograd.grad(u, list(leaves.values()), gu)
    return u.detach(), dict(zip(names, grads))


def _leaky_magnitudes(p):
    """float64 magnitudes of u and of each gradient: the same computation on |x|, |scale|, |v0|, |grad_u|."""
    T = p["x"].shape[0]
    x = p["x"].detach().double().abs().requires_grad_()
    d = p["decay"].detach().double().requires_grad_()
    sc = p["scale"].detach().double().abs().requires_grad_() if torch.is_tensor(p["scale"]) else \
        torch.tensor(abs(p["scale"]), dtype=F64, requires_grad=True)
    v0 = None if p["v0"] is None else p["v0"].detach().double().abs().requires_grad_()
    u = leaky_integrate(x, d, scale=sc, v0=v0, backend="sequential")
    gu = torch.ones(u.shape, dtype=F64) if p["sum_loss"] else torch.randn(
        u.shape, generator=torch.Generator().manual_seed(p["seed"]), dtype=F64).to(p["x"].dtype).double().abs()
    leaves = [x, d, sc] + ([v0] if v0 is not None else [])
    mg = torch.autograd.grad(u, leaves, gu)
    M = dict(u=u.detach(), x=mg[0], decay=mg[1], scale=mg[2], v0=mg[3] if v0 is not None else None)
    # normwise FFT terms per neuron: the reverse scan's magnitude and the forward's, maxed over t
    grev = leak_reverse(gu, d.detach())
    u_prev = torch.cat([(v0.detach() if v0 is not None else torch.zeros(())).expand((1,) + u.shape[1:]),
                        u.detach()[:-1]])
    M["fft_rev"] = grev.amax(0)
    M["fft_fwd"] = u.detach().amax(0)
    M["fft_param"] = grev.amax(0) * (2 * T * (u_prev + x.detach()).amax(0) + 1)
    return M


@settings(max_examples=140 * SCALE, **FUZZ)
@given(leaky_problems())
def test_leaky_integrate_backends(p):
    x = p["x"]
    T, rest, dtype = x.shape[0], x.shape[1:], x.dtype
    u = UNIT[dtype]
    ref_u, ref_g = _leaky_run(p, "sequential", F64)
    M = _leaky_magnitudes(p)
    # Nesting depth of any term: two roundings per recurrence step forward and backward, the
    # chunk's C-term dot products and carries, the T-term sum of a parameter gradient and its
    # reduction over the neurons sharing the parameter.
    C = p["chunk"] or S._DEFAULT_CHUNK
    n = 8 * (T + C + 4) + math.prod(rest)
    kfft = FFT_C * u * math.log2(fft_len(T)) * T
    seq_u, _ = _leaky_run(p, "sequential", dtype)
    intra = S._CHUNKED_INTRA["cpu"]
    try:
        S._CHUNKED_INTRA["cpu"] = p["intra"]
        for backend in ("sequential", "fft", "chunked", "fused"):
            got_u, got_g = _leaky_run(p, backend, dtype)
            assert got_u.dtype == dtype and got_u.shape == x.shape
            if backend == "fused":  # same operations in the same order as the loop
                assert torch.equal(got_u, seq_u)
            fft = backend == "fft"
            tol = 2 * n * u * M["u"] + (kfft * M["fft_fwd"] if fft else 0.0)
            assert_close(f"{backend} u", got_u, ref_u, tol)
            for name, gr in got_g.items():
                tol = 2 * n * u * M[name]
                if fft:
                    if name == "x":
                        tol = tol + kfft * M["fft_rev"] * (p["scale"].detach().double().abs()
                                                          if torch.is_tensor(p["scale"]) else abs(p["scale"]))
                    else:
                        tol = tol + reduced(kfft * M["fft_param"], ref_g[name].shape)
                assert_close(f"{backend} grad {name}", gr, ref_g[name], tol)
    finally:
        S._CHUNKED_INTRA["cpu"] = intra


# --------------------------------------------------------------------------------------------
# exact LIF: fused vs sequential
# --------------------------------------------------------------------------------------------

# Surrogates: constructor, parameters to draw, peak value (the scale of their rounding error: the
# fused kernel evaluates the same formula to a few ulps, sometimes through another exp) and a
# Lipschitz constant (how far an error in the membrane moves the surrogate's value).
SURROGATES = {
    "fast_sigmoid": (FastSigmoid, (1.0, 25.0, 100.0), lambda q: 1.0, lambda q: 2 * q),
    "atan": (ATan, (0.5, 2.0, 10.0), lambda q: q / 2, lambda q: (q / 2) * (math.pi / 2 * q)),
    "sigmoid": (Sigmoid, (1.0, 4.0, 20.0), lambda q: q / 4, lambda q: q * q / 10),
    "triangle": (Triangle, (0.1, 1.0, 3.0), lambda q: 1 / q, lambda q: 1 / (q * q)),
}


@st.composite
def lif_problems(draw, kinds=tuple(SURROGATES), patterns="all", dtypes=(F32, F64)):
    T = draw(time_steps())
    rest = draw(feature_shapes(T))
    kind = draw(st.sampled_from(kinds))
    # float64 with the two surrogates whose kernel code differs by dtype (the default, and sigmoid:
    # math.exp in float64, the vectorized exp in float32); atan and triangle are the same
    # arithmetic in both dtypes, and every (surrogate, dtype) pair costs a compilation
    dtype = draw(st.sampled_from(dtypes if kind in ("fast_sigmoid", "sigmoid") else (F32,)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    make, qs, peak, _ = SURROGATES[kind]
    q = draw(st.sampled_from(qs))
    reset = draw(st.sampled_from(["subtract", "zero"]))
    th0 = draw(st.sampled_from([0.05, 0.5, 1.0, 3.0]))
    if draw(st.booleans()):
        threshold = torch.tensor(th0, dtype=dtype)
    else:
        threshold = (th0 * (0.5 + torch.rand(param_shape(draw, rest), generator=g, dtype=F64))).to(dtype)
    decay = decay_values(draw, param_shape(draw, rest), g, dtype)
    v_reset = torch.zeros((), dtype=dtype)
    if reset == "zero" and draw(st.booleans()):
        v_reset = (th0 * (torch.rand(param_shape(draw, rest), generator=g, dtype=F64) - 0.5)).to(dtype)
    v0 = None
    if draw(st.booleans()):
        v0 = (th0 * torch.randn(param_shape(draw, rest), generator=g, dtype=F64)).to(dtype)
    if draw(st.integers(0, 4)) == 0:
        # on a grid of quarter thresholds: with decays 0, 1/2, 1 membranes hit the threshold
        # exactly, which must fire (H(0) = 1) in both
        x = th0 * torch.randint(-2, 5, (T,) + rest, generator=g).to(F64) / 4
        decay = torch.full(decay.shape, draw(st.sampled_from([0.0, 0.5, 1.0])), dtype=dtype)
        threshold = torch.full(threshold.shape, th0, dtype=dtype)
    else:
        sigma, mu = draw(st.sampled_from([(0.3, 0.2), (1.0, 0.0), (1.5, 0.5), (0.1, 1.2)]))
        x = th0 * (sigma * torch.randn((T,) + rest, generator=g, dtype=F64) + mu)
    x = maybe_noncontiguous(draw, x.to(dtype))
    leaves = ["x", "decay", "threshold", "v_reset", "v0"]
    if patterns == "all":  # every leaf that can require a gradient does
        needs = leaves
        membrane_loss = True
    else:  # the backward's specialisations: which leaves need a gradient, is the membrane used
        needs = draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=5, unique=True))
        if not set(needs) & ({"x", "decay", "threshold"} | ({"v0"} if v0 is not None else set())):
            needs.append("x")  # at least one leaf the loss depends on
        membrane_loss = draw(st.booleans())
    return Case(x=x, decay=decay, threshold=threshold, v_reset=v_reset, v0=v0, reset=reset,
                surrogate=make(q), peak=peak(q), detach=draw(st.booleans()), needs=needs,
                membrane_loss=membrane_loss, state_loss=draw(st.booleans()), sum_loss=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31 - 1)))


def _lif_run(p, backend):
    tensors = {k: p[k] for k in ("x", "decay", "threshold", "v_reset", "v0") if p[k] is not None}
    leaves = {k: t.detach().clone().requires_grad_(k in p["needs"]) for k, t in tensors.items()}
    s, v, state = lif(leaves["x"], leaves["decay"], leaves["threshold"], reset=p["reset"],
                      v_reset=leaves["v_reset"], v0=leaves.get("v0"), surrogate=p["surrogate"],
                      detach_reset=p["detach"], backend=backend, return_membrane=True, return_state=True)
    outs = [s] + ([v] if p["membrane_loss"] else []) + ([state] if p["state_loss"] else [])
    if p["sum_loss"]:
        weights = [torch.ones_like(o) for o in outs]
        loss = sum(o.sum() for o in outs)
    else:
        gen = torch.Generator().manual_seed(p["seed"])
        weights = [torch.randn(o.shape, generator=gen, dtype=F64).to(o.dtype) for o in outs]
        loss = sum((o * w).sum() for o, w in zip(outs, weights))
    wanted = [k for k in leaves if leaves[k].requires_grad]
    grads = torch.autograd.grad(loss, [leaves[k] for k in wanted], allow_unused=True)
    return (s.detach(), v.detach(), state.detach()), dict(zip(wanted, grads)), weights


def _lif_grad_magnitudes(p, s, v, weights):
    """float64 magnitudes of the LIF gradients: the reverse recurrence of the backward (see
    ``ops/_kernels/lif_numba.py``) with every coefficient replaced by its absolute value and the
    surrogate by its peak (its rounding error is relative to the peak, not to its value)."""
    x = p["x"].double()
    rest = x.shape[1:]
    T = x.shape[0]
    d, th, vr = (p[k].double().expand(rest) for k in ("decay", "threshold", "v_reset"))
    v, s = v.double(), s.double()
    subtract = p["reset"] == "subtract"
    keep = 0.0 if p["detach"] else 1.0
    ws = list(weights)
    gs = ws.pop(0).double().abs()
    gv = ws.pop(0).double().abs() if p["membrane_loss"] else torch.zeros_like(x)
    gl = ws.pop(0).double().abs() if p["state_loss"] else torch.zeros(rest, dtype=F64)
    vp = v - th * s if subtract else v * (1 - s) + vr * s
    v0 = torch.zeros(rest, dtype=F64) if p["v0"] is None else p["v0"].double().expand(rest)
    prev = torch.cat([v0.unsqueeze(0), vp[:-1]]).abs()
    pk = p["peak"]
    Ma = gl
    Mx = torch.empty_like(x)
    Md = torch.zeros(rest, dtype=F64)
    Mth = torch.zeros(rest, dtype=F64)
    Mvr = torch.zeros(rest, dtype=F64)
    for t in range(T - 1, -1, -1):
        dvp_ds = th if subtract else vr.abs() + v[t].abs()
        Mgs = gs[t] + keep * Ma * dvp_ds
        Mdv = gv[t] + Ma * (1.0 if subtract else 1 - s[t]) + Mgs * pk
        Mx[t] = Mdv
        Md += Mdv * prev[t]
        Mth += Mgs * pk + (Ma * s[t] if subtract else 0.0)
        if not subtract:
            Mvr += Ma * s[t]
        Ma = d * Mdv
    return dict(x=Mx, decay=Md, threshold=Mth, v_reset=Mvr, v0=Ma)


def _check_lif(p):
    (s_r, v_r, st_r), g_r, w = _lif_run(p, "sequential")
    (s_f, v_f, st_f), g_f, _ = _lif_run(p, "fused")
    # the fused forward repeats the loop's operations: bit-identical spikes, membranes, states
    assert torch.equal(s_f, s_r) and torch.equal(v_f, v_r) and torch.equal(st_f, st_r)
    x = p["x"]
    T, rest = x.shape[0], x.shape[1:]
    M = _lif_grad_magnitudes(p, s_r, v_r, w)
    # depth: <= 10 roundings per reverse step (the step's ~8 operations and the surrogate's
    # few-ulp formula, relative to its peak) over T + 2 steps, and the reduction over the
    # neurons sharing a parameter
    n = 10 * (T + 2) + math.prod(rest)
    for name, gr in g_r.items():
        gf = g_f[name]
        if gr is None:  # e.g. v_reset with reset="subtract": unused by the reference
            assert gf is None or not bool(gf.any()), name
            continue
        assert gf is not None and gf.shape == gr.shape and gf.dtype == gr.dtype, name
        tol = 2 * n * UNIT[x.dtype] * reduced(M[name], gr.shape)
        assert_close(f"lif grad {name}", gf, gr, tol)


@settings(max_examples=130 * SCALE, **FUZZ)
@given(lif_problems())
def test_lif_fused(p):
    """Every surrogate, both resets, detach_reset, scalar / per-neuron parameters, v0, both dtypes;
    every leaf needs a gradient and the loss uses spikes, membranes and (sometimes) the state."""
    _check_lif(p)


@settings(max_examples=50 * SCALE, **FUZZ)
@given(lif_problems(kinds=("fast_sigmoid",), patterns="any", dtypes=(F32,)))
def test_lif_fused_gradient_patterns(p):
    """The CPU backward is compiled per call pattern (parameter sums or not, membrane gradient or
    not): any subset of leaves needing a gradient, with and without a loss on the membrane.
    (One surrogate and float32 only: the pattern logic does not depend on either, and each
    pattern is a separate compilation of a few seconds per surrogate and dtype.)"""
    _check_lif(p)


# --------------------------------------------------------------------------------------------
# fused SPSN step vs the unfused composition fed with the same counter-based uniforms
# --------------------------------------------------------------------------------------------


@st.composite
def spsn_problems(draw):
    T = draw(time_steps())
    rest = draw(feature_shapes(T))
    dtype = draw(st.sampled_from([F32, F64]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    alpha = decay_values(draw, param_shape(draw, rest), g, dtype)
    beta = decay_values(draw, param_shape(draw, rest), g, dtype)
    sigma, mu = draw(st.sampled_from([(0.5, 0.0), (2.0, 0.3), (10.0, -1.0), (0.01, 0.0)]))
    x = maybe_noncontiguous(draw, (sigma * torch.randn((T,) + rest, generator=g, dtype=F64) + mu).to(dtype))
    firing = draw(st.sampled_from(["sb", "gs"]))
    tau, c = (1.0, 1.0) if firing == "sb" else draw(st.sampled_from([(1.0, 1.0), (0.5, 2.0), (2.0, 1.0)]))
    needs = draw(st.lists(st.sampled_from(["x", "alpha", "beta"]), min_size=1, max_size=3, unique=True))
    if dtype == F64 and not {"alpha", "beta"} & set(needs):
        # the backward without the alpha/beta sums is dtype-generic: compiled (and tested) in float32 only
        needs.append(draw(st.sampled_from(["alpha", "beta"])))
    return Case(x=x, alpha=alpha, beta=beta, firing=firing, tau=tau, logit_scale=c, needs=needs,
                float_params=dtype == F32 and alpha.dim() == 0 and beta.dim() == 0 and draw(st.booleans()),
                seed=draw(st.one_of(st.integers(0, 2**20), st.integers(-2**63, 2**64 - 1))),
                sum_loss=draw(st.booleans()), wseed=draw(st.integers(0, 2**31 - 1)))


def _spsn_run(p, fused):
    x = p["x"].detach().clone().requires_grad_("x" in p["needs"])
    a = p["alpha"].detach().clone().requires_grad_("alpha" in p["needs"] and not p["float_params"])
    b = p["beta"].detach().clone().requires_grad_("beta" in p["needs"] and not p["float_params"])
    if fused:
        args = (float(a), float(b)) if p["float_params"] else (a, b)
        s = fused_spsn(x, *args, seed=p["seed"], firing=p["firing"], tau=p["tau"], logit_scale=p["logit_scale"])
        u = None
    else:  # the composition of the unfused ops, fed with the kernel's own uniforms
        U = spsn_uniforms(p["seed"], x.shape, dtype=x.dtype)
        i = leaky_integrate(x, a, backend="sequential")
        u = leaky_integrate(i, b, scale=1 - b, backend="sequential")  # 1 - b rounded in the dtype, as the kernel
        if p["firing"] == "sb":
            s = sigmoid_bernoulli(u, noise=U)
        else:
            s = gumbel_spike(u, tau=p["tau"], logit_scale=p["logit_scale"], noise=torch.logit(U))
    w = torch.ones_like(s) if p["sum_loss"] else torch.randn(
        s.shape, generator=torch.Generator().manual_seed(p["wseed"]), dtype=F64).to(s.dtype)
    leaves = {k: t for k, t in (("x", x), ("alpha", a), ("beta", b)) if t.requires_grad}
    grads = torch.autograd.grad((s * w).sum(), list(leaves.values())) if leaves else ()
    return s.detach(), (None if u is None else u.detach()), dict(zip(leaves, grads)), w


@settings(max_examples=130 * SCALE, **FUZZ)
@given(spsn_problems())
def test_fused_spsn(p):
    x = p["x"]
    T, rest, dtype = x.shape[0], x.shape[1:], x.dtype
    uu = UNIT[dtype]
    s_f, _, g_f, w = _spsn_run(p, fused=True)
    s_r, u_ref, g_r, _ = _spsn_run(p, fused=False)
    # the uniforms are the counter-based generator's (pure numpy reference of the hash), and the
    # same numbers in both dtypes
    U = spsn_uniforms(p["seed"], x.shape, dtype=F64)
    if U.numel() <= 4096:
        ref = uniforms_reference(p["seed"], T, math.prod(rest)).reshape(x.shape)
        assert np.array_equal(U.numpy(), ref)
    u = u_ref.double()
    # Decisions.  The integrations are bit-identical, so u is the same on both sides; the firing
    # test is evaluated by different formulas: SB as U (1 + exp(-u)) < 1 (exp to ~2 ulp) against
    # U < sigmoid(u) (~2 ulp): they can disagree only if |U - sigmoid(u)| <= ~8 u max(U, p); GS as
    # c u + log(U / (1 - U)) against c u + logit(U), each to ~3 ulp of |c u| + |logit U|.
    # 16 ulps exempts those draws and nothing else.
    if p["firing"] == "sb":
        p_fire = torch.sigmoid(u)
        margin = (U - p_fire).abs() - 16 * uu * torch.maximum(U, p_fire)
    else:
        L = torch.logit(U)
        z = p["logit_scale"] * u + L
        margin = z.abs() - 16 * uu * (p["logit_scale"] * u.abs() + L.abs())
    decided = margin > 0
    assert torch.equal(s_f[decided], s_r[decided])
    assert s_f.dtype == dtype and s_f.shape == x.shape and bool(((s_f == 0) | (s_f == 1)).all())
    # Gradients: linear in the firing derivative f(u) (SB p^2 (1 - p) <= 4/27, GS (c/tau) q (1 - q)
    # <= c / (4 tau)), evaluated to a few ulps of its peak, through the two leaky recurrences
    # with nonnegative coefficients (a, b, 1 - b): their magnitude is the reference's gradient on
    # |x| with the incoming gradient |w| * peak, where 1 - b is a separate leaf so that the beta
    # terms of both signs add up.
    peak = 4 / 27 if p["firing"] == "sb" else p["logit_scale"] / (4 * p["tau"])
    xa = x.detach().double().abs().requires_grad_()
    a = p["alpha"].detach().double().requires_grad_()
    b = p["beta"].detach().double().requires_grad_()
    omb = (1 - p["beta"].detach().double()).requires_grad_()
    ua = leaky_integrate(leak(xa, a), b, scale=omb, backend="sequential")
    mx, ma, mb, momb = torch.autograd.grad(ua, [xa, a, b, omb], w.double().abs() * peak)
    M = dict(x=mx, alpha=ma, beta=mb + momb)
    n = 16 * (T + 2) + math.prod(rest)  # 2 recurrences forward and back, the sums, the reductions
    for name, gr in g_r.items():
        assert g_f[name].shape == gr.shape and g_f[name].dtype == gr.dtype
        assert_close(f"spsn {p['firing']} grad {name}", g_f[name], gr, 2 * n * uu * reduced(M[name], gr.shape))


# --------------------------------------------------------------------------------------------
# PSU / IPSU / RPSU: matrix and chunked vs sequential
# --------------------------------------------------------------------------------------------


@st.composite
def psu_problems(draw):
    T = draw(time_steps(long=(300,), max_short=100))
    rest = draw(feature_shapes(T, max_numel=24))
    dtype = draw(st.sampled_from([F32, F64]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = (draw(st.sampled_from([0.3, 1.0, 4.0])) * torch.randn((T,) + rest, generator=g, dtype=F64)).to(dtype)
    # tau >= 1; "exact" leak: decay = 1 - 1/tau (0 at tau = 1, 1 - 1e-6 at 1e6), "psu_code": 1/tau
    tau = draw(st.sampled_from([1.0, 1.25, 2.0, 5.0, 1e6]))
    W = (torch.randn(T, T, generator=g, dtype=F64) * math.sqrt(2.0 / T)).to(dtype)
    b = (0.1 * torch.randn(T, generator=g, dtype=F64)).to(dtype)
    thr = draw(st.sampled_from(["float", "tensor"]))
    thr = draw(st.sampled_from([0.3, 1.0])) if thr == "float" else (
        0.2 + torch.rand(param_shape(draw, rest), generator=g, dtype=F64)).to(dtype)
    return Case(x=x, W=W, b=b, tau=tau, leak=draw(st.sampled_from(["exact", "psu_code"])), threshold=thr,
                variant=draw(st.sampled_from(["psu", "ipsu", "rpsu"])), wseed=draw(st.integers(0, 2**31 - 1)))


def _psu_run(p, backend, dtype):
    """Membrane and its gradients (x; W, b for IPSU / RPSU; a tensor threshold for PSU), and spikes."""
    leaves = {"x": p["x"].detach().to(dtype).requires_grad_()}
    if p["variant"] != "psu":
        leaves["W"] = p["W"].detach().to(dtype).requires_grad_()
        leaves["b"] = p["b"].detach().to(dtype).requires_grad_()
    thr = p["threshold"]
    if torch.is_tensor(thr):
        thr = thr.detach().to(dtype).requires_grad_(p["variant"] == "psu")
        if p["variant"] == "psu":
            leaves["threshold"] = thr
    kw = dict(leak=p["leak"], backend=backend)
    x = leaves["x"]
    if p["variant"] == "psu":
        v = P.psu_membrane(x, p["tau"], thr, **kw)
        s = P.psu(x, p["tau"], thr, **kw)
    elif p["variant"] == "ipsu":
        v = P.ipsu_membrane(x, leaves["W"], leaves["b"], p["tau"], **kw)
        s = P.ipsu(x, leaves["W"], leaves["b"], p["tau"], thr, **kw)
    else:
        v = P.rpsu_membrane(x, leaves["W"], leaves["b"], p["tau"], **kw)
        s = P.rpsu(x, leaves["W"], leaves["b"], p["tau"], thr, **kw)
    gv = torch.randn(v.shape, generator=torch.Generator().manual_seed(p["wseed"]), dtype=F64).to(dtype)
    grads = torch.autograd.grad(v, list(leaves.values()), gv)
    return v.detach(), s.detach(), dict(zip(leaves, grads)), gv


def _psu_magnitudes(p, gv):
    """float64 magnitudes (module docstring) of V and its gradients: every causal operator applied
    as its absolute value (P, shift, tril|W|), sigma entering by its bound 1 plus a quarter of its
    argument's magnitude (1/4-Lipschitz), sigma' (<= 1/4, 0.1-Lipschitz) by 1/2 + 0.1 x its
    argument's magnitude."""
    decay, k = P.leak_coefficients(p["tau"], p["leak"])
    x = p["x"].double().abs()
    T = x.shape[0]
    G = gv.double().abs()
    flat = lambda z: z.reshape(T, -1)  # noqa: E731
    Wa = torch.tril(p["W"].double().abs())
    wx = lambda z: (Wa @ flat(z)).reshape(z.shape)  # noqa: E731
    wtx = lambda z: (Wa.T @ flat(z)).reshape(z.shape)  # noqa: E731
    Pz = lambda z: leak(z, decay)  # noqa: E731
    PTz = lambda z: leak_reverse(z, decay)  # noqa: E731
    shift = lambda z: torch.cat([torch.zeros_like(z[:1]), z[:-1]])  # noqa: E731
    shift_left = lambda z: torch.cat([z[1:], torch.zeros_like(z[:1])])  # noqa: E731
    thr = torch.as_tensor(p["threshold"], dtype=F64).abs()
    M = {}
    if p["variant"] == "psu":
        Mh = k * Pz(x)
        MRs = decay * shift(Pz(1 + Mh / 4))
        M["v"] = Mh + thr * MRs
        Mgs = decay * PTz(shift_left(thr * G))
        M["x"] = k * PTz(G + Mgs * (0.5 + 0.1 * Mh))
        M["threshold"] = G * MRs
    elif p["variant"] == "ipsu":
        # matrix form (tril(W) - P + I) x covers the chunked tril(W) x + R x
        M["v"] = wx(x) + p["b"].double().abs().reshape((T,) + (1,) * (x.dim() - 1)) + Pz(x) + x
        M["x"] = wtx(G) + PTz(G) + G
        M["W"] = torch.tril(flat(G) @ flat(x).T)
        M["b"] = flat(G).sum(1)
    else:
        Mz = wx(x) + p["b"].double().abs().reshape((T,) + (1,) * (x.dim() - 1))
        M["v"] = k * Pz(x) + decay * shift(Pz(1 + Mz / 4))
        Mgz = decay * PTz(shift_left(G)) * (0.5 + 0.1 * Mz)
        M["x"] = k * PTz(G) + wtx(Mgz)
        M["W"] = torch.tril(flat(Mgz) @ flat(x).T)
        M["b"] = flat(Mgz).sum(1)
    return M


@settings(max_examples=110 * SCALE, **FUZZ)
@given(psu_problems())
def test_psu_backends(p):
    x = p["x"]
    T, rest, dtype = x.shape[0], x.shape[1:], x.dtype
    v_ref, s_ref, g_ref, gv = _psu_run(p, "sequential", F64)
    M = _psu_magnitudes(p, gv)
    # three chained stages (leak, sigmoid, reset), each a recurrence or a T-term matmul (with the
    # chunk's C terms and carries for "chunked"), then the reductions over the neurons
    n = 3 * 8 * (T + S._DEFAULT_CHUNK + 4) + math.prod(rest)
    u = UNIT[dtype]
    thr = torch.as_tensor(p["threshold"], dtype=F64)
    for backend in ("sequential", "matrix", "chunked"):
        v, s, grads, _ = _psu_run(p, backend, dtype)
        tol_v = 2 * n * u * M["v"]
        assert_close(f"{p['variant']} {backend} v", v, v_ref, tol_v)
        # spikes: identical wherever the reference membrane is farther from the threshold than
        # the membrane's error bound
        decided = (v_ref - thr).abs() > tol_v
        assert torch.equal(s[decided], s_ref[decided].to(dtype)), (p["variant"], backend)
        for name, gr in grads.items():
            assert_close(f"{p['variant']} {backend} grad {name}", gr, g_ref[name],
                         2 * n * u * reduced(M[name], g_ref[name].shape))


# --------------------------------------------------------------------------------------------
# FastSNN: first_spike, and single_spike_lif with every leaky-integration backend
# --------------------------------------------------------------------------------------------


def _phi_matrix(T):
    """phi as a [T, T] float64 matrix: phi(S)[t] = sum_{m <= t} (t - m + 1) S[m]."""
    t = torch.arange(T)
    return ((t[:, None] - t[None, :] + 1) * (t[:, None] >= t[None, :])).to(F64)


@settings(max_examples=80 * SCALE, **FUZZ)
@given(T=time_steps(), data=st.data())
def test_first_spike(T, data):
    rest = data.draw(feature_shapes(T))
    dtype = data.draw(st.sampled_from([F32, F64]))
    rate = data.draw(st.sampled_from([0.0, 0.01, 0.2, 0.9, 1.0]))
    straight = data.draw(st.booleans())
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    spikes = (torch.rand((T,) + rest, generator=g, dtype=F64) < rate).to(dtype).requires_grad_()
    out = first_spike(spikes, straight_through=straight)
    # forward: the first 1 of each neuron (phi <= T (T+1) / 2 < 2**24: exact integers)
    cum = spikes.detach().double().cumsum(0)
    expect = ((spikes.detach().double() == 1) & (cum == 1)).to(dtype)
    assert out.dtype == dtype and torch.equal(out.detach(), expect)
    # backward: phi's adjoint of the incoming gradient, masked to phi == 0 (g'(0) = 1, g'(1) = 0,
    # g'(n >= 2) = 0) unless straight-through; two reversed cumulative sums of T terms each
    w = torch.randn(out.shape, generator=g, dtype=F64).to(dtype)
    (gs,) = torch.autograd.grad(out, spikes, w)
    A = _phi_matrix(T)
    mask = torch.ones_like(cum) if straight else (cum.cumsum(0) == 0).to(F64)
    wf = (w.double() * mask).reshape(T, -1)
    ref = (A.T @ wf).reshape(spikes.shape)
    mag = (A.T @ (w.double().abs() * mask).reshape(T, -1)).reshape(spikes.shape)
    assert_close("first_spike grad", gs, ref, 2 * (2 * T + 4) * UNIT[dtype] * mag)


@st.composite
def single_spike_problems(draw):
    T = draw(time_steps())
    rest = draw(feature_shapes(T))
    dtype = draw(st.sampled_from([F32, F64]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    decay = decay_values(draw, param_shape(draw, rest), g, dtype)
    thr = (draw(st.sampled_from([0.1, 0.5, 1.0])) * (0.5 + torch.rand(param_shape(draw, rest), generator=g,
                                                                         dtype=F64))).to(dtype)
    scale = draw(st.sampled_from(["paper", "code", "tensor"]))
    scale = {"paper": None, "code": 1.0}.get(scale) if scale != "tensor" else (
        0.2 + torch.rand(param_shape(draw, rest), generator=g, dtype=F64)).to(dtype)
    v0 = None if draw(st.booleans()) else (0.3 * torch.randn(param_shape(draw, rest), generator=g,
                                                              dtype=F64)).to(dtype)
    # inputs scaled to the threshold so that some neurons fire and some stay silent
    x = (thr.double().max() * (2.0 * torch.rand((T,) + rest, generator=g, dtype=F64) - 0.3)).to(dtype)
    kind = draw(st.sampled_from([None, "fast_sigmoid", "atan", "sigmoid", "triangle"]))
    if kind is None:
        surrogate, peak, lip = None, 1.0, 200.0  # the default: FastSigmoid(slope=100)
    else:
        make, qs, pk, lp = SURROGATES[kind]
        q = draw(st.sampled_from(qs))
        surrogate, peak, lip = make(q), pk(q), lp(q)
    return Case(x=x, decay=decay, threshold=thr, scale=scale, v0=v0, surrogate=surrogate, peak=peak, lip=lip,
                straight=draw(st.booleans()), membrane_loss=draw(st.booleans()),
                row_loss=draw(st.booleans()), wseed=draw(st.integers(0, 2**31 - 1)))


def _single_spike_run(p, backend, weights, wv):
    """Loss ``<weights, s> (+ <wv, v>)``; with ``row_loss`` the spike weights are one row for every
    step, entering as ``<weights[0], s.sum(0)>`` (a stride-0 incoming gradient: the fused kernel's
    one-row path)."""
    leaves = {k: p[k].detach().clone().requires_grad_() for k in ("x", "decay", "threshold", "scale", "v0")
              if torch.is_tensor(p[k])}
    s, v = single_spike_lif(leaves["x"], leaves["decay"], leaves["threshold"], scale=leaves.get("scale", p["scale"]),
                            v0=leaves.get("v0"), surrogate=p["surrogate"], straight_through=p["straight"],
                            backend=backend, return_membrane=True)
    loss = (s.sum(0) * weights[0]).sum() if p["row_loss"] else (s * weights).sum()
    if wv is not None:
        loss = loss + (v * wv).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return s.detach(), v.detach(), dict(zip(leaves, grads))


@settings(max_examples=100 * SCALE, **FUZZ)
@given(single_spike_problems())
def test_single_spike_lif_backends(p):
    x = p["x"]
    T, rest, dtype = x.shape[0], x.shape[1:], x.dtype
    u = UNIT[dtype]
    d64 = p["decay"].double()
    sc64 = (1 - d64) if p["scale"] is None else torch.as_tensor(p["scale"], dtype=F64)
    v064 = None if p["v0"] is None else p["v0"].double()
    thr64 = p["threshold"].double()
    s_ref, v_ref = _single_spike_lif_sequential(x.double(), d64, thr64, scale=sc64, v0=v064)
    # the membrane is a leaky integration: magnitude and bounds as in test_leaky_integrate_backends
    xa = x.double().abs().requires_grad_()
    da = d64.clone().requires_grad_()
    sa = sc64.abs().clone().requires_grad_()
    va = None if v064 is None else v064.abs().requires_grad_()
    Mv = leaky_integrate(xa, da, scale=sa, v0=va, backend="sequential")
    n = 8 * (T + S._DEFAULT_CHUNK + 4) + math.prod(rest)
    kfft = FFT_C * u * math.log2(fft_len(T)) * T
    tol_v = {b: 2 * n * u * Mv.detach() + (kfft * max_over_time(Mv.detach()) if b == "fft" else 0.0)
             for b in ("sequential", "fft", "chunked", "fused", "auto")}
    # Spikes: a neuron whose reference membrane comes within a backend's error bound of the
    # threshold at any step may fire at another step there, and its later steps follow from the
    # first spike; such neurons are exempted (from spikes and, through zero loss weights, from
    # the gradients).  Everywhere else the spikes must be the reference's.
    near = torch.zeros(rest, dtype=torch.bool)
    for tol in tol_v.values():
        near |= ((v_ref - thr64).abs() <= tol).any(0)
    keep = ~near
    gen = torch.Generator().manual_seed(p["wseed"])
    w = (torch.randn(x.shape, generator=gen, dtype=F64) * keep).to(dtype)
    if p["row_loss"]:
        w = w[:1].expand_as(w)
    # the membrane is continuous in the inputs: its weights need no exemption
    wv = torch.randn(x.shape, generator=gen, dtype=F64).to(dtype) if p["membrane_loss"] else None
    Mwv = wv.double().abs() if wv is not None else torch.zeros((), dtype=F64)
    s_seq, v_seq, g_seq = _single_spike_run(p, "sequential", w, wv)
    # the gradient reaching S~ (phi's adjoint, masked before the first spike) is computed by the
    # same ops from the same spikes on every backend, so it is identical; the surrogate then
    # differs by its Lipschitz constant times the two membranes' errors.
    s_tilde = (v_ref >= thr64).to(F64).requires_grad_()
    (g_tilde,) = torch.autograd.grad(first_spike(s_tilde, straight_through=p["straight"]), s_tilde, w.double())
    Mg = g_tilde.abs() * p["peak"]
    leaves = [xa, da, sa] + ([va] if va is not None else [])
    for backend in ("sequential", "fft", "chunked", "fused", "auto"):
        s, v, grads = _single_spike_run(p, backend, w, wv)
        assert s.dtype == dtype and bool((s.sum(0) <= 1).all())
        assert torch.equal(s[:, keep], s_ref[:, keep].to(dtype)), backend
        assert_close(f"single_spike {backend} v", v, v_ref, tol_v[backend])
        if backend in ("fused", "auto"):  # the kernel repeats the loop's operations: no exemption
            assert torch.equal(v, v_seq) and torch.equal(s, s_seq), backend
        if backend == "sequential":
            continue
        fft = backend == "fft"
        E = g_tilde.abs() * (p["lip"] * (tol_v[backend] + tol_v["sequential"]) + 8 * u * p["peak"])
        Eg = torch.autograd.grad(Mv, leaves, E, retain_graph=True)
        Mgg = torch.autograd.grad(Mv, leaves, Mg + Mwv, retain_graph=True)
        bound = {"x": Eg[0] + 2 * n * u * Mgg[0], "decay": Eg[1] + 2 * n * u * Mgg[1],
                 "scale": Eg[2] + 2 * n * u * Mgg[2]}
        if va is not None:
            bound["v0"] = Eg[3] + 2 * n * u * Mgg[3]
        if p["scale"] is None:  # scale = 1 - decay: the decay also gets the scale's terms
            bound["decay"] = bound["decay"] + bound["scale"]
        bound["threshold"] = reduced(E + 2 * n * u * Mg, thr64.shape)
        if fft:
            grev = leak_reverse(Mg + Mwv, d64).amax(0)
            prev = torch.cat([(v064.abs() if v064 is not None else torch.zeros(())).expand((1,) + rest),
                              Mv.detach()[:-1]])
            bound["x"] = bound["x"] + kfft * grev * sc64.abs()
            for k in ("decay", "scale", "v0"):
                if k in bound:
                    bound[k] = bound[k] + reduced(kfft * grev * (2 * T * (prev + x.double().abs()).amax(0) + 1),
                                                  bound[k].shape)
        for name, gr in grads.items():
            ref = g_seq[name]
            if ref is None:
                assert gr is None or not bool(gr.any()), (backend, name)
                continue
            assert_close(f"single_spike {backend} grad {name}", gr, ref, bound[name])
