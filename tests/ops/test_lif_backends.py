"""``lif(..., backend="fused")`` and ``backend="auto"`` through the public front door, against
``backend="sequential"``.

The kernel itself is tested in ``test_fused_lif.py`` (through ``lif_fused``); this file checks the
wiring: that ``lif`` dispatches to it, what ``"auto"`` picks, and the errors when the fused
backend is asked for but cannot run.  Tolerances (issue #3): spikes identical, membranes and
states <= 1e-5 relative (float32), gradients <= 1e-4 relative to the largest entry.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikescan.ops._backend import resolve
from spikescan.ops.lif import lif
from spikescan.surrogate import ATan, FastSigmoid, Surrogate, Triangle

F64 = torch.float64


def rel_err(a, b):
    return float((a - b).detach().abs().max() / b.detach().abs().max().clamp_min(1e-30))


def make_case(T, B, F, per_neuron, reset, seed=0, dtype=torch.float32):
    """Input and parameters with gradients; the input keeps the membrane mostly off the threshold."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(T, B, F, generator=g, dtype=dtype) * 0.6 + 0.15).requires_grad_()
    if per_neuron:
        decay = (0.5 + 0.45 * torch.rand(F, generator=g, dtype=dtype)).requires_grad_()
        threshold = (0.6 + torch.rand(B, F, generator=g, dtype=dtype)).requires_grad_()
    else:
        decay = torch.tensor(0.9, dtype=dtype, requires_grad=True)
        threshold = torch.tensor(1.0, dtype=dtype, requires_grad=True)
    v0 = (0.3 * torch.randn(B, F, generator=g, dtype=dtype)).requires_grad_()
    return x, decay, threshold, v0


def run(backend, case, reset, **kw):
    x, decay, threshold, v0 = case
    return lif(x, decay, threshold, v0=v0, reset=reset, backend=backend, return_membrane=True,
               return_state=True, **kw)


@pytest.mark.parametrize("T", [1, 2, 100, 1000])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
def test_fused_matches_sequential(T, reset, per_neuron):
    B, F = (2, 3) if T == 1000 else (3, 8)
    case = make_case(T, B, F, per_neuron, reset, seed=T)
    ref = run("sequential", case, reset)
    fus = run("fused", case, reset)
    s_r, v_r, st_r = ref
    s_f, v_f, st_f = fus
    assert torch.equal(s_f, s_r)
    assert 0 < float(s_r.detach().mean()) < 1 or T <= 2
    assert rel_err(v_f, v_r) <= 1e-5 and rel_err(st_f, st_r) <= 1e-5
    # the loss touches spikes (through the surrogate), membranes and the final state
    g = torch.Generator().manual_seed(1)
    w = [torch.randn(o.shape, generator=g) for o in ref]
    grads_r = torch.autograd.grad(sum((o * k).sum() for o, k in zip(ref, w)), case)
    grads_f = torch.autograd.grad(sum((o * k).sum() for o, k in zip(fus, w)), case)
    for name, a, b in zip(("x", "decay", "threshold", "v0"), grads_f, grads_r):
        assert a.shape == b.shape, name
        assert rel_err(a, b) <= 1e-4, (name, rel_err(a, b))


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_gradcheck_float64_through_lif(reset, detach_reset):
    """float64 gradcheck of ``lif(backend="fused")``: a triangle surrogate narrower than the
    distance of every membrane value to the threshold has zero derivative wherever the step's
    true derivative is zero, so finite differences check the whole graph exactly."""
    g = torch.Generator().manual_seed(3)
    T, B, F = 6, 2, 3
    x = (torch.rand(T, B, F, generator=g, dtype=F64) * 1.4 - 0.1).requires_grad_()
    decay = (0.3 + 0.6 * torch.rand(F, generator=g, dtype=F64)).requires_grad_()
    thr = (0.6 + 0.5 * torch.rand(F, generator=g, dtype=F64)).requires_grad_()
    v0 = (0.3 * torch.rand(B, F, generator=g, dtype=F64)).requires_grad_()
    v_reset = torch.tensor([0.1, -0.1, 0.0], dtype=F64, requires_grad=True)
    kw = dict(reset=reset, surrogate=Triangle(width=1e-3), detach_reset=detach_reset, backend="fused",
              return_membrane=True, return_state=True)
    if reset == "zero":
        kw["v_reset"] = v_reset
    s, v, _ = lif(x, decay, thr, v0=v0, **kw)
    assert float((v - thr).detach().abs().min()) > 1e-2  # finite differences do not flip a spike
    assert 0 < float(s.detach().mean()) < 1

    def f(x, decay, thr, v0):
        return lif(x, decay, thr, v0=v0, **kw)

    assert torch.autograd.gradcheck(f, (x, decay, thr, v0), eps=1e-6, atol=1e-8)


@settings(max_examples=15, deadline=None)
@given(T=st.integers(1, 40), rest=st.lists(st.integers(1, 4), min_size=0, max_size=3),
       reset=st.sampled_from(["subtract", "zero"]), per_neuron=st.booleans(), seed=st.integers(0, 10**6))
