"""``spikescan.ops.spsn``: every backend against the reference, the custom ops, torch.compile, autocast.

Tolerances.  The integrations of the fused kernel are bit-identical to the sequential scans of
the reference, so the spikes agree exactly except for a draw within rounding of the firing
boundary (the kernel's ``exp``/``log`` against torch's: a few ulp of ``p``).  The gradients come
from reverse-time recurrences and per-neuron sums of up to ``T`` terms whose every operation
rounds at ``eps`` (``2**-24`` in float32, ``2**-53`` in float64), accumulated in a different order
than autograd's; we bound their error relative to the gradient's largest entry by
``4 * T * eps`` (four rounded operations per step: the surrogate, a multiply-add per recurrence)
plus a floor for ``T = 1``.  Measured: at most 7e-6 in float32 and 5e-15 in float64 at T <= 200.
float32 gradients are compared with the float64 reference on the same (float32) values.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from spikescan.nn import SPSN
from spikescan.ops._backend import backends, describe, resolve
from spikescan.ops.leaky import leaky_integrate
from spikescan.ops.spsn import fused_spsn, spsn_step, spsn_uniforms
from spikescan.ops.spsn.fused import seed_tensor

F32, F64 = torch.float32, torch.float64
EPS = {F32: 2.0**-24, F64: 2.0**-53}
# a draw this close to the boundary may be decided differently by the kernel's exp and torch's
MARGIN = {F32: 1e-5, F64: 1e-12}

FIRINGS = [("sb", 1.0, 1.0), ("gs", 1.0, 1.0), ("gs", 0.5, 2.0)]
# T = 1; within one 4-step sweep; one segment (odd, exact); a segment plus 1; two plus 1; four
# segments whose last has 4 steps
STEPS = [1, 5, 31, 32, 33, 65, 100]


def rel_err(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def grad_tol(T: int, dtype) -> float:
    return 4 * T * EPS[dtype] + 64 * EPS[dtype]


def decays(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    if kind == "mid":
        return 0.5 + 0.49 * torch.rand(n, generator=g, dtype=F64)
    if kind == "near0":
        return 0.01 * torch.rand(n, generator=g, dtype=F64)
    if kind == "near1":
        return 1.0 - 0.01 * torch.rand(n, generator=g, dtype=F64)
    return torch.tensor([0.0, 1.0, 1e-7, 1.0 - 1e-7] * (n // 4), dtype=F64)  # "edges", exact 0 and 1


def case(T: int, kind: str, dtype, seed: int):
    """``x [T, 2, 8]``, per-neuron ``alpha``, ``beta`` of ``dtype`` and a loss weight ``w``."""
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(T, 2, 8, generator=g, dtype=F64)
    alpha, beta = decays(kind, 8, g), decays(kind, 8, g)
    w = torch.randn(T, 2, 8, generator=g, dtype=F64)
    return [t.to(dtype) for t in (x, alpha, beta, w)]


def margin(x, alpha, beta, U, firing, logit_scale):
    """Distance of each draw from its firing boundary, from the reference's own membrane."""
    u = leaky_integrate(leaky_integrate(x, alpha, backend="sequential"), beta, scale=1 - beta, backend="sequential")
    if firing == "sb":
        return (U - torch.sigmoid(u)).abs()
    return (logit_scale * u + torch.logit(U)).abs()


def run(backend, leaves, w, **kw):
    s = spsn_step(*leaves, backend=backend, **kw)
    return s, torch.autograd.grad((s * w).sum(), leaves)


@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("kind", ["mid", "near0", "near1", "edges"])
@pytest.mark.parametrize("firing, tau, logit_scale", FIRINGS)
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_fused_equals_reference(T, kind, firing, tau, logit_scale, dtype):
    x, alpha, beta, w = case(T, kind, dtype, seed=T)
    kw = dict(seed=1000 + T, firing=firing, tau=tau, logit_scale=logit_scale)
    leaves = [t.clone().requires_grad_() for t in (x, alpha, beta)]
    s, g = run("fused", leaves, w, **kw)
    s_ref, _ = run("reference", [t.clone().requires_grad_() for t in (x, alpha, beta)], w, **kw)
    assert s.dtype == dtype and s.shape == x.shape
    U = spsn_uniforms(kw["seed"], x.shape, dtype=dtype)
    differ = s != s_ref
    assert not bool((differ & (margin(x, alpha, beta, U, firing, logit_scale) > MARGIN[dtype])).any())
    assert int(differ.sum()) <= 2
    # gradients against the float64 reference on the same values
    _, g64 = run("reference", [t.double().requires_grad_() for t in (x, alpha, beta)], w.double(), **kw)
    for name, a, b in zip(("x", "alpha", "beta"), g, g64):
        assert a.dtype == dtype and a.shape == b.shape
        assert rel_err(a, b) <= grad_tol(T, dtype), (name, rel_err(a, b))


