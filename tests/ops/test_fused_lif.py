"""Time-fused LIF (numba kernel on the CPU) against the sequential reference ``lif``.

The fused forward performs the reference's operations in the same order, so spikes, membranes
and final states are compared exactly; gradients to 1e-4 relative (of the largest entry).
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikescan.ops import backends
from spikescan.ops.lif import lif, lif_fused
from spikescan.ops.lif.fused import lif_fused as lif_backend
from spikescan.surrogate import ATan, FastSigmoid, Sigmoid, Surrogate, Triangle

F64 = torch.float64


def rel_err(a, b):
    return float((a - b).detach().abs().max() / a.detach().abs().max().clamp_min(1e-30))


def make_case(T, B, F, per_neuron, reset, seed=0, dtype=torch.float32):
    """Random input and parameters; the input keeps the membrane mostly away from the threshold."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(T, B, F, generator=g, dtype=dtype) * 0.6 + 0.15).requires_grad_()
    if per_neuron:
        decay = (0.5 + 0.45 * torch.rand(F, generator=g, dtype=dtype)).requires_grad_()
        threshold = (0.6 + torch.rand(B, F, generator=g, dtype=dtype)).requires_grad_()
        v_reset = (0.2 * torch.rand(F, generator=g, dtype=dtype) - 0.1) if reset == "zero" else torch.zeros((), dtype=dtype)
        v_reset.requires_grad_(reset == "zero")
    else:
        decay = torch.tensor(0.9, dtype=dtype, requires_grad=True)
        threshold = torch.tensor(1.0, dtype=dtype, requires_grad=True)
        v_reset = torch.tensor(0.05 if reset == "zero" else 0.0, dtype=dtype, requires_grad=reset == "zero")
    v0 = (0.3 * torch.randn(B, F, generator=g, dtype=dtype)).requires_grad_()
    return x, decay, threshold, v_reset, v0


def run_both(case, membrane=True, **kw):
    """Reference and fused outputs ``(s, v, state)`` (``(s, state)`` with ``membrane=False``: the
    CPU kernel then stores no membrane and its backward recomputes it)."""
    x, decay, threshold, v_reset, v0 = case
    kw = dict(v_reset=v_reset, v0=v0, return_membrane=membrane, return_state=True, **kw)
    ref = lif(x, decay, threshold, backend="sequential", **kw)
    fus = lif_fused(x, decay, threshold, **kw)
    return ref, fus


def compare_grads(case, ref, fus, tol=1e-4, seed=1):
    leaves = [t for t in case if t.requires_grad]
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in ref]
    loss_r = sum((o * w).sum() for o, w in zip(ref, weights))
    loss_f = sum((o * w).sum() for o, w in zip(fus, weights))
    gr = torch.autograd.grad(loss_r, leaves)
    gf = torch.autograd.grad(loss_f, leaves)
    for a, b in zip(gr, gf):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert rel_err(a, b) <= tol, rel_err(a, b)


@pytest.mark.parametrize("T", [1, 2, 100, 1000])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
def test_matches_sequential(T, reset, per_neuron):
    case = make_case(T, 3, 16, per_neuron, reset, seed=T)
    ref, fus = run_both(case, reset=reset)
    (s1, v1, l1), (s2, v2, l2) = ref, fus
    assert torch.equal(s1, s2)
    assert 0 < s1.sum() < s1.numel() or T <= 2
    assert rel_err(v1, v2) <= 1e-5 and rel_err(l1, l2) <= 1e-5
    compare_grads(case, ref, fus)
    # without the membrane output: no stored membrane, the backward recomputes it per segment
    ref, fus = run_both(case, membrane=False, reset=reset)
    assert torch.equal(ref[0], fus[0]) and torch.equal(ref[1], fus[1])
    compare_grads(case, ref, fus, seed=2)


