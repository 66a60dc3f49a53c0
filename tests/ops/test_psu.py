"""PSU / IPSU / RPSU ops: the equations of methods.md, backends against each other and against
the sequential reference, the LIF identity, causality, gradients, bad input."""

import math

import pytest
import torch

from spikescan.ops import psu as P
from spikescan.surrogate import ATan

F64 = torch.float64
BACKENDS = ["matrix", "chunked", "sequential"]
VARIANTS = ["psu", "ipsu", "rpsu"]


def _membrane(name, x, W, b, tau=2.0, thr=1.0, **kw):
    if name == "psu":
        return P.psu_membrane(x, tau, thr, **kw)
    if name == "ipsu":
        return P.ipsu_membrane(x, W, b, tau, **kw)
    return P.rpsu_membrane(x, W, b, tau, **kw)


def _spikes(name, x, W, b, tau=2.0, thr=1.0, **kw):
    if name == "psu":
        return P.psu(x, tau, thr, **kw)
    if name == "ipsu":
        return P.ipsu(x, W, b, tau, thr, **kw)
    return P.rpsu(x, W, b, tau, thr, **kw)


def _params(T, dtype=torch.float32, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(T, T, generator=g) * math.sqrt(2.0 / T)).to(dtype)
    b = (0.1 * torch.randn(T, generator=g)).to(dtype)
    return W.requires_grad_(requires_grad), b.requires_grad_(requires_grad)


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# --------------------------------------------------------------------------- the equations


def _literal_matrices(T, tau):
    """methods.md, authors' code: M1[i,j] = k^(i-j+1) (j <= i), R[i,j] = -k^(i-j) (j < i)."""
    k = 1.0 / tau
    M1 = torch.zeros(T, T, dtype=F64)
    R = torch.zeros(T, T, dtype=F64)
    for i in range(T):
        for j in range(T):
            if j <= i:
                M1[i, j] = k ** (i - j + 1)
            if j < i:
                R[i, j] = -(k ** (i - j))
    return M1, R


@pytest.mark.parametrize("tau", [2.0, 3.0, 1.25])
@pytest.mark.parametrize("backend", BACKENDS)
def test_psu_code_leak_matches_literal_matrices(tau, backend):
    T, thr = 9, 0.7
    x = torch.randn(T, 3, 4, dtype=F64)
    W, b = _params(T, F64)
    M1, R = _literal_matrices(T, tau)
    L = torch.tril(torch.ones(T, T, dtype=F64))
    flat = x.reshape(T, -1)
    H = M1 @ flat
    expect = {
        "psu": H + thr * (R @ torch.sigmoid(H)),
        "ipsu": (W * L) @ flat + b[:, None] + R @ flat,
        "rpsu": H + R @ torch.sigmoid((W * L) @ flat + b[:, None]),
    }
    for name in VARIANTS:
        kw = dict(leak="psu_code", backend=backend)
        v = P.psu_membrane(x, tau, thr, **kw) if name == "psu" else _membrane(name, x, W, b, tau, **kw)
        torch.testing.assert_close(v.reshape(T, -1), expect[name], rtol=1e-12, atol=1e-12)
        s = _spikes(name, x, W, b, tau, thr, **kw)
        assert torch.equal(s.reshape(T, -1), (expect[name] >= thr).to(F64))


def test_exact_and_code_leak_agree_at_tau_2_and_differ_elsewhere():
    x = torch.randn(12, 5, dtype=F64)
    torch.testing.assert_close(P.psu_membrane(x, 2.0, leak="exact"), P.psu_membrane(x, 2.0, leak="psu_code"))
    assert not torch.allclose(P.psu_membrane(x, 4.0, leak="exact"), P.psu_membrane(x, 4.0, leak="psu_code"))
    assert P.leak_coefficients(4.0, "exact") == (0.75, 0.25)
    assert P.leak_coefficients(4.0, "psu_code") == (0.25, 0.25)


