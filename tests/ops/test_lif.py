import pytest
import torch

from spikescan.ops import backends
from spikescan.ops.lif import lif
from spikescan.surrogate import FastSigmoid, Triangle

F64 = torch.float64


@pytest.fixture(autouse=True, params=["sequential", "fused"])
def default_backend(request, backend_patch):
    """Every test here runs twice: with ``backend="auto"`` (the default) resolved to the
    sequential reference, then to the fused kernel."""
    backend_patch.auto_picks("lif", request.param)
    return request.param


def _col(values):
    """[T] list -> [T, 1] float64 tensor (T steps, one neuron)."""
    return torch.tensor(values, dtype=F64).unsqueeze(1)


# --------------------------------------------------------------------------- forward, by hand

X_HAND = [1.2, 0.3, 0.9, 0.2]  # decay 0.5, threshold 1


def test_hand_example_subtract():
    # v0=1.2 fire -> 0.2 | v1=0.1+0.3=0.4 | v2=0.2+0.9=1.1 fire -> 0.1 | v3=0.05+0.2=0.25
    s, v, state = lif(_col(X_HAND), 0.5, 1.0, reset="subtract", return_membrane=True, return_state=True)
    torch.testing.assert_close(s, _col([1, 0, 1, 0]))
    torch.testing.assert_close(v, _col([1.2, 0.4, 1.1, 0.25]))
    torch.testing.assert_close(state, torch.tensor([0.25], dtype=F64))


def test_hand_example_zero_reset():
    # v0=1.2 fire -> 0 | v1=0.3 | v2=0.15+0.9=1.05 fire -> 0 | v3=0.2
    s, v, state = lif(_col(X_HAND), 0.5, 1.0, reset="zero", return_membrane=True, return_state=True)
    torch.testing.assert_close(s, _col([1, 0, 1, 0]))
    torch.testing.assert_close(v, _col([1.2, 0.3, 1.05, 0.2]))
    torch.testing.assert_close(state, torch.tensor([0.2], dtype=F64))


def test_hand_example_zero_reset_to_v_reset():
    # v0=1.2 fire -> -0.5 | v1=-0.25+0.3=0.05 | v2=0.025+0.9=0.925 | v3=0.4625+0.2=0.6625
    s, v, state = lif(_col(X_HAND), 0.5, 1.0, reset="zero", v_reset=-0.5, return_membrane=True,
                      return_state=True)
    torch.testing.assert_close(s, _col([1, 0, 0, 0]))
    torch.testing.assert_close(v, _col([1.2, 0.05, 0.925, 0.6625]))
    torch.testing.assert_close(state, torch.tensor([0.6625], dtype=F64))


def test_fires_when_reaching_threshold_exactly():
    s = lif(_col([0.25, 0.5]), 1.0, 0.75)  # v = 0.25, 0.75 == threshold
    torch.testing.assert_close(s, _col([0, 1]))


def test_return_order_and_shapes():
    x = torch.randn(7, 2, 3)
    s = lif(x, 0.9)
    assert isinstance(s, torch.Tensor) and s.shape == x.shape and s.dtype == x.dtype
    s2, v = lif(x, 0.9, return_membrane=True)
    s3, st = lif(x, 0.9, return_state=True)
    s4, v4, st4 = lif(x, 0.9, return_membrane=True, return_state=True)
    assert v.shape == x.shape and st.shape == (2, 3)
    for a in (s2, s3, s4):
        assert torch.equal(a, s)
    assert torch.equal(v, v4) and torch.equal(st, st4)
    assert torch.equal((v >= 1.0).to(x.dtype), s)  # spikes are recomputable from v
    # backend="auto" and surrogate by name give the same forward
    assert torch.equal(lif(x, 0.9, backend="auto", surrogate="atan"), s)


def test_decay_zero_and_one():
    x = _col([0.5, 0.6, 0.7])
    # decay 0: memoryless, v = x
    _, v = lif(x, 0.0, 1.0, return_membrane=True)
    torch.testing.assert_close(v, x)
    # decay 1: perfect integrator: 0.5, 1.1 fire -> 0.1, 0.8
    s, v = lif(x, 1.0, 1.0, reset="subtract", return_membrane=True)
    torch.testing.assert_close(v, _col([0.5, 1.1, 0.8]))
    torch.testing.assert_close(s, _col([0, 1, 0]))


