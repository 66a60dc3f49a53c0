"""spikescan.ops.scan: every backend against the sequential reference, outputs and gradients.

The grid compares float32 results of each parallel backend with the float64 sequential
reference (autograd through the Python loop), computed once per case and cached.  Errors are
measured relative to the largest magnitude of the reference tensor:
forward <= 1e-5, gradients (x, decay, scale, v0) <= 1e-4.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikescan import debug_mode
from spikescan.ops import _backend
from spikescan.ops import leaky as L
from spikescan.ops.leaky import parallel as S
from spikescan.ops import leaky_integrate

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run this file single-threaded: its tensors are tiny, and on a busy 2-core machine torch's
    (MKL/OpenMP) worker threads spinning against other processes made small FFTs ~50x slower
    (0.8 s instead of 9 ms at T = 10000), which is what dominated the file's run time."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# "chunked-matmul" is the chunked backend with its C x C matrix-product inner scan, which is
# the default on CUDA only; forcing it on CPU keeps it tested without a GPU.  "fused" is the
# time-fused kernel with its own backward (numba here).
BACKENDS = ["fft", "chunked", "chunked-matmul", "fused"]
# Backends whose backward is itself differentiable (the fused kernel's is once_differentiable).
DOUBLE_BACKWARD = [b for b in BACKENDS if b != "fused"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    return _select(request.param, monkeypatch)


def _select(name: str, monkeypatch) -> str:
    if name == "chunked-matmul":
        monkeypatch.setitem(S._CHUNKED_INTRA, "cpu", "matmul")
        return "chunked"
    return name


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref| (absolute error where the reference is all zeros)."""
    err = (a.double() - ref.double()).abs().max().item()
    scale = ref.double().abs().max().item()
    return err / scale if scale > 0 else err


