"""The parity harness: every available backend of an op against its sequential reference.

:func:`check_op` runs one case -- forward outputs and the gradient of every differentiable input
-- through each backend that ``spikescan.ops.backends(op, x, ...)`` says can run it, and
compares with the ``"sequential"`` backend computed in float64 from the same inputs.  Used by
``test_parity.py`` in-process (numba kernels) and, with ``TRITON_INTERPRET=1`` and
``force_kernels("triton")``, in a subprocess that runs the Triton kernels in Triton's
interpreter against the same reference (``python parity.py triton`` prints the failures as JSON).
"""

from __future__ import annotations

import json
import sys

import torch

from spikescan.ops import backends, leaky_integrate, lif, max_membrane_readout, single_spike_lif
from spikescan.ops._backend import force_kernels
from spikescan.surrogate import ATan, FastSigmoid, Sigmoid, Triangle

F64 = torch.float64
# Relative tolerance of a backend against the float64 reference: float32 sums of up to ~T terms
# of magnitude ~1 differ from float64 by ~T * 2**-24; float64 runs the same operations, so only
# the summation order of the parameter gradients differs.
TOL = {torch.float32: 2e-4, F64: 1e-10}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _inputs(op: str, T: int, dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    B, N = 3, 7
    x = torch.randn(T, B, N, generator=g, dtype=F64) * 0.8 + 0.35
    if op == "lif":
        params = dict(decay=0.05 + 0.9 * torch.rand(N, generator=g, dtype=F64),
                      threshold=0.4 + torch.rand(B, N, generator=g, dtype=F64),
                      v0=0.2 * torch.randn(B, N, generator=g, dtype=F64))
    elif op == "single_spike_lif":
        params = dict(decay=0.6 + 0.35 * torch.rand(N, generator=g, dtype=F64),  # some neurons never fire
                      threshold=0.6 + 2.0 * torch.rand(B, N, generator=g, dtype=F64),
                      scale=0.5 + torch.rand(N, generator=g, dtype=F64),
                      v0=0.2 * torch.randn(B, N, generator=g, dtype=F64))
    else:
        params = dict(decay=torch.rand(N, generator=g, dtype=F64) ** 0.3,
                      scale=0.5 + torch.rand(N, generator=g, dtype=F64),
                      v0=torch.randn(B, N, generator=g, dtype=F64))
    return x.to(dtype), {k: v.to(dtype) for k, v in params.items()}


def _run(op: str, backend: str, x, params, options):
    leaves = [x.detach().clone().requires_grad_()] + [p.detach().clone().requires_grad_() for p in params.values()]
    kw = dict(zip(params, leaves[1:]))
    if op == "lif":
        s, v, state = lif(leaves[0], backend=backend, return_membrane=True, return_state=True, **kw, **options)
        outs = (s, v, state)
    elif op == "single_spike_lif":
        outs = single_spike_lif(leaves[0], backend=backend, return_membrane=True, **kw, **options)
    elif op == "max_membrane_readout":
        outs = (max_membrane_readout(leaves[0], backend=backend, **kw, **options),)
    else:
        outs = (leaky_integrate(leaves[0], backend=backend, **kw, **options),)
    g = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=F64).to(o.dtype)).sum() for o in outs)
    return outs, torch.autograd.grad(loss, leaves)


def check_op(op: str, T: int, dtype, seed: int = 0, **options) -> list[str]:
    """Failures (empty when every backend matches the reference) of one case of ``op``."""
    x, params = _inputs(op, T, dtype, seed)
    ref_outs, ref_grads = _run(op, "sequential", x.double(), {k: v.double() for k, v in params.items()}, options)
    spiking = op in ("lif", "single_spike_lif")
    context = {"surrogate": options.get("surrogate")} if spiking else {}
    failures = []
    for name in backends(op, x, **context):
        if name == "sequential" and dtype == F64:
            continue
        outs, grads = _run(op, name, x, params, options)
        where = f"{op}[{name}] T={T} {dtype} {options}"
        if spiking:
            # the spikes of the backend and of the float64 reference agree where the float64
            # membrane is not within rounding of the threshold
            th = params["threshold"].double()
            clear = (ref_outs[1] - th).abs() > 1e-5
            if not torch.equal(outs[0].double()[clear], ref_outs[0][clear]):
                failures.append(f"{where}: spikes differ")
                continue
        for i, (a, b) in enumerate(zip(outs, ref_outs)):
            if _rel(a, b) > TOL[dtype]:
                failures.append(f"{where}: output {i} rel err {_rel(a, b):.2e}")
        for i, (a, b) in enumerate(zip(grads, ref_grads)):
            if _rel(a, b) > TOL[dtype]:
                failures.append(f"{where}: grad {i} rel err {_rel(a, b):.2e}")
    return failures


# T = 1, odd lengths, and lengths crossing the 32-step checkpoint segments of the CPU kernels
STEPS = (1, 5, 31, 32, 33, 97)
LIF_OPTIONS = [dict(reset="subtract"), dict(reset="zero", v_reset=0.05, surrogate=ATan(2.0)),
               dict(reset="zero", detach_reset=True, surrogate=Sigmoid(4.0)),
               dict(reset="subtract", surrogate=Triangle(0.7)), dict(surrogate=FastSigmoid(100.0))]
SINGLE_SPIKE_OPTIONS = [dict(), dict(surrogate=ATan(2.0), straight_through=True)]


def all_cases():
    for T in STEPS:
        for dtype in (torch.float32, F64):
            yield "leaky_integrate", T, dtype, {}
            for opts in LIF_OPTIONS:
                yield "lif", T, dtype, opts
            for opts in SINGLE_SPIKE_OPTIONS:
                yield "single_spike_lif", T, dtype, opts
            yield "max_membrane_readout", T, dtype, {}


if __name__ == "__main__":  # python parity.py triton   (with TRITON_INTERPRET=1)
    impl = sys.argv[1] if len(sys.argv) > 1 else None
    failures = []
    with force_kernels(impl):
        for op, T, dtype, opts in all_cases():
            if op != "leaky_integrate" and T not in (1, 33):
                continue  # the interpreter is slow; the segment-free Triton kernels need fewer lengths
            failures += check_op(op, T, dtype, **opts)
    print(json.dumps(failures))