def test_causal_leak_matrix():
    Pm = P.causal_leak_matrix(5, 0.5, dtype=F64)
    i, j = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij")
    expect = torch.where(j <= i, 0.5 ** (i - j).clamp(min=0).to(F64), torch.zeros((), dtype=F64))
    assert torch.equal(Pm, expect)
    assert torch.equal(P.causal_leak_matrix(3, 0.0, dtype=F64), torch.eye(3, dtype=F64))
    assert P.causal_leak_matrix(1024, 0.9).shape == (1024, 1024)


# --------------------------------------------------------------------------- LIF identity


@pytest.mark.parametrize("leak", ["exact", "psu_code"])
@pytest.mark.parametrize("tau", [2.0, 5.0, 1.0])
@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_identity(leak, tau, backend):
    x = 2.0 * torch.rand(40, 4, 6, dtype=F64)
    assert P.lif_identity_error(x, tau, 0.8, leak=leak, backend=backend) < 1e-12


@pytest.mark.parametrize("leak", ["exact", "psu_code"])
@pytest.mark.parametrize("tau", [2.0, 3.0])
def test_lif_identity_against_spikescan_lif(leak, tau):
    """M1 x + Vth R S equals the pre-reset membrane of spikescan.ops.lif (subtract reset)."""
    lif = pytest.importorskip("spikescan.ops.lif").lif
    decay, scale = P.leak_coefficients(tau, leak)
    x = 2.0 * torch.rand(50, 3, 7, dtype=F64)
    s, u = lif(scale * x, decay, 0.6, reset="subtract", return_membrane=True)
    assert s.sum() > 0
    for backend in BACKENDS:
        v = P.psu_membrane_from_spikes(x, s, tau, 0.6, leak=leak, backend=backend)
        torch.testing.assert_close(v, u, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- backends agree


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("T", [1, 7, 33, 100])
def test_backends_agree_float32(name, T):
    torch.manual_seed(T)
    x0 = torch.randn(T, 4, 8)
    W0, b0 = _params(T)
    grad_out = torch.randn(T, 4, 8)
    results = {}
    for backend in BACKENDS:
        x = x0.clone().requires_grad_(True)
        W, b = W0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        v = _membrane(name, x, W, b, 3.0, 0.5, backend=backend)
        v.backward(grad_out)
        results[backend] = (v.detach(), x.grad, W.grad, b.grad)
    ref = results["sequential"]
    for backend in ("matrix", "chunked"):
        out = results[backend]
        assert _rel(out[0], ref[0]) <= 1e-5, backend
        for got, want in zip(out[1:], ref[1:]):
            if want is not None:
                assert _rel(got, want) <= 1e-4, backend
        if name == "psu":
            assert out[2] is None and out[3] is None


@pytest.mark.parametrize("name", VARIANTS)
def test_backends_agree_on_spike_gradients(name):
    T = 20
    x0 = torch.randn(T, 3, 5, dtype=F64)
    W0, b0 = _params(T, F64)
    grads, spikes = [], []
    for backend in BACKENDS:
        x = x0.clone().requires_grad_(True)
        s = _spikes(name, x, W0, b0, 2.0, 0.3, backend=backend)
        s.sum().backward()
        grads.append(x.grad)
        spikes.append(s.detach())
    for s, gr in zip(spikes[1:], grads[1:]):
        assert torch.equal(s, spikes[0])
        torch.testing.assert_close(gr, grads[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", VARIANTS)
def test_long_sequence_T1024(name):
    T = 1024
    x = torch.randn(T, 2, 3)
    W, b = _params(T)
    v_auto = _membrane(name, x, W, b, 2.0, 0.5, backend="auto")
    v_mat = _membrane(name, x, W, b, 2.0, 0.5, backend="matrix")
    v_chk = _membrane(name, x, W, b, 2.0, 0.5, backend="chunked")
    assert torch.isfinite(v_auto).all()
    assert _rel(v_chk, v_mat) <= 1e-5
    assert _rel(v_auto, v_mat) <= 1e-5


# --------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(name, backend):
    T = 5
    x = torch.randn(T, 2, 2, dtype=F64, requires_grad=True)
    W, b = _params(T, F64, requires_grad=True)
    if name == "psu":
        fn = lambda x: P.psu_membrane(x, 3.0, 0.7, backend=backend)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,))
    else:
        fn = lambda x, W, b: _membrane(name, x, W, b, 3.0, backend=backend)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, W, b))