def test_hypothesis_shapes(T, rest, reset, per_neuron, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn([T] + rest, generator=g) * 0.6 + 0.2).requires_grad_()
    if per_neuron and rest:
        decay = (0.2 + 0.7 * torch.rand(rest[-1:], generator=g)).requires_grad_()
        thr = (0.5 + torch.rand(rest, generator=g)).requires_grad_()
    else:
        decay = torch.tensor(0.8, requires_grad=True)
        thr = torch.tensor(0.7, requires_grad=True)
    out_r = lif(x, decay, thr, reset=reset, backend="sequential", return_membrane=True, return_state=True)
    out_f = lif(x, decay, thr, reset=reset, backend="fused", return_membrane=True, return_state=True)
    for a, b in zip(out_f, out_r):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.equal(out_f[0], out_r[0])
    assert rel_err(out_f[1], out_r[1]) <= 1e-5 and rel_err(out_f[2], out_r[2]) <= 1e-5
    loss_r = out_r[0].sum() + out_r[1].sum()
    loss_f = out_f[0].sum() + out_f[1].sum()
    leaves = [x, decay, thr]
    for a, b in zip(torch.autograd.grad(loss_f, leaves), torch.autograd.grad(loss_r, leaves)):
        assert a.shape == b.shape and rel_err(a, b) <= 1e-4


class _Custom(Surrogate):
    """A surrogate the kernels do not know (no built-in ``kind``)."""

    kind = "custom"

    @property
    def param(self) -> float:
        return 1.0

    def grad(self, x):
        return torch.exp(-x.abs())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_auto_resolves_to_fused_on_cpu(dtype, backend_patch):
    x = torch.randn(10, 2, 3).to(dtype)
    assert resolve("lif", "auto", x, surrogate=FastSigmoid(25.0)).name == "fused"
    assert resolve("lif", "auto", x, surrogate=ATan(2.0)).name == "fused"
    # and "auto" (the default) really runs the kernel: count its calls
    calls = backend_patch.count_calls("lif", "fused")
    s = lif(x, 0.9, 0.5)
    assert calls == [1] and s.dtype == dtype
    assert torch.equal(s, lif(x, 0.9, 0.5, backend="sequential"))


def test_auto_falls_back_for_custom_surrogate_and_no_kernel(monkeypatch):
    x = torch.randn(10, 2, 3, requires_grad=True)
    assert resolve("lif", "auto", x, surrogate=_Custom()).name == "sequential"
    s = lif(x, 0.9, 0.5, surrogate=_Custom())
    s.sum().backward()
    assert x.grad is not None
    from spikescan.ops import _backend

    monkeypatch.setattr(_backend, "_HAS_NUMBA", False)
    assert resolve("lif", "auto", x, surrogate=FastSigmoid(25.0)).name == "sequential"
    with pytest.raises(ValueError, match="backend='fused' of lif cannot run this input: .*CPU need numba"):
        lif(x, 0.9, backend="fused")


def test_fused_refuses_what_it_cannot_run():
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match="backend='fused' of lif cannot run this input: .*built-in surrogates.*_Custom"):
        lif(x, 0.9, surrogate=_Custom(), backend="fused")
    with pytest.raises(ValueError, match="backend='fused' of lif cannot run this input: .*not on meta"):
        lif(x.to("meta"), 0.9, backend="fused")


@pytest.mark.parametrize("call, err, match", [
    (lambda x: lif(x, float("nan"), backend="fused"), ValueError, "decay must be finite"),
    (lambda x: lif(x, torch.tensor([0.5, float("inf"), 0.5]), backend="fused"), ValueError, "decay must be finite"),
    (lambda x: lif(x, 1.5, backend="fused"), ValueError, "decay must lie in"),
    (lambda x: lif(x, 0.5, 0.0, backend="fused"), ValueError, "threshold must lie in"),
    (lambda x: lif(x, 0.5, torch.tensor([1.0, -0.5, 1.0]), backend="fused"), ValueError, "threshold must lie in"),
    (lambda x: lif(x.long(), 0.5, backend="fused"), TypeError, "x must have a floating-point dtype"),
    (lambda x: lif(x, torch.tensor([1, 1, 1]), backend="fused"), TypeError, "decay must be a floating tensor"),
    (lambda x: lif(x, torch.full((3,), 0.5, device="meta"), backend="fused"), ValueError, "decay is on meta"),
    (lambda x: lif(x, 0.5, v0=torch.zeros(3, device="meta"), backend="fused"), ValueError, "v0 is on meta"),
    (lambda x: lif(x, 0.5, backend="triton"), ValueError, "backend must be one of"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call(torch.rand(5, 2, 3))


@pytest.mark.parametrize("backend", ["auto", "fused", "sequential"])
@pytest.mark.parametrize("shape", [(4, 0, 3), (4, 2, 0)])
def test_empty_per_step_shape(backend, shape):
    """Zero neurons (an empty batch): empty outputs and grad_x, zero parameter gradients."""
    x = torch.randn(shape, requires_grad=True)
    decay = torch.full(shape[2:], 0.5, requires_grad=True)
    s, v, st = lif(x, decay, backend=backend, return_membrane=True, return_state=True)
    assert s.shape == v.shape == x.shape and st.shape == shape[1:]
    gx, gd = torch.autograd.grad(s.sum() + v.sum() + st.sum(), [x, decay])
    assert gx.shape == x.shape and torch.equal(gd, torch.zeros_like(decay))


def test_spikes_only_skips_the_membrane_but_matches():
    """Without return_membrane the backend may skip writing v; spikes and state are the same."""
    case = make_case(50, 2, 4, True, "zero", seed=9)
    s1, st1 = lif(case[0], case[1], case[2], v0=case[3], reset="zero", backend="fused", return_state=True)
    s2, _, st2 = run("sequential", case, "zero")
    assert torch.equal(s1, s2) and rel_err(st1, st2) <= 1e-5
    (g1,) = torch.autograd.grad(s1.sum() + st1.sum(), case[0])
    (g2,) = torch.autograd.grad(s2.sum() + st2.sum(), case[0])
    assert rel_err(g1, g2) <= 1e-4
