"""The time-fused single-spike LIF (``single_spike_lif(backend="fused")``, numba on the CPU).

Compared against
* the sequential reference ``_single_spike_lif_sequential``: spikes and membranes bit for bit
  (the kernel does the reference's operations in the same order, no FMA);
* autograd of the composed op (``backend="sequential"``: leaky loop, heaviside, phi, g): every
  gradient.  float64 to 1e-10 of the largest entry.  float32 to ``2 n u M`` elementwise, ``u``
  the unit roundoff, ``M`` the sum of the absolute values of the terms of that gradient (the
  backward recurrence run on absolute values, the surrogate by its peak) and ``n`` the nesting
  depth of the sums (2 roundings per reverse step, the per-step surrogate, the reductions over
  neurons): any two evaluation orders of the same sum differ by at most that (Higham 3.1);
* the exact derivative of a smooth stand-in (gradcheck): with ``H`` replaced by the surrogate's
  primitive and ``g'`` frozen at the forward's first spikes, the composed op is differentiable,
  and its derivative is what the fused backward must compute.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import types

import pytest
import torch

from spikescan.ops.single_spike import fused as SF
from spikescan.ops.first_spike import _single_spike_lif_sequential, max_membrane_readout, single_spike_lif
from spikescan.surrogate import ATan, FastSigmoid, Sigmoid, Surrogate, Triangle

F32, F64 = torch.float32, torch.float64
UNIT = {F32: 2.0**-24, F64: 2.0**-53}

# surrogate, its peak value
SURROGATES = [
    (FastSigmoid(100.0), 1.0),
    (FastSigmoid(5.0), 1.0),
    (ATan(2.0), 1.0),
    (Sigmoid(4.0), 1.0),
    (Triangle(0.5), 2.0),
]


def make_case(T, rest, dtype, *, decay=0.9, per_neuron=True, scale="paper", v0=True, seed=0, grad=True):
    """Input current around the threshold: a per-neuron mean in [0, 1.1] plus noise, so that some
    neurons fire early, some late and some never; parameters per neuron or scalar."""
    g = torch.Generator().manual_seed(seed)
    F = rest[-1]
    x = torch.randn((T,) + rest, generator=g, dtype=F64) * 0.8 + 1.1 * torch.rand(rest, generator=g, dtype=F64)
    if per_neuron:
        d = torch.full((F,), float(decay), dtype=F64)
        if 0.0 < decay < 1.0:
            d = (d * (0.9 + 0.1 * torch.rand(F, generator=g, dtype=F64))).clamp(0, 1)
        thr = 0.5 + 0.7 * torch.rand(rest, generator=g, dtype=F64)
    else:
        d = torch.tensor(float(decay), dtype=F64)
        thr = torch.tensor(0.8, dtype=F64)
    if scale == "paper":
        sc = None
    elif scale == "code":
        sc = 1.0
    else:
        sc = 0.2 + torch.rand(F, generator=g, dtype=F64)
    if (scale == "code" or decay >= 0.999) and scale != "tensor":
        x = x * (1.0 - min(decay, 0.99))  # keep the unscaled / slowly leaking membrane near the threshold
    v0t = (0.4 * torch.randn(rest, generator=g, dtype=F64)) if v0 else None
    leaves = dict(x=x, decay=d, threshold=thr, scale=sc, v0=v0t)
    out = {}
    for k, t in leaves.items():
        if torch.is_tensor(t):
            t = t.to(dtype)
            if grad:
                t.requires_grad_()
        out[k] = t
    return out


def run(case, backend, *, surrogate=None, straight=False, membrane=False, weights=None, sum_loss=False):
    """Outputs and the gradients of every tensor leaf of ``loss = <w_s, s> (+ <w_v, v>)``."""
    c = {k: (t.detach().clone().requires_grad_(t.requires_grad) if torch.is_tensor(t) else t) for k, t in case.items()}
    out = single_spike_lif(c["x"], c["decay"], c["threshold"], scale=c["scale"], v0=c["v0"], surrogate=surrogate,
                           straight_through=straight, backend=backend, return_membrane=True)
    s, v = out
    if sum_loss:  # incoming gradients broadcast over time: the kernel's one-row path
        loss = s.sum() + (v.sum() if membrane else 0.0)
    else:
        ws, wv = weights
        loss = (s * ws).sum() + ((v * wv).sum() if membrane else 0.0)
    names = [k for k, t in c.items() if torch.is_tensor(t) and t.requires_grad]
    grads = torch.autograd.grad(loss, [c[k] for k in names]) if names else ()
    return s.detach(), v.detach(), dict(zip(names, grads))


def weights_for(x, seed=7):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(x.shape, generator=g, dtype=F64).to(x.dtype), torch.randn(x.shape, generator=g, dtype=F64).to(x.dtype))


def first_times(s):
    T = s.shape[0]
    fired = s.sum(0) > 0
    return torch.where(fired, s.argmax(0), torch.full(s.shape[1:], T))


def magnitudes(case, s, v, ws, wv, membrane, straight, peak):
    """float64 sums of |terms| of every gradient: the backward recurrence (module docstring of
    ``_kernels/single_spike_numba.py``) on absolute values, the surrogate by its peak."""
    x = case["x"].detach().double()
    T, rest = x.shape[0], x.shape[1:]
    d = case["decay"].detach().double().expand(rest)
    sc = case["scale"]
    c = (1 - d) if sc is None else torch.as_tensor(sc, dtype=F64).detach().double().expand(rest)
    v0 = torch.zeros(rest, dtype=F64) if case["v0"] is None else case["v0"].detach().double().expand(rest)
    t = torch.arange(T).reshape((T,) + (1,) * len(rest))
    mask = torch.ones_like(x) if straight else (t < first_times(s)).double()
    gz = ws.double().abs() * mask
    B = gz.flip(0).cumsum(0).cumsum(0).flip(0)  # both reversed cumsums of |gz|
    Mq = B * peak
    Mdv = Mq + (wv.double().abs() if membrane else 0.0)
    Mr = torch.empty_like(Mdv)
    r = torch.zeros(rest, dtype=F64)
    for k in range(T - 1, -1, -1):
        r = Mdv[k] + d * r
        Mr[k] = r
    prev = torch.cat([v0.abs().unsqueeze(0), v.double().abs()[:-1]])
    M = dict(x=c.abs() * Mr, decay=(Mr * prev).sum(0), scale=(Mr * x.abs()).sum(0), threshold=Mq.sum(0),
             v0=d * Mr[0])
    if sc is None:  # scale = 1 - decay: the decay's gradient has the scale's terms too
        M["decay"] = M["decay"] + M["scale"]
    return M


def reduced(t, shape):
    return t.sum_to_size(shape) if tuple(t.shape) != tuple(shape) else t


def check_grads(got, ref, *, dtype, M=None, T=None, rest=None):
    assert set(got) == set(ref)
    for k in ref:
        a, b = got[k].double(), ref[k].double()
        assert a.shape == b.shape, k
        if dtype == F64:
            if b.numel():
                assert float((a - b).abs().max()) <= 1e-10 * float(b.abs().max()), k
        else:
            n = 2 * T + 16 + (math.prod(rest) if k != "x" else 0)
            tol = 2 * n * UNIT[dtype] * reduced(M[k], b.shape)
            excess = (a - b).abs() - tol
            assert not bool((excess > 0).any()), (k, float(excess.max()), float(tol.flatten()[int(excess.argmax())]))


# --------------------------------------------------------------------------------------------
# forward: bit for bit
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("T, rest", [(1, (3, 7)), (2, (2, 5)), (5, (4, 9)), (31, (2, 33)), (32, (3, 8)),
                                     (33, (1, 130)), (100, (2, 3, 4)), (784, (4, 50))])
@pytest.mark.parametrize("decay", [0.0, 1e-6, 0.5, 0.9, 0.999999, 1.0])
def test_forward_identical_to_sequential(dtype, T, rest, decay):
    case = make_case(T, rest, dtype, decay=decay, grad=False)
    sc = case["scale"]
    s, v = single_spike_lif(case["x"], case["decay"], case["threshold"], scale=sc, v0=case["v0"], backend="fused",
                            return_membrane=True)
    s_ref, v_ref = _single_spike_lif_sequential(case["x"], case["decay"], case["threshold"], scale=sc, v0=case["v0"])
    assert s.dtype == v.dtype == dtype and s.shape == v.shape == case["x"].shape
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)
    assert bool((s.sum(0) <= 1).all())
    # the spikes alone (no membrane written) and the composed op agree too
    assert torch.equal(single_spike_lif(case["x"], case["decay"], case["threshold"], scale=sc, v0=case["v0"],
                                        backend="fused"), s_ref)
    s_c = single_spike_lif(case["x"], case["decay"], case["threshold"], scale=sc, v0=case["v0"], backend="sequential")
    assert torch.equal(s_c, s_ref)


def test_forward_fires_and_stays_silent():
    """The test inputs exercise all three: neurons firing within a few steps, late, and never."""
    case = make_case(784, (8, 50), F32, grad=False)
    s = single_spike_lif(case["x"], case["decay"], case["threshold"], backend="fused")
    tf = first_times(s)
    assert (tf < 4).any() and ((tf > 32) & (tf < 784)).any() and (tf == 784).any()


@pytest.mark.parametrize("scale", ["paper", "code", "tensor"])
def test_forward_scale_and_scalar_params(scale):
    case = make_case(60, (3, 11), F64, scale=scale, per_neuron=False, grad=False)
    s, v = single_spike_lif(case["x"], float(case["decay"]), float(case["threshold"]), scale=case["scale"],
                            v0=case["v0"], backend="fused", return_membrane=True)
    s_ref, v_ref = _single_spike_lif_sequential(case["x"], float(case["decay"]), float(case["threshold"]),
                                                scale=case["scale"], v0=case["v0"])
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)


def test_threshold_reached_exactly_fires():
    """``v >= threshold`` fires (the heaviside convention): membranes that hit it exactly."""
    x = torch.tensor([[0.5], [0.5], [0.5], [0.0]], dtype=F64).expand(4, 3).contiguous()
    s = single_spike_lif(x, 1.0, torch.tensor([0.5, 1.0, 2.0], dtype=F64), scale=1.0, backend="fused")
    assert s[:, 0].tolist() == [1, 0, 0, 0] and s[:, 1].tolist() == [0, 1, 0, 0] and s[:, 2].sum() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_compute_in_float32(dtype):
    case = make_case(40, (3, 10), F32, grad=False)
    x = case["x"].to(dtype)
    s, v = single_spike_lif(x, 0.9, 0.8, backend="fused", return_membrane=True)
    s32, v32 = single_spike_lif(x.float(), 0.9, 0.8, backend="fused", return_membrane=True)
    assert s.dtype == v.dtype == dtype
    assert torch.equal(s, s32.to(dtype)) and torch.equal(v, v32.to(dtype))
    xg = x.clone().requires_grad_()
    single_spike_lif(xg, 0.9, 0.8, backend="fused").sum().backward()
    assert xg.grad.dtype == dtype and bool(torch.isfinite(xg.grad).all())


# --------------------------------------------------------------------------------------------
# backward: autograd of the composed op
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("straight", [False, True])
@pytest.mark.parametrize("membrane", [False, True])
@pytest.mark.parametrize("T, rest", [(1, (3, 5)), (7, (2, 9)), (33, (2, 6)), (97, (3, 2, 4)), (784, (2, 20))])
def test_gradients_match_composed(dtype, straight, membrane, T, rest):
    case = make_case(T, rest, dtype, seed=T)
    w = weights_for(case["x"])
    s, v, got = run(case, "fused", straight=straight, membrane=membrane, weights=w)
    s_r, v_r, ref = run(case, "sequential", straight=straight, membrane=membrane, weights=w)
    assert torch.equal(s, s_r) and torch.equal(v, v_r)
    M = magnitudes(case, s, v, *w, membrane, straight, 1.0)
    check_grads(got, ref, dtype=dtype, M=M, T=T, rest=rest)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("surrogate, peak", SURROGATES, ids=lambda s: getattr(s, "kind", None) and repr(s))
def test_every_surrogate(dtype, surrogate, peak):
    T, rest = 70, (3, 16)
    case = make_case(T, rest, dtype, seed=3)
    w = weights_for(case["x"])
    for straight in (False, True):
        s, v, got = run(case, "fused", surrogate=surrogate, straight=straight, membrane=True, weights=w)
        _, _, ref = run(case, "sequential", surrogate=surrogate, straight=straight, membrane=True, weights=w)
        M = magnitudes(case, s, v, *w, True, straight, peak)
        check_grads(got, ref, dtype=dtype, M=M, T=T, rest=rest)


@pytest.mark.parametrize("decay", [0.0, 1e-6, 0.999999, 1.0])
@pytest.mark.parametrize("scale", ["paper", "code", "tensor"])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_gradients_decays_near_0_and_1(decay, scale, dtype):
    T, rest = 200, (2, 12)
    case = make_case(T, rest, dtype, decay=decay, scale=scale, seed=11)
    w = weights_for(case["x"])
    s, v, got = run(case, "fused", weights=w, membrane=True)
    _, _, ref = run(case, "sequential", weights=w, membrane=True)
    check_grads(got, ref, dtype=dtype, M=magnitudes(case, s, v, *w, True, False, 1.0), T=T, rest=rest)


@pytest.mark.parametrize("membrane", [False, True])
@pytest.mark.parametrize("straight", [False, True])
def test_broadcast_gradient_rows(membrane, straight):
    """``loss = s.sum() (+ v.sum())``: the incoming gradients are stride-0 rows."""
    T, rest = 150, (4, 10)
    case = make_case(T, rest, F64, seed=5)
    _, _, got = run(case, "fused", straight=straight, membrane=membrane, sum_loss=True)
    _, _, ref = run(case, "sequential", straight=straight, membrane=membrane, sum_loss=True)
    check_grads(got, ref, dtype=F64)


def test_only_membrane_loss_and_partial_leaves():
    """No gradient reaches the spikes (``g_s`` is None); only some leaves require a gradient."""
    case = make_case(50, (3, 8), F64, seed=2)
    case["decay"].requires_grad_(False)
    case["threshold"].requires_grad_(False)
    w = weights_for(case["x"])
    for backend in ("fused", "sequential"):
        c = {k: (t.detach().clone().requires_grad_(t.requires_grad) if torch.is_tensor(t) else t)
             for k, t in case.items()}
        _, v = single_spike_lif(c["x"], c["decay"], c["threshold"], v0=c["v0"], backend=backend, return_membrane=True)
        g = torch.autograd.grad((v * w[1]).sum(), [c["x"], c["v0"]])
        if backend == "fused":
            got = g
        else:
            ref = g
    check_grads(dict(x=got[0], v0=got[1]), dict(x=ref[0], v0=ref[1]), dtype=F64)
    # and the gradient stops at the first spike without a membrane loss
    c = make_case(50, (3, 8), F64, seed=2)
    s = single_spike_lif(c["x"], c["decay"], c["threshold"], backend="fused")
    (gx,) = torch.autograd.grad(s.sum(), c["x"])
    t = torch.arange(50)[:, None, None]
    assert (gx[t >= first_times(s)] == 0).all() and (gx[t < first_times(s)] != 0).any()


def test_empty_batch():
    x = torch.zeros(9, 0, 5, requires_grad=True)
    decay = torch.full((5,), 0.9, requires_grad=True)
    thr = torch.ones(5, requires_grad=True)
    s, v = single_spike_lif(x, decay, thr, backend="fused", return_membrane=True)
    assert s.shape == v.shape == (9, 0, 5)
    gx, gd, gt = torch.autograd.grad(s.sum() + v.sum(), [x, decay, thr])
    assert gx.shape == x.shape and torch.equal(gd, torch.zeros(5)) and torch.equal(gt, torch.zeros(5))


def test_blocks_and_threads():
    """More neurons than one block (forward 4096, backward 1024) and split over 2 threads: equal
    to the serial call bit for bit (neurons are independent) and to the composed op."""
    T, rest = 70, (5, 1001)  # 5005 neurons: ranges and blocks end mid-row
    case = make_case(T, rest, F64, seed=9)
    w = weights_for(case["x"])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        s1, v1, g1 = run(case, "fused", membrane=True, weights=w)
        torch.set_num_threads(2)
        s2, v2, g2 = run(case, "fused", membrane=True, weights=w)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(s1, s2) and torch.equal(v1, v2)
    for k in g1:
        assert torch.equal(g1[k], g2[k]), k
    _, _, ref = run(case, "sequential", membrane=True, weights=w)
    check_grads(g2, ref, dtype=F64)


def test_noncontiguous_input():
    case = make_case(40, (3, 6), F64, seed=4)
    xt = case["x"].detach().movedim(0, -1).contiguous().movedim(-1, 0).requires_grad_()
    assert not xt.is_contiguous()
    case_nc = dict(case, x=xt)
    w = weights_for(xt)
    s, v, got = run(case_nc, "fused", weights=w, membrane=True)
    _, _, ref = run(case, "sequential", weights=w, membrane=True)
    check_grads(got, ref, dtype=F64)


# --------------------------------------------------------------------------------------------
# gradcheck: the exact derivative of the smooth stand-in
# --------------------------------------------------------------------------------------------


class _SmoothStandIn(torch.autograd.Function):
    """Forward: the composed op with ``H`` replaced by the surrogate's primitive ``P`` and ``g``
    linearised at the forward's first spikes, ``f[t] = m[t] sum_{k<=t} (t-k+1) P(v[k] - th)``
    (``m[t] = t < tf``, or 1 straight-through), and the membrane ``v``.  Backward: the fused
    kernel's.  gradcheck then checks the kernel against numerical derivatives of ``f`` and ``v``."""

    @staticmethod
    def forward(ctx, x, decay, thr, scale, v0, surrogate, straight, mask):
        v = []
        u = v0
        for x_t in x.unbind(0):
            u = decay * u + scale * x_t
            v.append(u)
        v = torch.stack(v)
        p = surrogate.primitive(v - thr)
        f = mask * p.cumsum(0).cumsum(0)
        ctx.save_for_backward(x, decay, thr, scale, v0)
        ctx.surrogate, ctx.straight = surrogate, straight
        return f, v

    @staticmethod
    def backward(ctx, gf, gv):
        leaves = [t.detach().clone().requires_grad_() for t in ctx.saved_tensors]
        x, decay, thr, scale, v0 = leaves
        with torch.enable_grad():
            s, v = single_spike_lif(x, decay, thr, scale=scale, v0=v0, surrogate=ctx.surrogate,
                                    straight_through=ctx.straight, backend="fused", return_membrane=True)
            grads = torch.autograd.grad((s * gf).sum() + (v * gv).sum(), leaves)
        return (*grads, None, None, None)