@pytest.mark.parametrize("surrogate", [FastSigmoid(10.0), ATan(3.0), Sigmoid(5.0), Triangle(0.7)],
                         ids=lambda s: s.kind)
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("membrane", [True, False], ids=["stored_v", "recomputed_v"])
def test_surrogates_and_detach(surrogate, detach_reset, reset, membrane):
    case = make_case(40, 2, 8, True, reset, seed=3)
    ref, fus = run_both(case, membrane=membrane, reset=reset, surrogate=surrogate, detach_reset=detach_reset)
    assert torch.equal(ref[0], fus[0])
    compare_grads(case, ref, fus)


@pytest.mark.parametrize("T", [3, 31, 32, 33, 35, 63, 64, 65])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_segment_boundaries(T, reset):
    """The CPU backward recomputes the membranes in segments of ``SEGMENT`` (32) steps from
    checkpoints: sequences ending just before, on and after a segment boundary, with an odd or
    even number of steps in the last segment, give the reference's spikes and gradients."""
    from spikescan.ops._kernels._common import SEGMENT

    assert SEGMENT == 32  # the lengths above straddle its boundaries
    case = make_case(T, 2, 7, True, reset, seed=100 + T)
    ref, fus = run_both(case, membrane=False, reset=reset)
    assert torch.equal(ref[0], fus[0]) and torch.equal(ref[1], fus[1])
    assert 0 < ref[0].sum() < ref[0].numel()
    compare_grads(case, ref, fus, seed=T)


@pytest.mark.parametrize("needs", [("x",), ("decay",), ("threshold",), ("v0",), ("x", "v_reset"),
                                   ("x", "decay", "threshold", "v_reset", "v0")], ids="+".join)
@pytest.mark.parametrize("membrane_loss", [False, True], ids=["spike_loss", "spike_and_membrane_loss"])
def test_gradient_specialisations(needs, membrane_loss):
    """The CPU backward is compiled per call pattern: without the per-neuron parameter sums when
    no decay/threshold/v_reset needs a gradient, without reading a membrane gradient when the
    membrane output has none.  Each pattern gives the reference's gradients."""
    x, decay, threshold, v_reset, v0 = make_case(50, 3, 6, True, "zero", seed=11)
    leaves = dict(x=x, decay=decay, threshold=threshold, v_reset=v_reset, v0=v0)
    for name, t in leaves.items():
        t.requires_grad_(name in needs)
    wanted = [leaves[n] for n in needs]
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    grads = []
    for fn in (lambda **kw: lif(backend="sequential", **kw), lif_fused):
        s, v = fn(x=x, decay=decay, threshold=threshold, reset="zero", v_reset=v_reset, v0=v0,
                  return_membrane=True)
        loss = (s * w).sum() + ((v * w.flip(0)).sum() if membrane_loss else 0.0)
        grads.append(torch.autograd.grad(loss, wanted))
    for a, b in zip(*grads):
        assert rel_err(a, b) <= 1e-4, rel_err(a, b)


def test_spikes_only_loss_and_unused_outputs():
    """Gradient of a loss on the spikes alone (membrane/state outputs unused: no grad for them)."""
    x, decay, threshold, _, v0 = make_case(30, 2, 5, True, "subtract", seed=4)
    g1 = torch.autograd.grad(lif(x, decay, threshold, v0=v0).sum(), [x, decay, threshold, v0])
    g2 = torch.autograd.grad(lif_fused(x, decay, threshold, v0=v0).sum(), [x, decay, threshold, v0])
    for a, b in zip(g1, g2):
        assert rel_err(a, b) <= 1e-4


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_sum_loss_broadcast_gradients(reset):
    """``.sum()`` of every output hands the kernel gradients broadcast over time (one row each)."""
    case = make_case(25, 2, 5, True, reset, seed=6)
    ref, fus = run_both(case, reset=reset)
    leaves = [t for t in case if t.requires_grad]
    g1 = torch.autograd.grad(sum(o.sum() for o in ref), leaves)
    g2 = torch.autograd.grad(sum(o.sum() for o in fus), leaves)
    for a, b in zip(g1, g2):
        assert rel_err(a, b) <= 1e-4


