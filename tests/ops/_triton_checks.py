"""Checks of the Triton kernels against the CPU (numba) kernels, usable two ways.

* On a machine without a GPU, ``test_triton_kernels.py`` runs this file as a script in a
  subprocess with ``TRITON_INTERPRET=1`` (it must be set before triton is imported): the Triton
  kernels then run in Triton's interpreter on CPU tensors, forced by ``spikescan.ops._backend.force_kernels``.
* On a CUDA machine the test imports it and calls :func:`run_all` with ``device="cuda"``: the
  kernels run compiled on the GPU and are compared with the CPU kernels on the same data.

Each check returns ``None`` when it passes or a string describing the failure.  The script
prints ``{name: result}`` as JSON on its last line.
"""

from __future__ import annotations

import contextlib
import json
import sys

import torch

from spikescan.ops import spsn
from spikescan.ops._backend import force_kernels
from spikescan.ops.leaky import leaky_integrate
from spikescan.ops.lif import lif_fused
from spikescan.surrogate import ATan, FastSigmoid, Sigmoid, Triangle


def leaky_integrate_fused(x, decay, **kw):
    return leaky_integrate(x, decay, backend="fused", **kw)


def _rel(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))


def _triton_impl(device: str) -> str | None:
    """On CPU tensors Triton must be forced (interpreter); CUDA tensors pick it themselves."""
    return "triton" if device == "cpu" else None


@contextlib.contextmanager
def _on(impl: str | None):
    """Force ``impl`` for every tensor inside the block (``"triton"`` on CPU: the interpreter)."""
    with force_kernels(impl):
        yield


def _both(device: str, fn, *tensors, sum_loss: bool = False):
    """``fn`` on CPU tensors with numba, and on ``device`` tensors with Triton; grads of leaves.

    The loss weighs the outputs randomly, or (``sum_loss``) sums them, which hands the kernels a
    gradient broadcast over time (one row read for every step).
    """
    outs = []
    for dev, impl in (("cpu", None), (device, _triton_impl(device))):
        leaves = [t.detach().to(dev).requires_grad_(t.requires_grad) for t in tensors]
        with _on(impl):
            out = fn(*leaves)
            out = out if isinstance(out, tuple) else (out,)
            g = torch.Generator().manual_seed(0)
            if sum_loss:
                loss = sum(o.sum() for o in out)
            else:
                loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype).to(dev)).sum() for o in out)
            grads = torch.autograd.grad(loss, [t for t in leaves if t.requires_grad])
        outs.append((out, grads))
    return outs


def check_lif(device, T, reset, surrogate, detach, dtype=torch.float32, sum_loss=False, membrane=True):
    g = torch.Generator().manual_seed(T)
    B, N = 3, 70  # 210 neurons: several programs, a partial last block
    x = (torch.randn(T, B, N, generator=g, dtype=dtype) * 0.6 + 0.2).requires_grad_()
    decay = (0.5 + 0.45 * torch.rand(N, generator=g, dtype=dtype)).requires_grad_()
    th = (0.6 + torch.rand(B, N, generator=g, dtype=dtype)).requires_grad_()
    v0 = (0.3 * torch.randn(B, N, generator=g, dtype=dtype)).requires_grad_()
    vr = torch.full((N,), 0.05, dtype=dtype, requires_grad=reset == "zero") if reset == "zero" else torch.zeros(())

    def fn(x, decay, th, v0, vr):
        return lif_fused(x, decay, th, reset=reset, v_reset=vr, v0=v0, surrogate=surrogate,
                           detach_reset=detach, return_membrane=membrane, return_state=True)

    (o_cpu, g_cpu), (o_dev, g_dev) = _both(device, fn, x, decay, th, v0, vr, sum_loss=sum_loss)
    if not torch.equal(o_cpu[0], o_dev[0].cpu()):
        return f"spikes differ in {int((o_cpu[0] != o_dev[0].cpu()).sum())} places"
    for name, a, b in zip(("v", "state") if membrane else ("state",), o_cpu[1:], o_dev[1:]):
        if _rel(a, b) > 1e-6:
            return f"{name} rel err {_rel(a, b):.2e}"
    for i, (a, b) in enumerate(zip(g_cpu, g_dev)):
        if _rel(a, b) > 1e-4:
            return f"grad {i} rel err {_rel(a, b):.2e}"
    return None


def check_lif_no_membrane(device):
    x = torch.randn(9, 50) * 0.7
    with torch.no_grad(), _on(None):
        s_cpu, st_cpu = lif_fused(x, 0.8, 0.5, return_state=True)
    with torch.no_grad(), _on(_triton_impl(device)):
        s_dev, st_dev = lif_fused(x.to(device), 0.8, 0.5, return_state=True)
    if not (torch.equal(s_cpu, s_dev.cpu()) and torch.equal(st_cpu, st_dev.cpu())):
        return "spikes or state differ without the stored membrane"
    return None


def check_scan(device, T, with_scale, sum_loss=False):
    g = torch.Generator().manual_seed(T)
    x = torch.randn(T, 2, 90, generator=g, requires_grad=True)
    d = torch.rand(90, generator=g).requires_grad_()
    v0 = torch.randn(2, 90, generator=g).requires_grad_()
    c = (torch.rand(2, 1, generator=g) + 0.5).requires_grad_() if with_scale else torch.ones(())

    def fn(x, d, v0, c):
        return leaky_integrate_fused(x, d, scale=c if with_scale else 1.0, v0=v0)

    (o_cpu, g_cpu), (o_dev, g_dev) = _both(device, fn, x, d, v0, c, sum_loss=sum_loss)
    if _rel(o_cpu[0], o_dev[0]) > 1e-6:
        return f"u rel err {_rel(o_cpu[0], o_dev[0]):.2e}"
    for i, (a, b) in enumerate(zip(g_cpu, g_dev)):
        if _rel(a, b) > 1e-4:
            return f"grad {i} rel err {_rel(a, b):.2e}"
    return None