@pytest.mark.parametrize("straight", [False, True])
@pytest.mark.parametrize("surrogate", [FastSigmoid(2.0), ATan(1.0), Sigmoid(3.0), Triangle(2.0)], ids=repr)
def test_gradcheck_smooth_stand_in(straight, surrogate):
    T, rest = 12, (2, 4)
    g = torch.Generator().manual_seed(1)
    mean = torch.tensor([0.1, 0.3, 0.5, 0.8], dtype=F64)
    x = (torch.randn((T,) + rest, generator=g, dtype=F64) * 0.5 + mean).requires_grad_()
    decay = (0.6 + 0.3 * torch.rand(4, generator=g, dtype=F64)).requires_grad_()
    thr = (0.6 + 0.3 * torch.rand(rest, generator=g, dtype=F64)).requires_grad_()
    scale = (0.5 + torch.rand(4, generator=g, dtype=F64)).requires_grad_()
    v0 = (0.2 * torch.randn(rest, generator=g, dtype=F64)).requires_grad_()
    with torch.no_grad():
        s, v = single_spike_lif(x, decay, thr, scale=scale, v0=v0, backend="fused", return_membrane=True)
        assert float((v - thr).abs().min()) > 1e-4  # finite differences (eps 1e-6) move no spike
    assert 0 < float(s.sum()) < s[0].numel()
    t = torch.arange(T).reshape(T, 1, 1)
    mask = torch.ones_like(x) if straight else (t < first_times(s)).to(F64)
    fn = lambda *a: _SmoothStandIn.apply(*a, surrogate, straight, mask)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, decay, thr, scale, v0), eps=1e-6, atol=1e-7, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# API and errors