def test_state_streaming_equals_one_call():
    x, decay, threshold, _, _ = make_case(60, 2, 6, True, "zero", seed=5)
    kw = dict(reset="zero", return_membrane=True, return_state=True)
    s, v, last = lif_fused(x, decay, threshold, **kw)
    s_a, v_a, st_a = lif_fused(x[:25], decay, threshold, **kw)
    s_b, v_b, st_b = lif_fused(x[25:], decay, threshold, v0=st_a, **kw)
    assert torch.equal(torch.cat([s_a, s_b]), s) and torch.equal(torch.cat([v_a, v_b]), v)
    assert torch.equal(st_b, last)
    # gradient flows through the carried state like through one call
    g1 = torch.autograd.grad(v.sum() + last.sum(), [x, decay])
    g2 = torch.autograd.grad(v_a.sum() + v_b.sum() + st_b.sum(), [x, decay])
    for a, b in zip(g1, g2):
        assert rel_err(a, b) <= 1e-5


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_gradcheck_float64(reset):
    """float64 gradcheck of the kernel's backward through the membrane and the final state.

    The spikes themselves are a step (zero derivative), so gradcheck runs on ``(v, state)`` with
    ``detach_reset=True``: then the exact derivative is what the kernel computes (the surrogate
    enters only through the spike output).  Inputs keep ``v`` away from the threshold.
    """
    g = torch.Generator().manual_seed(7)
    T, B, F = 7, 2, 3
    x = (torch.randn(T, B, F, generator=g, dtype=F64) * 0.5 + 0.3).requires_grad_()
    decay = torch.tensor([0.6, 0.8, 0.95], dtype=F64, requires_grad=True)
    threshold = torch.tensor([0.7, 0.9, 1.1], dtype=F64, requires_grad=True)
    v_reset = torch.tensor([0.05, -0.05, 0.0], dtype=F64, requires_grad=reset == "zero") if reset == "zero" else 0.0
    v0 = (0.2 * torch.randn(B, F, generator=g, dtype=F64)).requires_grad_()
    _, v, _ = lif_fused(x, decay, threshold, reset=reset, v_reset=v_reset, v0=v0, return_membrane=True,
                        return_state=True)
    margin = (v - threshold).abs().min()
    assert margin > 1e-3  # finite differences of 1e-6 do not flip a spike

    def f(x, decay, threshold, v0, *vr):
        _, v, state = lif_fused(x, decay, threshold, reset=reset, v_reset=vr[0] if vr else 0.0, v0=v0,
                                detach_reset=True, return_membrane=True, return_state=True)
        return v, state

    inputs = (x, decay, threshold, v0) + ((v_reset,) if reset == "zero" else ())
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


@settings(max_examples=15, deadline=None)
@given(T=st.integers(1, 70), rest=st.lists(st.integers(1, 5), min_size=0, max_size=3),
       reset=st.sampled_from(["subtract", "zero"]), membrane=st.booleans(), seed=st.integers(0, 1000))
def test_hypothesis_shapes(T, rest, reset, membrane, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn([T] + rest, generator=g) * 0.7 + 0.2).requires_grad_()
    decay = torch.rand(rest[-1:], generator=g).requires_grad_() if rest else 0.8
    kw = dict(reset=reset, return_membrane=membrane, return_state=True)
    ref = lif(x, decay, 0.5, **kw)
    fus = lif_fused(x, decay, 0.5, **kw)
    assert all(a.shape == b.shape for a, b in zip(ref, fus))
    assert all(torch.equal(a, b) for a, b in zip(ref, fus))
    leaves = [x] + ([decay] if rest else [])
    gr = torch.autograd.grad(sum(o.sum() for o in ref), leaves)
    gf = torch.autograd.grad(sum(o.sum() for o in fus), leaves)
    for a, b in zip(gr, gf):
        assert rel_err(a, b) <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    x = (torch.randn(20, 3, 4) * 0.6 + 0.2).to(dtype).requires_grad_()
    s1, v1 = lif(x, 0.9, 0.8, return_membrane=True)
    s2, v2 = lif_fused(x, 0.9, 0.8, return_membrane=True)
    assert s2.dtype == dtype and v2.dtype == dtype
    assert torch.equal(s1, s2) and torch.equal(v1, v2)
    (g1,) = torch.autograd.grad(s1.sum(), x)
    (g2,) = torch.autograd.grad(s2.sum(), x)
    assert g2.dtype == dtype and torch.allclose(g1.float(), g2.float(), rtol=1e-3, atol=1e-3)