# --------------------------------------------------------------------------- per-neuron params, state


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_per_neuron_parameters(reset):
    torch.manual_seed(0)
    T, B, F = 9, 2, 3
    x = torch.rand(T, B, F, dtype=F64) * 1.5
    decay = torch.tensor([0.2, 0.6, 0.95], dtype=F64)
    threshold = torch.tensor([[0.5, 1.0, 1.5], [0.8, 0.9, 1.1]], dtype=F64)  # [B, F]
    v_reset = torch.tensor([0.0, -0.2, 0.1], dtype=F64) if reset == "zero" else 0.0
    s, v = lif(x, decay, threshold, reset=reset, v_reset=v_reset, return_membrane=True)
    for b in range(B):
        for f in range(F):
            vr = float(v_reset[f]) if reset == "zero" else 0.0
            s1, v1 = lif(x[:, b, f], float(decay[f]), float(threshold[b, f]), reset=reset, v_reset=vr,
                         return_membrane=True)
            torch.testing.assert_close(s[:, b, f], s1)
            torch.testing.assert_close(v[:, b, f], v1)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_state_carry_equals_one_run(reset):
    torch.manual_seed(1)
    x = torch.rand(12, 4, 5, dtype=F64) * 1.2
    v0 = torch.rand(4, 5, dtype=F64) * 0.5
    kw = dict(reset=reset, return_membrane=True, return_state=True)
    s, v, st = lif(x, 0.8, 1.0, v0=v0, **kw)
    sa, va, sta = lif(x[:5], 0.8, 1.0, v0=v0, **kw)
    sb, vb, stb = lif(x[5:], 0.8, 1.0, v0=sta, **kw)
    torch.testing.assert_close(torch.cat([sa, sb]), s)
    torch.testing.assert_close(torch.cat([va, vb]), v)
    torch.testing.assert_close(stb, st)