def test_spike_backward_is_atan_surrogate_of_membrane():
    x = torch.randn(10, 4, dtype=F64, requires_grad=True)
    v = P.psu_membrane(x, 2.0, 0.5)
    gv = ATan(2.0).grad(v.detach() - 0.5)
    (gx_expect,) = torch.autograd.grad(v, x, gv)
    s = P.psu(x, 2.0, 0.5)
    (gx,) = torch.autograd.grad(s.sum(), x)
    torch.testing.assert_close(gx, gx_expect)


def test_atan_heaviside_learnable_alpha():
    u = torch.randn(50, dtype=F64, requires_grad=True)
    alpha = torch.tensor(2.0, dtype=F64, requires_grad=True)
    s = P.atan_heaviside(u, alpha)
    assert torch.equal(s.detach(), (u >= 0).to(F64))
    gout = torch.randn(50, dtype=F64)
    s.backward(gout)
    torch.testing.assert_close(u.grad, gout * ATan(2.0).grad(u.detach()))
    # d/dalpha [atan(pi/2 alpha u)/pi] = u/2 / (1 + (pi/2 alpha u)^2)
    ud = u.detach()
    expect = (gout * (ud / 2) / (1 + (math.pi / 2 * 2.0 * ud) ** 2)).sum()
    torch.testing.assert_close(alpha.grad, expect)


# --------------------------------------------------------------------------- causality


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_causality(name, backend):
    T = 16
    torch.manual_seed(1)
    x = torch.randn(T, 3, 4)
    W, b = _params(T)
    W = W + torch.triu(torch.full((T, T), 100.0), diagonal=1)  # must be ignored entirely
    v0 = _membrane(name, x, W, b, 2.0, 0.3, backend=backend)
    s0 = _spikes(name, x, W, b, 2.0, 0.3, backend=backend)
    for t in (0, 5, T - 1):
        xp = x.clone()
        xp[t] += 3.0 * torch.randn(3, 4)
        v1 = _membrane(name, xp, W, b, 2.0, 0.3, backend=backend)
        s1 = _spikes(name, xp, W, b, 2.0, 0.3, backend=backend)
        assert torch.equal(v1[:t], v0[:t]), f"{name}: output before t={t} changed"
        assert torch.equal(s1[:t], s0[:t])
        assert not torch.equal(v1[t:], v0[t:])