# --------------------------------------------------------------------------------------------


def test_auto_is_fused_on_cpu_with_builtin_surrogates(backend_patch):
    calls = backend_patch.count_calls("single_spike_lif", "fused")
    x = torch.rand(10, 2, 3)
    single_spike_lif(x, 0.9)
    assert calls == [1]

    class Box(Surrogate):  # not a built-in kind: the kernels do not know it
        kind = "box"
        _param_name = "width"
        width = 1.0

        def grad(self, z):
            return (z.abs() < self.width).to(z.dtype)

    box = Box()
    s = single_spike_lif(x, 0.9, surrogate=box)  # auto: the composed op
    assert calls == [1] and torch.equal(s, single_spike_lif(x, 0.9, backend="sequential"))
    with pytest.raises(ValueError, match="built-in surrogates"):
        single_spike_lif(x, 0.9, surrogate=box, backend="fused")


def test_fused_refuses_other_devices_and_double_backward():
    with pytest.raises(ValueError, match=r"run on CPU \(numba\) and CUDA \(Triton\) tensors, not on meta"):
        single_spike_lif(torch.rand(5, 2, 3, device="meta"), 0.9, backend="fused")
    with pytest.raises(ValueError, match=r"run on CPU \(numba\) and CUDA \(Triton\) tensors, not on meta"):
        max_membrane_readout(torch.rand(5, 2, 3, device="meta"), 0.9, backend="fused")
    if not torch.cuda.is_available():  # the message a CUDA tensor gets without a GPU / triton
        with pytest.raises(ValueError, match="no CUDA device is visible|on CUDA need triton"):
            SF.check_device(types.SimpleNamespace(device=torch.device("cuda")))
    x = torch.rand(20, 2, 3, dtype=F64, requires_grad=True)
    s, v = single_spike_lif(x, 0.9, 0.5, backend="fused", return_membrane=True)
    (gx,) = torch.autograd.grad((s * torch.rand_like(s)).sum() + v.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice|no autograd formula"):
        gx.sum().backward()


def test_bad_parameters_named():
    x = torch.rand(5, 3)
    with pytest.raises(ValueError, match="decay must lie in"):
        single_spike_lif(x, 1.5, backend="fused")
    with pytest.raises(ValueError, match="threshold must be finite"):
        single_spike_lif(x, 0.9, float("nan"), backend="fused")
    with pytest.raises(ValueError, match="v0 must be finite"):
        single_spike_lif(x, 0.9, v0=float("inf"), backend="fused")
    with pytest.raises(ValueError, match="scale of shape"):
        single_spike_lif(x, 0.9, scale=torch.ones(4), backend="fused")
    with pytest.raises(ValueError, match="backend must be one of"):
        single_spike_lif(x, 0.9, backend="numba")


_PROBE = textwrap.dedent("""
    import json, torch
    from spikescan.ops.first_spike import single_spike_lif
    from spikescan.ops.single_spike import numba_kernels as K
    x = (torch.rand(40, 3, 16) * 2).requires_grad_()
    d = torch.full((16,), 0.9, requires_grad=True)
    single_spike_lif(x, 0.9).sum().backward()
    s, v = single_spike_lif(x, d, return_membrane=True)
    (s.sum() + v.sum()).backward()
    out = {str(key): [sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values())]
           for key, k in K._BACKWARD.items()}
    out["forward"] = [sum(K.single_spike_forward.stats.cache_hits.values()),
                      sum(K.single_spike_forward.stats.cache_misses.values())]
    print(json.dumps(out))
""")


def test_kernels_load_from_the_disk_cache_in_a_new_process():
    """No closures over dispatchers: a second process reports only numba cache hits."""
    def probe():
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    probe()
    second = probe()
    assert len(second) == 3  # forward and two backward variants
    for key, (hits, misses) in second.items():
        assert misses == 0 and hits >= 1, (key, hits, misses)


# --------------------------------------------------------------------------------------------
# max-membrane readout
# --------------------------------------------------------------------------------------------


def _readout_run(case, backend, seed=3):
    c = {k: (t.detach().clone().requires_grad_(t.requires_grad) if torch.is_tensor(t) else t) for k, t in case.items()}
    m = max_membrane_readout(c["x"], c["decay"], scale=c["scale"], v0=c["v0"], backend=backend)
    w = torch.randn(m.shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(m.dtype)
    names = [k for k in ("x", "decay", "scale", "v0") if torch.is_tensor(c[k]) and c[k].requires_grad]
    grads = torch.autograd.grad((m * w).sum(), [c[k] for k in names])
    return m.detach(), dict(zip(names, grads)), w


def _readout_magnitudes(case, w):
    """float64 sums of |terms|: the reverse recurrence on |w| at the maxima (ties included)."""
    x = case["x"].detach().double()
    T, rest = x.shape[0], x.shape[1:]
    d = case["decay"].detach().double().expand(rest)
    sc = case["scale"]
    c = (1 - d) if sc is None else torch.as_tensor(sc, dtype=F64).detach().expand(rest)
    v0 = torch.zeros(rest, dtype=F64) if case["v0"] is None else case["v0"].detach().double().expand(rest)
    _, v = _single_spike_lif_sequential(x, d, 1e300, scale=c, v0=v0)  # never fires
    gv = (v == v.amax(0)).double() * w.double().abs()
    Mr = torch.empty_like(gv)
    r = torch.zeros(rest, dtype=F64)
    for k in range(T - 1, -1, -1):
        r = gv[k] + d * r
        Mr[k] = r
    prev = torch.cat([v0.abs().unsqueeze(0), v.abs()[:-1]])
    M = dict(x=c.abs() * Mr, decay=(Mr * prev).sum(0), scale=(Mr * x.abs()).sum(0), v0=d * Mr[0])
    if sc is None:
        M["decay"] = M["decay"] + M["scale"]
    return M


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("scale", ["paper", "code", "tensor"])
@pytest.mark.parametrize("T, rest, decay", [(1, (3, 4), 0.9), (33, (2, 7), 0.95), (784, (4, 10), 0.95),
                                            (100, (5, 3), 0.0), (100, (5, 3), 1.0)])
def test_readout_matches_composed(dtype, scale, T, rest, decay):
    case = make_case(T, rest, dtype, decay=decay, scale=scale, seed=T)
    m, got, w = _readout_run(case, "fused")
    m_r, ref, _ = _readout_run(case, "sequential")
    assert m.dtype == dtype and m.shape == rest
    assert torch.equal(m, m_r)  # the same membranes: the same maxima
    check_grads(got, ref, dtype=dtype, M=_readout_magnitudes(case, w), T=T, rest=rest)


def test_readout_ties_split_the_gradient_as_amax():
    """Ties at the maximum (exactly equal membranes) share the gradient evenly, as torch.amax's does."""
    x = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 2.0], [3.0, 0.0, 1.0], [-1.0, 0.0, 2.0]], dtype=F64)
    w = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    for decay in (0.0, 1.0):  # v = x; v = cumsum(x)
        xs = [x.clone().requires_grad_() for _ in range(2)]
        ms = [max_membrane_readout(xi, decay, scale=1.0, backend=b) for xi, b in zip(xs, ("fused", "sequential"))]
        assert torch.equal(ms[0], ms[1])
        gs = [torch.autograd.grad((m * w).sum(), xi)[0] for m, xi in zip(ms, xs)]
        assert torch.equal(gs[0], gs[1])
        if decay == 0.0:  # gx = dL/dv: w / (number of ties) at each maximum
            expect = torch.tensor([[0, 0.5, 1], [0.5, 0.5, 1], [0.5, 0.5, 0], [0, 0.5, 1]], dtype=F64)
            assert torch.equal(gs[0], expect)