def _run(backend, x, decay, scale, v0, grad_out, **kw):
    """Output and gradients wrt (x, decay, scale, v0), for leaf copies of the inputs."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, decay, scale, v0)]
    u = leaky_integrate(leaves[0], leaves[1], scale=leaves[2], v0=leaves[3], backend=backend, **kw)
    grads = torch.autograd.grad(u, leaves, grad_out.to(u.dtype))
    return u.detach(), grads


# ---- the grid: T x decay x (scalar | per-neuron) --------------------------------------------

GRID_T = [1, 7, 100, 1000, 10000]
GRID_DECAY = [0.0, 0.5, 0.95, 0.999, 1.0]


def _params(d: float, per_neuron: bool):
    decay = torch.tensor([d, 0.9, 0.3]) if per_neuron else torch.tensor(d)
    scale = torch.tensor([1.0, 0.5, -2.0]) if per_neuron else torch.tensor(0.7)
    return decay, scale


@functools.lru_cache(maxsize=None)
def _grid_reference(T: int):
    """float32 inputs at this T, and the float64 sequential reference for every grid case.

    The reference uses the float32 values upcast (so 0.999 means float32(0.999) in both).  All
    (decay, per_neuron) cases are stacked along one extra batch dim and run through the Python
    loop once -- the cases don't interact, and one loop of T steps costs ~1 s at T = 10000.
    """
    g = torch.Generator().manual_seed(T)
    x = torch.randn(T, 2, 3, generator=g)
    v0 = torch.randn(2, 3, generator=g)
    grad_out = torch.randn(T, 2, 3, generator=g)
    cases = [(d, per) for d in GRID_DECAY for per in (False, True)]
    K = len(cases)
    decay = torch.stack([_params(d, per)[0].double().expand(3) for d, per in cases]).reshape(K, 1, 3)
    scale = torch.stack([_params(d, per)[1].double().expand(3) for d, per in cases]).reshape(K, 1, 3)
    leaves = [x.double().unsqueeze(1).repeat(1, K, 1, 1), decay, scale, v0.double().repeat(K, 1, 1)]
    leaves = [t.requires_grad_() for t in leaves]
    u = leaky_integrate(leaves[0], leaves[1], scale=leaves[2], v0=leaves[3], backend="sequential")
    gx, gd, gs, gv = torch.autograd.grad(u, leaves, grad_out.double().unsqueeze(1).expand_as(u))
    refs = {}
    for k, (d, per) in enumerate(cases):
        param_grad = (lambda t: t[k, 0]) if per else (lambda t: t[k].sum())
        refs[d, per] = (u[:, k].detach(), (gx[:, k], param_grad(gd), param_grad(gs), gv[k]))
    return (x, v0, grad_out), refs


def _case(T: int, d: float, per_neuron: bool):
    """((x, decay, scale, v0, grad_out) in float32, (u_ref, grads_ref) in float64)."""
    (x, v0, grad_out), refs = _grid_reference(T)
    decay, scale = _params(d, per_neuron)
    return (x, decay, scale, v0, grad_out), refs[d, per_neuron]


@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
@pytest.mark.parametrize("d", GRID_DECAY)
@pytest.mark.parametrize("T", GRID_T)
def test_grid_matches_reference(backend, T, d, per_neuron):
    inputs, (u_ref, grads_ref) = _case(T, d, per_neuron)
    u, grads = _run(backend, *inputs)
    assert u.dtype == torch.float32 and u.shape == (T, 2, 3)
    assert _rel(u, u_ref) <= 1e-5
    for name, gr, gr_ref in zip(("x", "decay", "scale", "v0"), grads, grads_ref):
        assert gr.shape == gr_ref.shape, name
        assert _rel(gr, gr_ref) <= 1e-4, name


def test_sequential_float32_matches_float64():
    inputs, (u_ref, grads_ref) = _case(1000, 0.95, True)
    u, grads = _run("sequential", *inputs)
    assert _rel(u, u_ref) <= 1e-5
    for gr, gr_ref in zip(grads, grads_ref):
        assert _rel(gr, gr_ref) <= 1e-4


@pytest.mark.parametrize("T", [1, 2, 5, 31, 32, 33, 97])
@pytest.mark.parametrize("chunk_size", [None, 2, 3, 8])
def test_chunk_boundaries(monkeypatch, T, chunk_size):
    """Exact (float64) for every chunk size, with and without a partial last chunk."""
    for intra in ("loop", "matmul"):
        monkeypatch.setitem(S._CHUNKED_INTRA, "cpu", intra)
        g = torch.Generator().manual_seed(T)
        x = torch.randn(T, 2, 3, generator=g, dtype=torch.float64)
        decay = torch.rand(2, 1, generator=g, dtype=torch.float64)
        v0 = torch.randn(3, generator=g, dtype=torch.float64)
        ref = leaky_integrate(x, decay, v0=v0, backend="sequential")
        u = leaky_integrate(x, decay, v0=v0, backend="chunked", chunk_size=chunk_size)
        assert _rel(u, ref) <= 1e-12


# ---- autograd ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sequential"] + BACKENDS)
@pytest.mark.parametrize("decay_shape", [(), (3,)], ids=["scalar", "per_neuron"])
def test_gradcheck(monkeypatch, name, decay_shape):
    b = _select(name, monkeypatch)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 1, 3, generator=g, dtype=torch.float64, requires_grad=True)
    decay = (0.2 + 0.6 * torch.rand(decay_shape, generator=g, dtype=torch.float64)).requires_grad_()
    scale = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    v0 = torch.randn(1, 3, generator=g, dtype=torch.float64, requires_grad=True)

    def f(x, decay, scale, v0):
        return leaky_integrate(x, decay, scale=scale, v0=v0, backend=b, chunk_size=3)

    assert torch.autograd.gradcheck(f, (x, decay, scale, v0))


@pytest.mark.parametrize("backend_name", DOUBLE_BACKWARD)
def test_gradgradcheck(monkeypatch, backend_name):
    """The shared backward runs the scan through autograd again, so double backward works."""
    b = _select(backend_name, monkeypatch)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    decay = (0.2 + 0.6 * torch.rand(2, generator=g, dtype=torch.float64)).requires_grad_()
    v0 = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)

    def f(x, decay, v0):
        return leaky_integrate(x, decay, v0=v0, backend=b, chunk_size=2)

    assert torch.autograd.gradgradcheck(f, (x, decay, v0), fast_mode=True)


@pytest.mark.parametrize("which", ["x", "decay", "scale", "v0"])
def test_grad_to_one_input_only(backend, which):
    """Only one input requires grad: the others' gradient branches are skipped, result unchanged."""
    inputs, (_, grads_ref) = _case(100, 0.95, True)
    x, decay, scale, v0, grad_out = (t.double() for t in inputs)
    args = {"x": x, "decay": decay, "scale": scale, "v0": v0}
    leaf = args[which].clone().requires_grad_()
    args[which] = leaf
    u = leaky_integrate(args["x"], args["decay"], scale=args["scale"], v0=args["v0"], backend=backend)
    (grad,) = torch.autograd.grad(u, leaf, grad_out)
    assert _rel(grad, grads_ref[["x", "decay", "scale", "v0"].index(which)]) <= 1e-10