@pytest.mark.parametrize("name", ["ipsu", "rpsu"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_entries_get_zero_gradient(name, backend):
    T = 8
    x = torch.randn(T, 2, 3)
    W, b = _params(T, requires_grad=True)
    _spikes(name, x, W, b, 2.0, 0.1, backend=backend).sum().backward()
    assert torch.count_nonzero(torch.triu(W.grad, diagonal=1)) == 0
    assert torch.count_nonzero(torch.tril(W.grad)) > 0


# --------------------------------------------------------------------------- other inputs


def test_shapes_dtypes_and_tensor_threshold():
    for shape in [(5,), (5, 3), (5, 2, 3, 4)]:
        x = torch.randn(shape)
        W, b = _params(5)
        for name in VARIANTS:
            s = _spikes(name, x, W, b)
            assert s.shape == x.shape and s.dtype == x.dtype
    x = torch.randn(6, 2, 3, dtype=F64)
    thr = torch.tensor([0.2, 0.5, 1.0], dtype=F64)
    s, v = P.psu(x, 2.0, thr, return_membrane=True)
    assert torch.equal(s, (v >= thr).to(F64))
    # float32 parameters with a float64 input are cast to the input's dtype
    W, b = _params(6)
    assert P.ipsu(x, W, b).dtype == F64


def test_bad_inputs():
    x = torch.randn(4, 2)
    W, b = _params(4)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        P.psu([1.0, 2.0])
    with pytest.raises(TypeError, match="floating-point"):
        P.psu(torch.ones(4, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least one time step"):
        P.psu(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="tau must be"):
        P.psu(x, 0.5)
    with pytest.raises(ValueError, match="tau must be"):
        P.psu(x, float("nan"))
    with pytest.raises(ValueError, match="tau must be one number"):
        P.psu(x, torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match="leak must be one of"):
        P.psu(x, leak="lif")
    with pytest.raises(ValueError, match="backend must be one of"):
        P.psu(x, backend="fft")
    with pytest.raises(ValueError, match="threshold must be finite"):
        P.psu(x, 2.0, float("inf"))
    with pytest.raises(ValueError, match=r"weight_i must be the \[T, T\] = \[4, 4\]"):
        P.ipsu(x, torch.zeros(5, 5), b)
    with pytest.raises(ValueError, match=r"bias_r must be a \[T\] = \[4\] vector"):
        P.rpsu(x, W, torch.zeros(5))
    with pytest.raises(TypeError, match="weight_i must be a floating tensor"):
        P.ipsu(x, torch.zeros(4, 4, dtype=torch.int64), b)
    with pytest.raises(TypeError, match="bias_i must be a torch.Tensor"):
        P.ipsu(x, W, [0.0] * 4)
    with pytest.raises(ValueError, match="spikes must have the shape of x"):
        P.psu_membrane_from_spikes(x, torch.zeros(3, 2))
    from spikescan import debug_mode

    with debug_mode(), pytest.raises(ValueError, match="x contains non-finite"):
        P.psu(torch.tensor([[float("nan")]]))


@pytest.mark.parametrize("name", ["ipsu", "rpsu"])
@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_learned_operator_is_rejected(name, which, bad):
    """Before: a NaN time-mixing matrix or bias gave NaN membranes and silently no spikes."""
    x = torch.randn(4, 2, 3)
    params = list(_params(4))
    params[which] = params[which].clone()
    params[which].view(-1)[-1] = bad
    arg = ("weight_" if which == 0 else "bias_") + name[0]
    with pytest.raises(ValueError, match=rf"{arg} must be finite, got"):
        getattr(P, name)(x, *params)


def test_meta_input_is_a_clear_error():
    W, b = _params(4)
    x = torch.randn(4, 2, 3).to("meta")
    for call in (lambda: P.psu(x), lambda: P.ipsu(x, W, b), lambda: P.rpsu(x, W, b)):
        with pytest.raises(ValueError, match=r"x is a meta tensor \(no data\)"):
            call()
    with pytest.raises(ValueError, match=r"weight_i is on meta \(a meta tensor: no data\) but x is on cpu"):
        P.ipsu(torch.randn(4, 2), W.to("meta"), b)


def test_auto_backend_materializes_at_most_one_TxT_at_T1024(monkeypatch):
    """At T = 1024 "auto" builds the Toeplitz P for no variant (IPSU folds it into its one operator)."""
    built = []
    real = P.causal_leak_matrix
    monkeypatch.setattr(P, "causal_leak_matrix", lambda *a, **k: built.append(a[0]) or real(*a, **k))
    T = 1024
    x = torch.randn(T, 2, 2)
    W, b = _params(T)
    P.psu(x)
    P.rpsu(x, W, b)
    assert built == []  # chunked: leak and reset as scans, only tril(A_R) is T×T
    P.ipsu(x, W, b)
    assert built == [T]  # matrix: P folded in place into tril(A_I)
    P.psu(x[:64])
    assert built == [T, 64]  # short sequences use the matmul
