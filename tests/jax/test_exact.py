"""Bit-for-bit parity with the torch reference where the arithmetic order allows it.

The JAX and torch LIF and leaky scans perform the same float32 operations in the same order,
except that XLA on a CPU with FMA contracts ``decay * v + x`` into one rounding.  With XLA's
instruction set capped below FMA (``--xla_cpu_max_isa=AVX``, set before JAX starts, hence the
subprocess) nothing is contracted and the spikes, membranes and final states must be identical
bits -- on any x86 CPU, since neither side then has a choice of rounding left -- and the LIF
module's gradients, summed by the two autodiffs in different orders, agree to 1e-6.
"""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax", reason="the JAX side needs jax (pip install 'spikescan[jax]')")

SCRIPT = textwrap.dedent("""
    import numpy as np, torch
    from spikescan.jax import leaky_integrate, lif, li
    from spikescan.ops.lif import lif as torch_lif
    from tests.jax._helpers import torch_leaky
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((200, 3, 17)) * 0.6 + 0.25).astype(np.float32)
    d = rng.uniform(0, 1, 17).astype(np.float32)
    d[:2] = (0.0, 1.0)
    th = rng.uniform(0.5, 1.5, 17).astype(np.float32)
    vr = rng.uniform(-0.2, 0.2, 17).astype(np.float32)
    v0 = rng.uniform(-0.5, 0.5, (3, 17)).astype(np.float32)
    t = lambda a: torch.from_numpy(a)
    checked = 0
    for reset in ("subtract", "zero"):
        r = vr if reset == "zero" else np.zeros_like(vr)
        ref = torch_lif(t(x), t(d), t(th), reset=reset, v_reset=t(r), v0=t(v0), backend="sequential",
                        return_membrane=True, return_state=True)
        for backend in ("sequential", "fused"):
            got = lif(x, d, th, reset=reset, v_reset=r, v0=v0, backend=backend, return_membrane=True,
                      return_state=True)
            for a, b in zip(got, ref):
                assert np.array_equal(np.asarray(a), b.numpy()), (reset, backend)
                checked += 1
    # gradients of every argument, both resets, two surrogates, T = 1 and T = 120: the autodiff scan
    # sums in torch's order, the custom VJP in its own (both within 1e-6)
    import jax, jax.numpy as jnp
    ws, wv = rng.standard_normal(x.shape).astype(np.float32), rng.standard_normal(x.shape).astype(np.float32)
    worst = {}
    for reset, sg, T in (("subtract", "fast_sigmoid", 120), ("zero", "atan", 120), ("zero", "fast_sigmoid", 1)):
        r = vr if reset == "zero" else np.zeros_like(vr)
        args = (x[:T], d, th, r, v0)
        tt = [torch.tensor(a, requires_grad=True) for a in args]
        s_, v_ = torch_lif(tt[0], tt[1], tt[2], reset=reset, v_reset=tt[3], v0=tt[4], surrogate=sg,
                           backend="sequential", return_membrane=True)
        ((s_ * t(ws[:T])).sum() + (v_ * t(wv[:T])).sum() * 0.1).backward()
        for backend in ("sequential", "fused"):
            def loss(x, d, th, r, v0):
                s, v = lif(x, d, th, reset=reset, v_reset=r, v0=v0, surrogate=sg, backend=backend,
                           return_membrane=True)
                return jnp.sum(s * ws[:T]) + jnp.sum(v * wv[:T]) * 0.1
            g = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))(*args)
            for name, a, b in zip(("x", "decay", "threshold", "v_reset", "v0"), g, tt):
                ref = np.zeros(b.shape, np.float32) if b.grad is None else b.grad.numpy()
                err = float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))
                worst[(backend, name)] = max(worst.get((backend, name), 0.0), err)
    assert max(worst.values()) <= 1e-6, worst
    print("lif gradients", max(worst.values()))
    u = np.asarray(leaky_integrate(x, d, scale=0.5, v0=v0, backend="sequential"))
    assert np.array_equal(u, torch_leaky(t(x), t(d), scale=0.5, v0=t(v0), backend="sequential").numpy())
    checked += 1
    # the LIF module with its steep default surrogate, FastSigmoid(100): gradients of the input and
    # of the learned decay and threshold
    import jax, jax.numpy as jnp
    from flax import nnx
    from spikescan.jax import nn as jnn
    from spikescan import nn as tnn
    jm = jnn.LIF(17, tau_syn=0.005, tau_mem=0.01, threshold=0.4, learn_tau=True, learn_threshold=True)
    tm = tnn.LIF(17, tau_syn=0.005, tau_mem=0.01, threshold=0.4, learn_tau=True, learn_threshold=True,
                 backend="sequential")
    xs = x * 2
    w = rng.standard_normal(x.shape).astype(np.float32)
    graphdef, params, rest = nnx.split(jm, nnx.Param, ...)
    gp, gx = jax.grad(lambda p, x: jnp.sum(nnx.merge(graphdef, p, rest)(x) * w), argnums=(0, 1))(params, xs)
    xt = torch.tensor(xs, requires_grad=True)
    (tm(xt) * torch.from_numpy(w)).sum().backward()
    rel = lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))
    errs = [rel(gx, xt.grad.numpy()), rel(gp["mem"]["log_tau"][...], tm.mem.log_tau.grad.numpy()),
            rel(gp["threshold"][...], tm.threshold.grad.numpy())]
    assert max(errs) <= 1e-6, errs
    print("identical", checked, "module gradients", max(errs))
""")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="--xla_cpu_max_isa names x86 levels")
def test_identical_bits_without_fma_contraction():
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_max_isa=AVX", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=root,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "identical 13 module gradients" in out.stdout