def test_non_contiguous_input_and_no_grad():
    x = (torch.randn(4, 30, 5) * 0.8).transpose(0, 1)  # [30, 4, 5], not contiguous
    with torch.no_grad():
        s, state = lif_fused(x, 0.7, 0.6, reset="zero", return_state=True)
    s_ref, state_ref = lif(x, 0.7, 0.6, reset="zero", return_state=True)
    assert torch.equal(s, s_ref) and torch.equal(state, state_ref)


def test_backend_contract():
    """The registered "fused" backend has the signature and return convention of every ``lif`` backend."""
    x = torch.randn(10, 2, 3)
    one, zero = torch.tensor(1.0), torch.tensor(0.0)
    s, v, last = lif_backend(x, torch.tensor(0.9), one, zero, None, reset="subtract", surrogate=FastSigmoid(),
                             detach_reset=False)
    assert s.shape == v.shape == x.shape and last.shape == x.shape[1:]
    s_ref, v_ref, last_ref = lif(x, 0.9, reset="subtract", return_membrane=True, return_state=True)
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref) and torch.equal(last, last_ref)


def test_supports_for_auto():
    x = torch.randn(3, 2)
    from spikescan.surrogate import get

    assert "fused" in backends("lif", x, surrogate=get(None)) and "fused" in backends("lif", x, surrogate=get("atan"))
    assert "fused" not in backends("lif", x, surrogate=_Custom())
    assert "fused" not in backends("lif", torch.empty(3, 2, device="meta"), surrogate=get(None))


class _Custom(Surrogate):
    kind = "custom"
    _param_name = "w"
    w = 1.0


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(decay=float("nan")), ValueError, "decay must be finite"),
    (dict(decay=torch.tensor([0.5, math.inf, 0.5])), ValueError, "decay must be finite"),
    (dict(decay=1.5), ValueError, "decay must lie in"),
    (dict(threshold=0.0), ValueError, "threshold must lie in"),
    (dict(threshold=torch.tensor([1.0, -1.0, 1.0])), ValueError, "threshold must lie in"),
    (dict(decay=torch.tensor([1, 0, 1])), TypeError, "floating"),
    (dict(decay=torch.full((3,), 0.5, device="meta")), ValueError, "is on meta"),
    (dict(v_reset=0.5, reset="subtract"), ValueError, "v_reset is used only"),
    (dict(reset="soft"), ValueError, "reset must be one of"),
    (dict(surrogate=_Custom()), ValueError, "built-in surrogates"),
])
def test_bad_input(kwargs, err, match):
    x = torch.randn(5, 2, 3)
    kw = dict(decay=0.9)
    kw.update(kwargs)
    decay = kw.pop("decay")
    with pytest.raises(err, match=match):
        lif_fused(x, decay, **kw)


def test_bad_x():
    with pytest.raises(TypeError, match="floating"):
        lif_fused(torch.ones(5, 3, dtype=torch.int64), 0.9)
    with pytest.raises(ValueError, match="at least one time step"):
        lif_fused(torch.ones(0, 3), 0.9)
    with pytest.raises(ValueError, match="non-finite"):
        lif_fused(torch.tensor([[1.0, float("nan")]]), 0.9, check=True)
    with pytest.raises(ValueError, match="CPU .numba. and CUDA"):
        lif_fused(torch.ones(5, 3, device="meta"), 0.9)