def test_readout_auto_empty_and_low_precision():
    x = torch.randn(30, 2, 4)
    assert torch.equal(max_membrane_readout(x, 0.9), max_membrane_readout(x, 0.9, backend="fused"))
    e = torch.zeros(5, 0, 4, requires_grad=True)
    m = max_membrane_readout(e, 0.9, backend="fused")
    assert m.shape == (0, 4)
    (g,) = torch.autograd.grad(m.sum(), e)
    assert g.shape == e.shape
    h = max_membrane_readout(x.half(), 0.9, backend="fused")
    assert h.dtype == torch.float16 and torch.equal(h, max_membrane_readout(x.half().float(), 0.9).half())


# --------------------------------------------------------------------------------------------
# Triton kernels (CUDA): in Triton's interpreter against the CPU kernels
# --------------------------------------------------------------------------------------------

_TRITON_PROBE = textwrap.dedent("""
    import json, sys, torch
    from spikescan.ops import _backend
    from spikescan.ops.first_spike import single_spike_lif, max_membrane_readout
    from spikescan.surrogate import ATan, FastSigmoid, Sigmoid, Triangle

    def case(T, dtype, seed):
        g = torch.Generator().manual_seed(seed)
        B, N = 3, 70  # 210 neurons: several programs, a partial last block
        f64 = torch.float64
        x = torch.randn(T, B, N, generator=g, dtype=f64) * 0.8 + torch.rand(B, N, generator=g, dtype=f64)
        d = 0.8 + 0.15 * torch.rand(N, generator=g, dtype=f64)
        th = 0.5 + 0.5 * torch.rand(B, N, generator=g, dtype=f64)
        sc = 0.2 + torch.rand(N, generator=g, dtype=f64)
        v0 = 0.3 * torch.randn(B, N, generator=g, dtype=f64)
        return [t.to(dtype) for t in (x, d, th, sc, v0)]

    def run(impl, leaves, fn, sum_loss):
        with _backend.force_kernels(impl):  # "triton" on CPU tensors: the interpreter
            ls = [t.detach().clone().requires_grad_() for t in leaves]
            out = fn(*ls)
            out = out if isinstance(out, tuple) else (out,)
            g = torch.Generator().manual_seed(0)
            loss = sum(o.sum() if sum_loss else (o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum()
                       for o in out)
            return [o.detach() for o in out], torch.autograd.grad(loss, ls)

    def compare(name, leaves, fn, sum_loss=False):
        (o1, g1), (o2, g2) = run(None, leaves, fn, sum_loss), run("triton", leaves, fn, sum_loss)
        same = all(torch.equal(a, b) for a, b in zip(o1, o2))
        err = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-300)) for a, b in zip(g2, g1))
        out[name] = [same, err]

    out = {}
    surrogates = (FastSigmoid(100.0), ATan(2.0), Sigmoid(4.0), Triangle(0.5))
    # every surrogate once and every (straight_through, return_membrane) pair at T=33 in float32,
    # two pairs each at T=1 and in float64: the surrogate is one device function and the two flags
    # select separate code paths, so their product adds interpreter time, not coverage
    pairs = ((False, False), (False, True), (True, False), (True, True))
    for T, dtype, runs in ((1, torch.float32, [(surrogates[0], *pairs[0]), (surrogates[0], *pairs[3])]),
                           (33, torch.float32, [(sur, *pair) for sur, pair in zip(surrogates, pairs)]),
                           (33, torch.float64, [(surrogates[0], *pairs[1]), (surrogates[0], *pairs[2])])):
        for sur, straight, membrane in runs:
            fn = lambda x, d, th, sc, v0: single_spike_lif(
                x, d, th, scale=sc, v0=v0, surrogate=sur, straight_through=straight, backend="fused",
                return_membrane=membrane)
            compare(f"single_spike T={T} {dtype} {sur} straight={straight} membrane={membrane}",
                    case(T, dtype, T), fn, sum_loss=not membrane)
        x, d, _, sc, v0 = case(T, dtype, T + 1)
        compare(f"readout T={T} {dtype}", [x, d, sc, v0],
                lambda x, d, sc, v0: max_membrane_readout(x, d, scale=sc, v0=v0, backend="fused"))
    print(json.dumps(out))
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_kernels_in_the_interpreter_equal_the_cpu_kernels():
    """Same outputs bit for bit (the same operations); gradients to ``2 (2T + 16) u`` of their
    largest entry (the sigmoid surrogate's exp differs: numba's vectorized one against numpy's in
    the interpreter; every other operation is the same in the same order)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", _TRITON_PROBE], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(res) == 2 + 4 + 2 + 3
    for name, (same, err) in res.items():
        T = int(name.split("T=")[1].split()[0])
        u = UNIT[F64] if "float64" in name else UNIT[F32]
        assert same and err <= 2 * (2 * T + 16) * u, (name, same, err)