# ---- property tests ------------------------------------------------------------------------

_REST_SHAPES = [(), (3,), (2, 3), (2, 1, 4)]


@st.composite
def _problems(draw):
    T = draw(st.integers(1, 60))
    rest = draw(st.sampled_from(_REST_SHAPES))

    def param_shape():  # drop some leading dims, then each remaining dim is 1 or full
        k = draw(st.integers(0, len(rest)))
        return tuple(draw(st.sampled_from([1, n])) for n in rest[len(rest) - k:])

    decay_shape = param_shape()
    values = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))
    n_decay = 1
    for n in decay_shape:
        n_decay *= n
    decay = torch.tensor(draw(st.lists(values, min_size=n_decay, max_size=n_decay)),
                         dtype=torch.float64).reshape(decay_shape)
    scale_shape = param_shape()
    v0_shape = draw(st.one_of(st.none(), st.just(param_shape())))
    chunk = draw(st.one_of(st.none(), st.integers(2, 9)))
    seed = draw(st.integers(0, 2**31 - 1))
    return T, rest, decay, scale_shape, v0_shape, chunk, seed


@settings(max_examples=25, deadline=None)
@given(_problems())
def test_property_backends_agree(problem):
    T, rest, decay, scale_shape, v0_shape, chunk, seed = problem
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((T,) + rest, generator=g, dtype=torch.float64)
    scale = torch.randn(scale_shape, generator=g, dtype=torch.float64)
    v0 = None if v0_shape is None else torch.randn(v0_shape, generator=g, dtype=torch.float64)
    grad_out = torch.randn((T,) + rest, generator=g, dtype=torch.float64)

    def run(b):
        leaves = [t.clone().requires_grad_() for t in (x, decay, scale) + ((v0,) if v0 is not None else ())]
        u = leaky_integrate(leaves[0], leaves[1], scale=leaves[2], v0=leaves[3] if v0 is not None else None,
                            backend=b, chunk_size=chunk)
        return u, torch.autograd.grad(u, leaves, grad_out)

    u_ref, grads_ref = run("sequential")
    default_intra = S._CHUNKED_INTRA["cpu"]
    for intra in ("loop", "matmul"):
        S._CHUNKED_INTRA["cpu"] = intra
        try:
            for b in ("fft", "chunked", "fused"):
                u, grads = run(b)
                assert u.shape == x.shape
                assert _rel(u, u_ref) <= 1e-9, b
                for gr, gr_ref in zip(grads, grads_ref):
                    assert gr.shape == gr_ref.shape
                    assert _rel(gr, gr_ref) <= 1e-9, b
        finally:
            S._CHUNKED_INTRA["cpu"] = default_intra


# ---- dtypes, shapes, special cases ---------------------------------------------------------


@pytest.mark.parametrize("name", ["sequential"] + BACKENDS + ["auto"])
def test_float64_exact(monkeypatch, name):
    b = _select(name, monkeypatch)
    inputs, (u_ref, _) = _case(1000, 0.999, True)
    x, decay, scale, v0, _ = (t.double() for t in inputs)
    u = leaky_integrate(x, decay, scale=scale, v0=v0, backend=b)
    assert u.dtype == torch.float64
    assert _rel(u, u_ref) <= 1e-11


@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("name", ["sequential"] + BACKENDS + ["auto"])
def test_half_dtypes(monkeypatch, name, dtype, tol):
    """Half inputs are computed in float32 and returned in their own dtype.

    With x = 1 the state climbs to ~(1 - 0.999**t) / 0.001: a decay of 0.999 rounded to the half
    type (0.99902 in float16, 0.99609 in bfloat16) would be off by >= 1 %, so this also checks
    that a Python float decay is not rounded to the input's dtype.
    """
    b = _select(name, monkeypatch)
    T = 1000
    x = torch.ones(T, 2, dtype=dtype, requires_grad=True)
    u = leaky_integrate(x, 0.999, backend=b)
    assert u.dtype == dtype and u.shape == x.shape
    ref = leaky_integrate(torch.ones(T, 2, dtype=torch.float64), 0.999, backend="sequential")
    assert _rel(u, ref) <= tol
    u.float().sum().backward()
    assert x.grad.dtype == dtype
    # d u[t] / d x[k] = 0.999**(t-k): grad x[k] = sum_{m=0}^{T-1-k} 0.999**m
    grad_ref = torch.flip(torch.cumsum(0.999 ** torch.arange(T, dtype=torch.float64), 0), [0])
    assert _rel(x.grad[:, 0], grad_ref) <= tol