def test_v0_enters_first_step():
    s, v = lif(_col([0.1, 0.0]), 0.5, 1.0, v0=torch.tensor([1.8], dtype=F64), return_membrane=True)
    # v0 = 0.5*1.8 + 0.1 = 1.0 fire -> 0 | v1 = 0
    torch.testing.assert_close(v, _col([1.0, 0.0]))
    torch.testing.assert_close(s, _col([1, 0]))
    # scalar v0
    _, v = lif(_col([0.1]), 0.5, 1.0, v0=0.4, return_membrane=True)
    torch.testing.assert_close(v, _col([0.3]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_matches_float64(dtype):
    x = torch.tensor(X_HAND, dtype=F64).reshape(4, 1).repeat(1, 3)
    s, v, st = lif(x.to(dtype), 0.5, 1.0, return_membrane=True, return_state=True)
    assert s.dtype == v.dtype == st.dtype == dtype
    s64, v64, st64 = lif(x, 0.5, 1.0, return_membrane=True, return_state=True)
    assert torch.equal(s.double(), s64)
    tol = 1e-2 if dtype != torch.float32 else 1e-6
    torch.testing.assert_close(v.double(), v64, atol=tol, rtol=tol)


# --------------------------------------------------------------------------- gradients


def _inputs_with_margin(reset, margin, seed=0):
    """Random inputs whose membrane stays at least ``margin`` away from threshold at every step."""
    T, B, F = 6, 2, 3
    for s in range(seed, seed + 1000):
        g = torch.Generator().manual_seed(s)
        x = torch.rand(T, B, F, dtype=F64, generator=g) * 1.6 - 0.2
        decay = torch.rand(F, dtype=F64, generator=g) * 0.7 + 0.2
        thr = torch.rand(F, dtype=F64, generator=g) * 0.8 + 0.6
        v0 = torch.rand(B, F, dtype=F64, generator=g) * 0.5
        v_reset = torch.rand(F, dtype=F64, generator=g) * 0.4 - 0.2 if reset == "zero" else None
        kw = dict(reset=reset) if v_reset is None else dict(reset=reset, v_reset=v_reset)
        s, v = lif(x, decay, thr, v0=v0, return_membrane=True, **kw)
        if float((v - thr).abs().min()) > margin and 0 < float(s.mean()) < 1:
            return x, decay, thr, v0, v_reset
    raise AssertionError("no input with enough margin")


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_gradcheck(reset, detach_reset):
    # A triangle surrogate narrower than the distance of every membrane value to threshold has
    # zero derivative wherever the true derivative of the step is zero, so finite differences
    # check the whole graph (membrane chain, resets, decay, threshold, v0, v_reset) exactly.
    x, decay, thr, v0, v_reset = _inputs_with_margin(reset, margin=1e-2)
    sur = Triangle(width=1e-3)
    tensors = [t.clone().requires_grad_(True) for t in (x, decay, thr, v0)]
    if v_reset is not None:
        tensors.append(v_reset.clone().requires_grad_(True))

    def f(x, decay, thr, v0, v_reset=0.0):
        return lif(x, decay, thr, v0=v0, reset=reset, v_reset=v_reset, surrogate=sur, detach_reset=detach_reset,
                   return_membrane=True, return_state=True)

    assert torch.autograd.gradcheck(f, tensors, eps=1e-6, atol=1e-8)


def _two_step_grads(reset, detach_reset, x0=1.3, x1=0.1, a=0.6, th=1.0, vr=0.2):
    """Autograd of L = w0 s0 + w1 s1 + c0 v0 + c1 v1 for T=2, one neuron."""
    x = torch.tensor([[x0], [x1]], dtype=F64, requires_grad=True)
    a_t = torch.tensor([a], dtype=F64, requires_grad=True)
    th_t = torch.tensor([th], dtype=F64, requires_grad=True)
    kw = dict(v_reset=vr) if reset == "zero" else {}
    s, v = lif(x, a_t, th_t, reset=reset, surrogate=FastSigmoid(slope=2.0), detach_reset=detach_reset,
               return_membrane=True, **kw)
    w, c = torch.tensor([[0.7], [1.3]], dtype=F64), torch.tensor([[-0.4], [0.9]], dtype=F64)
    ((w * s).sum() + (c * v).sum()).backward()
    return x.grad.flatten(), a_t.grad, th_t.grad


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_surrogate_gradient_by_hand(reset, detach_reset):
    x0, x1, a, th, vr = 1.3, 0.1, 0.6, 1.0, 0.2
    w0, w1, c0, c1 = 0.7, 1.3, -0.4, 0.9

    def g(z):  # FastSigmoid(slope=2)
        return 1.0 / (2.0 * abs(z) + 1.0) ** 2

    s0 = 1.0  # x0 > th
    if reset == "subtract":
        p0 = x0 - th * s0
        dp0_dx0 = 1.0 if detach_reset else 1.0 - th * g(x0 - th)
        dp0_dth = -s0 if detach_reset else -s0 + th * g(x0 - th)
    else:
        p0 = x0 * (1 - s0) + vr * s0
        dp0_dx0 = (1 - s0) if detach_reset else (1 - s0) + (vr - x0) * g(x0 - th)
        dp0_dth = 0.0 if detach_reset else -(vr - x0) * g(x0 - th)
    v1 = a * p0 + x1
    g0, g1 = g(x0 - th), g(v1 - th)
    want_dx1 = w1 * g1 + c1
    want_dx0 = w0 * g0 + c0 + (w1 * g1 + c1) * a * dp0_dx0
    want_da = (w1 * g1 + c1) * p0
    want_dth = -w0 * g0 + w1 * g1 * (a * dp0_dth - 1.0) + c1 * a * dp0_dth

    dx, da, dth = _two_step_grads(reset, detach_reset, x0, x1, a, th, vr)
    torch.testing.assert_close(dx, torch.tensor([want_dx0, want_dx1], dtype=F64))
    torch.testing.assert_close(da, torch.tensor([want_da], dtype=F64))
    torch.testing.assert_close(dth, torch.tensor([want_dth], dtype=F64))


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_detach_reset_changes_only_the_reset_path(reset):
    dx_a, da_a, _ = _two_step_grads(reset, False)
    dx_b, da_b, _ = _two_step_grads(reset, True)
    assert torch.equal(dx_a[1], dx_b[1])  # last step: no reset downstream
    assert not torch.allclose(dx_a[0], dx_b[0])  # the spike at step 0 resets the membrane
    torch.testing.assert_close(da_a, da_b)  # decay multiplies p0, whose value is the same


def test_state_gradient_flows_into_v0():
    v0 = torch.tensor([0.3], dtype=F64, requires_grad=True)
    _, st = lif(_col([0.1, 0.2, 0.1]), 0.5, 10.0, v0=v0, detach_reset=True, return_state=True)
    st.sum().backward()
    # no spike, reset detached: state = 0.5^3 v0 + ..., so d state / d v0 = 0.125
    assert float(v0.grad) == pytest.approx(0.125, rel=1e-12)


# --------------------------------------------------------------------------- validation


def test_validation_errors():
    x = torch.rand(4, 2, 3)
    with pytest.raises(ValueError, match="threshold"):
        lif(x, 0.5, 0.0)
    with pytest.raises(ValueError, match="threshold"):
        lif(x, 0.5, torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="decay"):
        lif(x, 1.5)
    with pytest.raises(ValueError, match="decay"):
        lif(x, -0.1)
    with pytest.raises(ValueError, match="decay"):
        lif(x, float("nan"))
    with pytest.raises(ValueError, match="decay"):
        lif(x, torch.full((4,), 0.5))  # not broadcastable to [2, 3]
    with pytest.raises(ValueError, match="threshold"):
        lif(torch.rand(4, 2, 1), 0.5, torch.ones(3))  # would enlarge [2, 1] to [2, 3]
    with pytest.raises(ValueError, match="x contains non-finite"):
        lif(torch.tensor([[0.1], [float("nan")]]), 0.5, check=True)
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        lif(torch.ones(4, 2, dtype=torch.int64), 0.5)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        lif([[0.1]], 0.5)
    with pytest.raises(ValueError, match="x must have at least one time step"):
        lif(torch.zeros(0, 3), 0.5)
    with pytest.raises(ValueError, match="reset must be one of"):
        lif(x, 0.5, reset="hard")
    with pytest.raises(ValueError, match="backend must be one of"):
        lif(x, 0.5, backend="fused_cuda")
    with pytest.raises(ValueError, match="v_reset"):
        lif(x, 0.5, reset="subtract", v_reset=-0.3)  # subtract ignores v_reset: refuse rather than ignore
    with pytest.raises(ValueError, match="v0"):
        lif(x, 0.5, v0=torch.zeros(5))
    with pytest.raises(ValueError, match="v0"):
        lif(x, 0.5, v0=torch.tensor([float("inf")]))
    with pytest.raises(TypeError, match="decay"):
        lif(x, torch.tensor([1]))
    with pytest.raises(ValueError, match="unknown surrogate"):
        lif(x, 0.5, surrogate="step")


def test_range_errors_show_the_offending_values():
    """Before: decay=1.0000001 reported "got values in [1, 1]", hiding the bad value."""
    x = torch.rand(4, 2, 3)
    with pytest.raises(ValueError, match=r"decay must lie in \[0\.0, 1\.0\], got max 1\.0000001$"):
        lif(x, 1.0000001)
    with pytest.raises(ValueError, match=r"got min -0\.25 and max 1\.0000001 \(2 of 3 values outside\)$"):
        lif(x, torch.tensor([0.5, 1.0000001, -0.25]))  # float32: its own shortest repr
    with pytest.raises(ValueError, match=r"got max 1\.0000000000000002 \(1 of 3 values outside\)$"):
        lif(x.double(), torch.tensor([0.5, 1 + 2**-52, 0.2], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"threshold must lie in \(0\.0, inf\], got min -1e-300$"):
        lif(x, 0.5, -1e-300)
    # inside the range as given, but 0 once rounded to the compute dtype
    with pytest.raises(ValueError, match=r"threshold must lie in \(0\.0, inf\], got min 0\.0 "
                                         r"\(1e-50 rounds to 0\.0 in torch\.float32\)$"):
        lif(x, 0.5, 1e-50)
    with pytest.raises(ValueError, match=r"decay must be finite, got nan$"):
        lif(x, float("nan"))


def test_meta_tensors_are_a_clear_error(default_backend):
    """Before: "Tensor.item() cannot be called on meta tensors" / "Cannot copy out of meta tensor".
    (Asked for explicitly, the fused kernel first says that it cannot run on meta tensors.)"""
    x = torch.rand(4, 2, 3)
    match = r"x is a meta tensor \(no data\)" if default_backend == "sequential" else "not on meta"
    with pytest.raises(ValueError, match=match):
        lif(x.to("meta"), 0.5)
    with pytest.raises(ValueError, match=r"decay is on meta \(a meta tensor: no data\) but the input is on cpu"):
        lif(x, torch.tensor(0.5, device="meta"))
    with pytest.raises(ValueError, match=r"v0 is on meta \(a meta tensor: no data\) but the input is on cpu"):
        lif(x, 0.5, v0=torch.zeros(3, device="meta"))


def test_backend_registry():
    assert {"sequential", "fused"} <= set(backends("lif"))