@pytest.mark.parametrize("firing", ["sb", "gs"])
def test_parameter_shapes_and_layouts(firing):
    """Decays broadcast from () and [B, 1, F], a non-contiguous x: gradients summed back to each
    parameter's own shape, as the reference's autograd does."""
    g = torch.Generator().manual_seed(4)
    x = (2.0 * torch.randn(3, 40, 2, 5, generator=g, dtype=F64)).transpose(0, 1)  # [T, B, 2, F], strided
    alpha = torch.tensor(0.9, dtype=F64)
    beta = 0.6 + 0.3 * torch.rand(3, 1, 5, generator=g, dtype=F64)
    w = torch.randn(x.shape, generator=g, dtype=F64)
    outs = [run(b, [t.clone().requires_grad_() for t in (x, alpha, beta)], w, seed=8, firing=firing)
            for b in ("fused", "reference")]
    (s, g_f), (s_ref, g_r) = outs
    assert torch.equal(s, s_ref)
    for a, b in zip(g_f, g_r):
        assert a.shape == b.shape and rel_err(a, b) <= grad_tol(40, F64)
    s_num = fused_spsn(x, 0.9, 0.75, seed=8, firing=firing)  # Python numbers
    assert torch.equal(s_num, fused_spsn(x, torch.tensor(0.9), torch.tensor(0.75), seed=8, firing=firing))


def test_registry():
    x = torch.randn(4, 2)
    assert set(backends("spsn")) == {"reference", "fused"} and set(describe("spsn")) == {"reference", "fused"}
    assert resolve("spsn", "auto", x).name == "fused"
    assert set(backends("spsn", x)) == {"reference", "fused"}
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'reference', 'fused'"):
        spsn_step(x, 0.9, 0.9, seed=0, backend="numba")
    with pytest.raises(ValueError, match="backend='reference' of spsn cannot run this input.*not on meta"):
        spsn_step(torch.ones(4, 2, device="meta"), 0.9, 0.9, seed=0, backend="reference")


def test_seed_forms():
    """An int, its 0-dim tensor and the 64-bit range: the same draws on both backends."""
    x = torch.randn(20, 3, 7, dtype=F64)
    a = fused_spsn(x, 0.9, 0.8, seed=12345)
    assert torch.equal(a, fused_spsn(x, 0.9, 0.8, seed=torch.tensor(12345)))
    assert torch.equal(a, fused_spsn(x, 0.9, 0.8, seed=torch.tensor(12345, dtype=torch.int32)))
    big = 2**64 - 3
    assert int(seed_tensor(big)) == big - 2**64
    s = fused_spsn(x, 0.9, 0.8, seed=big)
    assert torch.equal(s, spsn_step(x, 0.9, 0.8, seed=big, backend="reference"))
    assert not torch.equal(s, a)
    with pytest.raises(TypeError, match="0-dim integer tensor"):
        fused_spsn(x, 0.9, 0.8, seed=torch.tensor(1.0))
    with pytest.raises(TypeError, match="0-dim integer tensor"):
        fused_spsn(x, 0.9, 0.8, seed=torch.tensor([1, 2]))


# ---- the custom ops -----------------------------------------------------------------------


@pytest.mark.parametrize("gumbel", [False, True])
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_opcheck(gumbel, dtype):
    T, N = 37, 10  # crosses a 32-step segment
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, N, generator=g, dtype=dtype, requires_grad=True)
    a = (0.5 + 0.5 * torch.rand(N, generator=g, dtype=dtype)).requires_grad_()
    b = (0.5 + 0.5 * torch.rand(N, generator=g, dtype=dtype)).requires_grad_()
    seed = seed_tensor(3)
    fwd = torch.ops.spikescan.spsn_fused_forward.default
    torch.library.opcheck(fwd, (x, a, b, seed, gumbel, 0.5, 2.0))
    _, st_i, st_u = fwd(x.detach(), a.detach(), b.detach(), seed, gumbel, 0.5, 2.0)
    bwd = torch.ops.spikescan.spsn_fused_backward.default
    for param_grads in (True, False):
        grad_s = torch.randn(T, N, generator=g, dtype=dtype)
        torch.library.opcheck(bwd, (x.detach(), grad_s, a.detach(), b.detach(), seed, st_i, st_u, gumbel, 0.5, 2.0,
                                    param_grads))