def test_half_random_matches_float32(backend):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 4, 5, generator=g).to(torch.bfloat16)
    decay = torch.rand(5, generator=g)
    ref = leaky_integrate(x.double(), decay.double(), backend="sequential")
    u = leaky_integrate(x, decay, backend=backend)
    assert u.dtype == torch.bfloat16
    assert _rel(u, ref) <= 1e-2


@pytest.mark.parametrize("name", ["sequential"] + BACKENDS)
def test_single_step(monkeypatch, name):
    b = _select(name, monkeypatch)
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    decay = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    v0 = torch.randn(4, 3, dtype=torch.float64)
    u = leaky_integrate(x, decay, scale=2.0, v0=v0, backend=b)
    torch.testing.assert_close(u, (2.0 * x[0] + decay * v0).unsqueeze(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["sequential"] + BACKENDS)
def test_boundary_decays_closed_form(monkeypatch, name):
    """decay 0 passes the input through, decay 1 is a running sum (0**0 == 1, no overflow)."""
    b = _select(name, monkeypatch)
    x = torch.randn(500, 3, dtype=torch.float64)
    torch.testing.assert_close(leaky_integrate(x, 0.0, backend=b), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(leaky_integrate(x, 1.0, backend=b), x.cumsum(0), rtol=1e-9, atol=1e-9)


def test_float_and_tensor_params_agree(backend):
    x = torch.randn(50, 2, 3, dtype=torch.float64)
    a = leaky_integrate(x, 0.8, scale=0.5, v0=1.5, backend=backend)
    f64 = torch.float64
    b = leaky_integrate(x, torch.tensor(0.8, dtype=f64), scale=torch.full((3,), 0.5, dtype=f64),
                        v0=torch.full((2, 3), 1.5, dtype=f64), backend=backend)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_one_dim_and_noncontiguous_inputs(backend):
    x = torch.randn(3, 40, 5, dtype=torch.float64).transpose(0, 1)  # [40, 3, 5], not contiguous
    decay = torch.rand(5, dtype=torch.float64)
    ref = leaky_integrate(x.contiguous(), decay, backend="sequential")
    torch.testing.assert_close(leaky_integrate(x, decay, backend=backend), ref, rtol=1e-10, atol=1e-10)
    x1 = torch.randn(40, dtype=torch.float64)
    ref1 = leaky_integrate(x1, 0.9, backend="sequential")
    torch.testing.assert_close(leaky_integrate(x1, 0.9, backend=backend), ref1, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(5, 0, 3), (1, 0), (3, 2, 0)])
def test_empty_per_step_shape(backend, shape):
    """An empty batch: empty output and grad_x; the parameters' gradients are sums over nothing."""
    x = torch.randn(shape, requires_grad=True)
    decay, scale = torch.full(shape[2:], 0.5, requires_grad=True), torch.full(shape[2:], 2.0, requires_grad=True)
    u = leaky_integrate(x, decay, scale=scale, v0=torch.zeros(shape[1:]), backend=backend)
    assert u.shape == x.shape
    gx, gd, gs = torch.autograd.grad(u.sum(), [x, decay, scale])
    assert gx.shape == x.shape and torch.equal(gd, torch.zeros_like(decay)) and torch.equal(gs, torch.zeros_like(scale))


def _auto_backend(x):
    return _backend.resolve("leaky_integrate", "auto", x).name


def _fused_runs(monkeypatch, runs: bool):
    """Pretend the fused kernel can (or cannot) run every input."""
    table = _backend._REGISTRY["leaky_integrate"]
    monkeypatch.setitem(table, "fused", table["fused"]._replace(
        unsupported=(lambda x, **k: None) if runs else (lambda x, **k: "switched off by the test")))


def test_auto_uses_a_registered_backend():
    assert all(row.backend in _backend.backends("leaky_integrate") for row in L.AUTO_TABLE)
    for T in (1, 2, 100, 10**6):
        assert _auto_backend(torch.empty(1, 1).expand(T, 1)) in _backend.backends("leaky_integrate")
    x = torch.randn(20, 3)
    torch.testing.assert_close(leaky_integrate(x, 0.9), leaky_integrate(x, 0.9, backend="sequential"))


def _shape(T, n, device="cpu"):
    return torch.empty(1, 1, device=device).expand(T, n)


def test_auto_table_cpu_choices():
    """The measured CPU rows: the loop for T <= 4, the fused kernel from there at every B*N."""
    for n in (1, 128, 32768):
        assert _auto_backend(_shape(1, n)) == "sequential"
        assert _auto_backend(_shape(4, n)) == "sequential"
        assert _auto_backend(_shape(5, n)) == "fused"
        assert _auto_backend(_shape(10000, n)) == "fused"


def test_auto_table_without_fused_kernel(monkeypatch):
    """Rows naming "fused" are skipped where the kernel cannot run: the older CPU rows apply."""
    _fused_runs(monkeypatch, False)
    assert _auto_backend(_shape(20, 8)) == "sequential"
    assert _auto_backend(_shape(33, 8)) == "chunked"
    x = torch.randn(100, 2, 3)
    torch.testing.assert_close(leaky_integrate(x, 0.9), leaky_integrate(x, 0.9, backend="sequential"))


def test_auto_table_cuda_rule(monkeypatch):
    """The CUDA rule (an estimate): fused for short T or B*N >= 2**16, else chunked (meta
    tensors stand in for CUDA ones; only the device type and shape are read)."""
    _fused_runs(monkeypatch, True)
    cuda_row = [row._replace(device="meta") for row in L.AUTO_TABLE if row.device == "cuda"]
    monkeypatch.setattr(L, "AUTO_TABLE", tuple(cuda_row))
    assert _auto_backend(_shape(64, 128, "meta")) == "fused"
    assert _auto_backend(_shape(1000, 128, "meta")) == "chunked"
    assert _auto_backend(_shape(1000, 1 << 16, "meta")) == "fused"
    _fused_runs(monkeypatch, False)
    assert _auto_backend(_shape(10, 1 << 20, "meta")) == "chunked"


def test_fused_has_its_own_backward():
    """backend="fused" goes through the kernel's autograd function (one reverse pass), not the
    shared LinearScan backward; its SCAN_KERNELS entry is still a valid forward kernel."""
    x = torch.randn(30, 2, 3, requires_grad=True)
    u = leaky_integrate(x, 0.8, scale=0.5, backend="fused")
    assert "leaky_fused_forward" in type(u.grad_fn.next_functions[0][0]).__name__
    y = torch.randn(30, 2, 3)
    d = torch.full((1, 1), 0.8)
    assert torch.equal(S.SCAN_KERNELS["fused"](y, d, None, None), S.leaky_reference(y, d, None))
    (g,) = torch.autograd.grad(u.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice|no autograd formula"):
        g.sum().backward()


def test_fused_long_sequence_decays_near_0_and_1():
    """float32, T = 20000: the fused kernel against the float64 loop at decays 1e-3 and 1 - 1e-5."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(20000, 2, generator=g, requires_grad=True)
    decay = torch.tensor([1e-3, 1 - 1e-5], requires_grad=True)
    v0 = torch.tensor([0.5, -2.0], requires_grad=True)
    grad_out = torch.randn(20000, 2, generator=g)
    leaves64 = [t.detach().double().requires_grad_() for t in (x, decay, v0)]
    u_ref = leaky_integrate(leaves64[0], leaves64[1], scale=0.7, v0=leaves64[2], backend="sequential")
    ref_grads = torch.autograd.grad(u_ref, leaves64, grad_out.double())
    u = leaky_integrate(x, decay, scale=0.7, v0=v0, backend="fused")
    grads = torch.autograd.grad(u, (x, decay, v0), grad_out)
    for k in range(2):  # per neuron: their magnitudes differ by orders
        assert _rel(u[:, k], u_ref[:, k]) <= 1e-5
        assert _rel(grads[0][:, k], ref_grads[0][:, k]) <= 1e-4
        assert _rel(grads[1][k], ref_grads[1][k]) <= 1e-4
        assert _rel(grads[2][k], ref_grads[2][k]) <= 1e-4


def test_registered_backend_gets_shared_backward(monkeypatch):
    """Extension point: a forward-only kernel registered through linear_scan becomes a valid,
    differentiable backend with the shared backward."""
    calls = []

    def kernel(y, decay, v0, chunk_size):
        calls.append(y.shape)
        with torch.no_grad():
            return S.leaky_reference(y, decay, v0)

    monkeypatch.setitem(_backend._REGISTRY, "leaky_integrate", dict(_backend._REGISTRY["leaky_integrate"]))
    _backend.register("leaky_integrate", "custom")(
        lambda x, decay, scale, v0, chunk_size=None: S.linear_scan(kernel, x, decay, scale, v0, chunk_size))
    inputs, (u_ref, grads_ref) = _case(100, 0.95, True)
    u, grads = _run("custom", *(t.double() for t in inputs))
    assert len(calls) == 2  # forward, and the reverse-time scan of the backward
    assert _rel(u, u_ref) <= 1e-12
    for gr, gr_ref in zip(grads, grads_ref):
        assert _rel(gr, gr_ref) <= 1e-10


def test_fft_len():
    for n in list(range(1, 200)) + [2000, 20000, 20001, 65537]:
        m = S._fft_len(n)
        assert n <= m < 2 * n or m == 1
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        assert k == 1


# ---- bad input -----------------------------------------------------------------------------


def _raises(exc, match, *args, **kw):
    with pytest.raises(exc, match=match):
        leaky_integrate(*args, **kw)


def test_bad_x():
    _raises(TypeError, "x", [1.0, 2.0], 0.5)
    _raises(TypeError, "x", torch.ones(4, 3, dtype=torch.int64), 0.5)
    _raises(ValueError, "x", torch.tensor(1.0), 0.5)
    _raises(ValueError, "x", torch.ones(0, 3), 0.5)


@pytest.mark.parametrize("bad", [-0.1, 1.0001, float("nan"), float("inf"),
                                 torch.tensor([0.5, 1.5, 0.2]), torch.tensor([0.5, float("nan"), 0.2])])
def test_bad_decay_value(bad):
    _raises(ValueError, "decay", torch.ones(4, 3), bad)


def test_bad_param_types_and_shapes():
    x = torch.ones(4, 2, 3)
    _raises(TypeError, "decay", x, True)
    _raises(TypeError, "decay", x, "0.5")
    _raises(TypeError, "decay", x, torch.tensor([0, 1, 0]))
    _raises(ValueError, "decay", x, torch.full((4,), 0.5))
    _raises(ValueError, "decay", torch.ones(4, 1, 3), torch.full((2, 3), 0.5))  # would grow x
    _raises(ValueError, "decay", x, torch.full((1, 2, 3), 0.5))  # more dims than x.shape[1:]
    _raises(ValueError, "scale", x, 0.5, scale=float("nan"))
    _raises(ValueError, "scale", x, 0.5, scale=torch.ones(5))
    _raises(ValueError, "v0", x, 0.5, v0=torch.ones(5))
    _raises(ValueError, "v0", x, 0.5, v0=torch.tensor([float("inf"), 0.0, 0.0]))


def test_wrong_device():
    x = torch.ones(4, 3)
    _raises(ValueError, "decay", x, torch.full((3,), 0.5, device="meta"))
    _raises(ValueError, "v0", x, 0.5, v0=torch.zeros(3, device="meta"))
    _raises(ValueError, r"x is a meta tensor \(no data\)", x.to("meta"), 0.5)  # was Tensor.item() on meta
    _raises(ValueError, r"decay is on meta \(a meta tensor: no data\)", x, torch.tensor(0.5, device="meta"))


def test_range_error_shows_the_offending_value():
    """Before: "got values in [1, 1]"; now every digit (the number as given, not rounded to float16)."""
    _raises(ValueError, r"decay must lie in \[0\.0, 1\.0\], got max 1\.0000001$", torch.ones(4, 3).half(), 1.0000001)
    _raises(ValueError, r"got min -1e-09 \(1 of 3 values outside\)$", torch.ones(4, 3, dtype=torch.float64),
            torch.tensor([0.5, -1e-9, 0.2], dtype=torch.float64))


def test_bad_backend_and_chunk_size():
    x = torch.ones(4, 3)
    _raises(ValueError, "backend", x, 0.5, backend="cuda")
    _raises(ValueError, "backend='fused' of leaky_integrate cannot run this input: .*not on meta", x.to("meta"), 0.5, backend="fused")
    for bad in (0, 1, -3, 2.5, True):
        _raises(ValueError, "chunk_size", x, 0.5, backend="chunked", chunk_size=bad)


def test_nan_check():
    x = torch.ones(4, 3)
    x[2, 1] = float("nan")
    _raises(ValueError, "x", x, 0.5, check=True)
    with debug_mode():
        _raises(ValueError, "x", x, 0.5)
    with debug_mode():
        assert torch.isnan(leaky_integrate(x, 0.5, check=False)).any()  # explicit False wins
    assert torch.isnan(leaky_integrate(x, 0.5)).any()  # unchecked by default: NaN propagates