def check_uniforms(device):
    with force_kernels(None):
        u_cpu = spsn.spsn_uniforms(99, (13, 3, 77))
    with force_kernels(_triton_impl(device)):
        u_dev = spsn.spsn_uniforms(99, (13, 3, 77), device=device)
    return None if torch.equal(u_cpu, u_dev.cpu()) else "uniforms differ between numba and Triton"


def check_spsn(device, T, firing, dtype=torch.float32, sum_loss=False):
    g = torch.Generator().manual_seed(T)
    x = (2 * torch.randn(T, 2, 60, generator=g, dtype=dtype)).requires_grad_()
    a = (0.5 + 0.49 * torch.rand(60, generator=g, dtype=dtype)).requires_grad_()
    b = (0.5 + 0.49 * torch.rand(60, generator=g, dtype=dtype)).requires_grad_()

    def fn(x, a, b):
        return spsn.fused_spsn(x, a, b, seed=5, firing=firing, tau=0.5, logit_scale=2.0)

    (o_cpu, g_cpu), (o_dev, g_dev) = _both(device, fn, x, a, b, sum_loss=sum_loss)
    n_diff = int((o_cpu[0] != o_dev[0].cpu()).sum())
    if n_diff > 1:  # exp/log of two libraries may flip a draw lying within rounding of the boundary
        return f"spikes differ in {n_diff} places"
    if n_diff == 0:
        for i, (p, q) in enumerate(zip(g_cpu, g_dev)):
            if _rel(p, q) > 1e-4:
                return f"grad {i} rel err {_rel(p, q):.2e}"
    return None


def check_empty(device):
    """No neuron (an empty batch): empty outputs and grad_x, zero parameter gradients, no launch error."""
    with _on(_triton_impl(device)):
        for shape in ((5, 0, 7), (5, 3, 0)):
            x = torch.randn(shape, device=device, requires_grad=True)
            d = torch.full(shape[2:], 0.8, device=device, requires_grad=True)
            s, v, st = lif_fused(x, d, 0.5, return_membrane=True, return_state=True)
            u = leaky_integrate_fused(x, d, scale=0.5, v0=0.2)
            z = spsn.fused_spsn(x, d, d, seed=1)
            outs = (s, v, u, z)
            if any(o.shape != x.shape for o in outs) or st.shape != shape[1:]:
                return f"wrong output shapes for input {shape}"
            gx, gd = torch.autograd.grad(sum(o.sum() for o in outs) + st.sum(), [x, d])
            if gx.shape != x.shape or not torch.equal(gd, torch.zeros_like(d)):
                return f"wrong gradients for input {shape}"
            if spsn.spsn_uniforms(3, shape, device=device).shape != shape:
                return f"wrong uniforms shape for {shape}"
    return None


CHECKS = {
    "lif_subtract_T1": lambda dev: check_lif(dev, 1, "subtract", FastSigmoid(), False),
    "lif_subtract_T2_atan": lambda dev: check_lif(dev, 2, "subtract", ATan(2.0), False),
    "lif_zero_T17_sigmoid": lambda dev: check_lif(dev, 17, "zero", Sigmoid(4.0), False),
    "lif_zero_T13_triangle_detach": lambda dev: check_lif(dev, 13, "zero", Triangle(0.8), True),
    "lif_subtract_T11_detach": lambda dev: check_lif(dev, 11, "subtract", FastSigmoid(10.0), True),
    "lif_zero_T9_float64": lambda dev: check_lif(dev, 9, "zero", FastSigmoid(), False, torch.float64),
    "lif_no_membrane": check_lif_no_membrane,
    "lif_sum_loss_T7": lambda dev: check_lif(dev, 7, "subtract", FastSigmoid(), False, sum_loss=True),
    # CPU: membrane recomputed from checkpoints (no membrane output); Triton: membrane stored
    "lif_no_membrane_output_T40": lambda dev: check_lif(dev, 40, "zero", ATan(2.0), False, membrane=False),
    "scan_T1": lambda dev: check_scan(dev, 1, True),
    "scan_T25_scale": lambda dev: check_scan(dev, 25, True),
    "scan_T25_noscale": lambda dev: check_scan(dev, 25, False),
    "scan_T8_sum_loss": lambda dev: check_scan(dev, 8, True, sum_loss=True),
    "uniforms": check_uniforms,
    "spsn_sb_T21": lambda dev: check_spsn(dev, 21, "sb"),
    "spsn_gs_T21": lambda dev: check_spsn(dev, 21, "gs"),
    "spsn_sb_T3_float64": lambda dev: check_spsn(dev, 3, "sb", torch.float64),
    "spsn_gs_T9_sum_loss": lambda dev: check_spsn(dev, 9, "gs", sum_loss=True),
    "empty_batch": check_empty,
}


def run_all(device: str) -> dict:
    results = {}
    for name, check in CHECKS.items():
        try:
            results[name] = check(device)
        except Exception as e:  # report, don't stop the other checks
            results[name] = f"{type(e).__name__}: {e}"
    return results


if __name__ == "__main__":
    print(json.dumps(run_all(sys.argv[1] if len(sys.argv) > 1 else "cpu")))