# The Triton kernels in Triton's interpreter (TRITON_INTERPRET=1 must be set before triton is
# imported, hence a new process) against the float64 reference, and opcheck with them.
_TRITON_PROBE = textwrap.dedent("""
    import json, torch
    from spikescan.ops._backend import force_kernels
    from spikescan.ops.spsn import spsn_step
    from spikescan.ops.spsn.fused import seed_tensor
    F64 = torch.float64
    out = {}
    for dtype in (torch.float32, F64):
        for firing in ("sb", "gs"):
            for T in (1, 37):
                g = torch.Generator().manual_seed(T)
                x = 2.0 * torch.randn(T, 2, 9, generator=g, dtype=F64)
                w = torch.randn(T, 2, 9, generator=g, dtype=F64)
                a, b = (0.5 + 0.49 * torch.rand(9, generator=g, dtype=F64) for _ in range(2))
                res = []
                for backend, dt in (("fused", dtype), ("reference", F64)):
                    leaves = [t.to(dtype).to(dt).requires_grad_() for t in (x, a, b)]
                    with force_kernels("triton" if backend == "fused" else None):
                        s = spsn_step(*leaves, seed=5, firing=firing, tau=0.5, logit_scale=2.0, backend=backend)
                        res.append((s, torch.autograd.grad((s * w.to(dt)).sum(), leaves)))
                (s, gf), (sr, gr) = res
                errs = [float((p.double() - q).abs().max() / q.abs().max().clamp_min(1e-300)) for p, q in zip(gf, gr)]
                out[f"{dtype}-{firing}-{T}"] = [int((s.double() != sr).sum()), max(errs)]
    with force_kernels("triton"):
        x = torch.randn(37, 10, requires_grad=True)
        a, b = torch.rand(10).requires_grad_(), torch.rand(10).requires_grad_()
        out["opcheck"] = torch.library.opcheck(torch.ops.spikescan.spsn_fused_forward.default,
                                               (x, a, b, seed_tensor(3), True, 0.5, 2.0))
    print(json.dumps(out))
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (its interpreter)")
def test_triton_kernels_in_the_interpreter_equal_reference():
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", _TRITON_PROBE], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(out.pop("opcheck").values()) == {"SUCCESS"}
    for key, (n_differ, err) in out.items():
        dtype = F32 if key.startswith("torch.float32") else F64
        assert n_differ <= 1 and err <= grad_tol(37, dtype), (key, n_differ, err)  # a draw within rounding may flip


# ---- torch.compile and autocast -----------------------------------------------------------


class LinearSPSN(nn.Module):
    def __init__(self, firing: str):
        super().__init__()
        self.fc = nn.Linear(8, 6)
        self.alpha = nn.Parameter(torch.linspace(0.5, 0.95, 6))
        self.beta = nn.Parameter(torch.linspace(0.9, 0.6, 6))
        self.firing = firing

    def forward(self, x, seed=7):
        return fused_spsn(self.fc(x), self.alpha, self.beta, seed=seed, firing=self.firing, tau=0.5, logit_scale=2.0)


@pytest.mark.parametrize("firing", ["sb", "gs"])
def test_compile_fullgraph_equals_eager(firing):
    torch.manual_seed(0)
    net = LinearSPSN(firing)
    x = torch.randn(45, 3, 8)
    w = torch.randn(45, 3, 6)
    compiled = torch.compile(net, fullgraph=True)
    s_e, s_c = net(x), compiled(x)
    assert torch.equal(s_e, s_c) and 0 < float(s_e.detach().mean()) < 1
    g_e = torch.autograd.grad((s_e * w).sum(), list(net.parameters()))
    g_c = torch.autograd.grad((s_c * w).sum(), list(net.parameters()))
    for a, b in zip(g_c, g_e):  # the compiled reductions may sum in another order
        assert rel_err(a, b) <= grad_tol(45, F32), rel_err(a, b)


def test_compile_spsn_module_and_random_seed():
    """``nn.SPSN`` (its seed drawn by ``torch.randint``, traced) compiles without graph breaks.

    Inductor draws random numbers with its own generator; ``fallback_random`` makes it use
    torch's, so that the compiled seed, hence the spikes, equal eager's.
    """
    import torch._inductor.config as inductor_config

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6), SPSN(6, learn_tau=True))
    x = torch.randn(40, 3, 8)
    with inductor_config.patch(fallback_random=True):
        compiled = torch.compile(net, fullgraph=True)
        torch.manual_seed(1)
        s_c = compiled(x)
    torch.manual_seed(1)
    s_e = net(x)
    assert torch.equal(s_c, s_e)
    g_c = torch.autograd.grad(s_c.sum(), list(net.parameters()))
    g_e = torch.autograd.grad(s_e.sum(), list(net.parameters()))
    for a, b in zip(g_c, g_e):
        assert rel_err(a, b) <= grad_tol(40, F32), rel_err(a, b)


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_bf16_autocast(backend):
    """Under CPU autocast the step returns bfloat16, with the float32 state's spikes; the
    gradients reach float32 leaves as float32."""
    torch.manual_seed(0)
    x = torch.randn(50, 2, 6, requires_grad=True)
    alpha = torch.full((6,), 0.9, requires_grad=True)
    s32 = spsn_step(x, alpha, 0.8, seed=4, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s16 = spsn_step(x, alpha, 0.8, seed=4, backend=backend)
    assert s32.dtype == F32 and s16.dtype == torch.bfloat16
    assert torch.equal(s16.float(), s32)
    gx, ga = torch.autograd.grad(s16.float().sum(), [x, alpha])
    gx32, ga32 = torch.autograd.grad(s32.sum(), [x, alpha])
    assert gx.dtype == F32 and torch.equal(gx, gx32) and torch.equal(ga, ga32)


def test_bf16_autocast_linear_spsn():
    torch.manual_seed(0)
    net = LinearSPSN("sb")
    x = torch.randn(30, 4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = net(x)
    assert s.dtype == torch.bfloat16 and set(s.unique().tolist()) <= {0.0, 1.0}
    s.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == F32 and torch.isfinite(p.grad).all() for p in net.parameters())