@pytest.mark.parametrize("shape", [(6, 0, 3), (6, 2, 0), (6, 0)])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_empty_batch(shape, reset):
    """No neuron (B = 0 or N = 0): empty outputs, an empty grad_x and zero parameter gradients.

    Before: the kernels' thread split raised "range() arg 3 must not be zero"."""
    x = torch.randn(shape, requires_grad=True)
    per = shape[2:]
    decay = torch.full(per, 0.9, requires_grad=True)
    threshold = torch.full(per, 0.5, requires_grad=True)
    v_reset = torch.full(per, 0.1 if reset == "zero" else 0.0, requires_grad=reset == "zero")
    v0 = torch.zeros(per, requires_grad=True)
    s, v, state = lif_fused(x, decay, threshold, reset=reset, v_reset=v_reset, v0=v0, return_membrane=True,
                            return_state=True)
    assert s.shape == v.shape == x.shape and state.shape == shape[1:]
    leaves = [x, decay, threshold, v0] + ([v_reset] if reset == "zero" else [])
    grads = torch.autograd.grad(s.sum() + v.sum() + state.sum(), leaves)
    assert grads[0].shape == x.shape
    for g, p in zip(grads[1:], leaves[1:]):
        assert torch.equal(g, torch.zeros_like(p))


# ------------------------------------------------------------------ large output buffers (_cpu)


def test_output_buffer_pool_reuses_only_free_buffers(monkeypatch):
    from spikescan.ops._kernels import _cpu

    monkeypatch.setattr(_cpu, "_POOL_ENABLED", True)
    monkeypatch.setattr(_cpu, "_buffers", [])
    like = torch.empty(0)
    shape = (1000, 2100)  # 8.4 MB: pooled
    a = _cpu.empty(shape, like)
    pa = a.data_ptr()
    b = _cpu.empty(shape, like)
    assert b.data_ptr() != pa  # a is alive
    del a
    c = _cpu.empty(shape, like)
    assert c.data_ptr() == pa and c.shape == shape  # a's buffer, free again, is reused
    view = c[5:]
    del c
    assert _cpu.empty(shape, like).data_ptr() != pa  # a view keeps it in use
    del view
    arr = _cpu.empty(shape, like).numpy()  # reuses pa; then a numpy view keeps it in use
    assert _cpu.empty(shape, like).data_ptr() != arr.ctypes.data
    assert _cpu.empty((10, 10), like).numel() == 100  # small: plain torch.empty


def test_output_buffer_pool_cap_and_switch(monkeypatch):
    from spikescan.ops._kernels import _cpu

    like = torch.empty(0, dtype=torch.float64)
    monkeypatch.setattr(_cpu, "_buffers", [])
    monkeypatch.setattr(_cpu, "_POOL_MAX_BYTES", 20 << 20)
    keep = [_cpu.empty((2 << 20,), like) for _ in range(3)]  # 16 MiB each: only the first fits
    assert len(_cpu._buffers) == 1 and all(t.dtype == torch.float64 for t in keep)
    del keep
    t = _cpu.empty((2 << 20,), like)  # the free pooled buffer is reused, nothing added
    assert len(_cpu._buffers) == 1 and t.data_ptr() == _cpu._buffers[0].ctypes.data
    monkeypatch.setattr(_cpu, "_POOL_ENABLED", False)
    assert _cpu.empty((2 << 20,), like).data_ptr() != _cpu._buffers[0].ctypes.data


def test_pooled_outputs_survive_the_next_call():
    """Pooled outputs (the spikes) must not be handed out again while they are alive."""
    x = (torch.randn(1000, 4, 700) * 0.6 + 0.2).requires_grad_()  # 11 MB outputs: pooled
    s1 = lif_fused(x, 0.9, 0.8)
    s2 = lif_fused(x * 1.1, 0.9, 0.8)  # allocates while s1's graph (and its v) is alive
    (g1,) = torch.autograd.grad(s1.sum(), x)
    (g_ref,) = torch.autograd.grad(lif(x, 0.9, 0.8).sum(), x)
    assert rel_err(g_ref, g1) <= 1e-4 and not torch.equal(s1, s2)
