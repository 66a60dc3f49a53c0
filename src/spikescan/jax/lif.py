"""Exact leaky integrate-and-fire neuron with reset in JAX, over a whole sequence.

The equations of :func:`spikescan.ops.lif.lif`, with the same arguments; for ``t = 0 .. T-1``::

    v[t]      = decay * v_post[t-1] + x[t]              v_post[-1] = v0 (default 0)
    s[t]      = H(v[t] - threshold)                     H(0) = 1, surrogate derivative in backward
    v_post[t] = v[t] - threshold * s[t]                 reset="subtract"
    v_post[t] = v[t] * (1 - s[t]) + v_reset * s[t]      reset="zero"

This is eq. 1-2 of the temporal-parallelization paper (``k_tau = decay``, ``V_th = threshold``,
``reset="zero"`` with ``V_rest = 0``) and its JAX implementation's neuron; ``detach_reset=True``
stops the gradient through the ``s[t]`` of the reset.

Backends:

``"sequential"``  ``jax.lax.scan`` over the step, differentiated by JAX (the reference; any
                  order of derivative, forward mode too).
``"fused"``       the same forward scan under ``jax.custom_vjp``: it keeps only the pre-reset
                  membrane ``v`` for the backward (one array ``[T, ...]``; ``v_post`` and the
                  spikes are recomputed from it) and runs the backward as one reverse-time
                  ``lax.scan``, the JAX counterpart of the torch side's fused kernel (its CUDA
                  form keeps the same ``v``).  Reverse mode only; XLA fuses each step's
                  arithmetic.
``"auto"``        ``"fused"``.

Both run the step ``decay * v_post + x`` in the order written, as the torch reference does;
``tests/jax/test_lif.py`` compares them with each other and with the torch side.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .. import defaults as D
from . import _checks as C
from .firing import spike, surrogate_grad

__all__ = ["lif", "BACKENDS"]

BACKENDS = ("auto", "sequential", "fused")
RESETS = ("subtract", "zero")


def _reset(v, s, threshold, v_reset, reset):
    if reset == "subtract":
        return v - threshold * s
    return v * (1.0 - s) + v_reset * s


def _forward(x, decay, threshold, v_reset, v0, reset, kind, param, detach_reset):
    def step(v_post, x_t):
        v = decay * v_post + x_t
        s = spike(v - threshold, kind, param)
        s_reset = jax.lax.stop_gradient(s) if detach_reset else s
        return _reset(v, s_reset, threshold, v_reset, reset), (s, v)

    state, (s, v) = jax.lax.scan(step, jnp.broadcast_to(v0, x.shape[1:]), x)
    return s, v, state


def _sum_to(g, shape):
    """Sum a full-shaped gradient back onto a parameter's broadcast ``shape``."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    return jnp.sum(g, axis=axes).reshape(shape) if axes else g.reshape(shape)


@partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _fused(x, decay, threshold, v_reset, v0, reset, kind, param, detach_reset):
    return _forward(x, decay, threshold, v_reset, v0, reset, kind, param, detach_reset)


def _fused_fwd(x, decay, threshold, v_reset, v0, reset, kind, param, detach_reset):
    s, v, state = _forward(x, decay, threshold, v_reset, v0, reset, kind, param, detach_reset)
    return (s, v, state), (v, decay, threshold, v_reset, v0)


def _fused_bwd(reset, kind, param, detach_reset, res, cts):
    v_all, decay, threshold, v_reset, v0 = res
    gs_all, gv_all, g_state = cts
    rest = v_all.shape[1:]
    zero = jnp.zeros(rest, v_all.dtype)

    # Reverse time.  The carry holds the gradient reaching v_post[t] and dL/dv[t+1], whose
    # product with v_post[t] is the decay gradient of step t+1 (so v_post needs no stored copy).
    def step(carry, inp):
        g_post, g_v_next, g_decay, g_thr, g_vr = carry
        v, gs, gv = inp
        s = (v - threshold >= 0).astype(v.dtype)
        p = _reset(v, s, threshold, v_reset, reset)
        g_decay = g_decay + g_v_next * p
        if reset == "subtract":
            dp_dv, dp_ds = 1.0, -threshold
            g_thr = g_thr - s * g_post
        else:
            dp_dv, dp_ds = 1.0 - s, v_reset - v
            g_vr = g_vr + s * g_post
        g_s = gs if detach_reset else gs + dp_ds * g_post
        g_u = g_s * surrogate_grad(kind, param, v - threshold)
        g_v = gv + dp_dv * g_post + g_u
        g_thr = g_thr - g_u
        return (decay * g_v, g_v, g_decay, g_thr, g_vr), g_v

    init = (jnp.broadcast_to(g_state, rest), zero, zero, zero, zero)
    (g_post, g_v0_step, g_decay, g_thr, g_vr), g_x = jax.lax.scan(step, init, (v_all, gs_all, gv_all), reverse=True)
    g_decay = g_decay + g_v0_step * jnp.broadcast_to(v0, rest)
    return (g_x, _sum_to(g_decay, decay.shape), _sum_to(g_thr, threshold.shape), _sum_to(g_vr, v_reset.shape),
            _sum_to(g_post, v0.shape))


_fused.defvjp(_fused_fwd, _fused_bwd)


def lif(x, decay, threshold=D.THRESHOLD, *, reset: str = D.RESET, v_reset=D.V_RESET, surrogate=None, v0=None,
        detach_reset: bool = D.DETACH_RESET, backend: str = "auto", return_membrane: bool = False,
        return_state: bool = False):
    """Run an exact LIF neuron with reset over ``x [T, ...]`` (see the module docstring).

    Args:
        x: input current, floating array ``[T, ...]`` with ``T >= 1`` (half types computed in
            float32).
        decay: membrane decay in ``[0, 1]``, float or array broadcastable to ``x.shape[1:]``.
        threshold: firing threshold ``> 0``, float or array broadcastable to ``x.shape[1:]``.
        reset: ``"zero"`` (default: hard reset to ``v_reset``) or ``"subtract"``; the defaults are
            :mod:`spikescan.defaults`, those of :func:`spikescan.ops.lif.lif`.
        v_reset: reset potential of ``reset="zero"``; must stay 0 with ``"subtract"``.
        surrogate: a :class:`spikescan.surrogate.Surrogate`, a name, or ``None`` for
            ``FastSigmoid(25)`` (built-in kinds only).
        v0: initial post-reset membrane ``v_post[-1]``, float or array (``None``: 0).
        detach_reset: stop the gradient through the spike inside the reset.
        backend: ``"auto"``, ``"fused"`` or ``"sequential"``.
        return_membrane: also return the pre-reset membrane ``v`` ``[T, ...]``.
        return_state: also return ``v_post[T-1]`` (``x.shape[1:]``), to continue with ``v0=state``.

    Returns ``s`` alone or the tuple of the requested items in the order ``(s, v, state)``,
    in ``x``'s dtype.
    """
    x = C.time_first(x, "x")
    C.choice(reset, "reset", RESETS)
    C.choice(backend, "backend", BACKENDS)
    kind, param = C.surrogate_spec(surrogate)
    d = C.param(decay, "decay", x, low=0.0, high=1.0)
    th = C.param(threshold, "threshold", x, low=0.0, low_inclusive=False)
    vr = C.param(v_reset, "v_reset", x)
    if reset == "subtract" and C.is_concrete(vr) and bool(jnp.any(vr != 0)):
        raise ValueError("v_reset is used only with reset='zero'; with reset='subtract' leave it at 0")
    init = jnp.zeros((), d.dtype) if v0 is None else C.param(v0, "v0", x)
    xs = x.astype(C.compute_dtype(x.dtype))
    fn = _forward if backend == "sequential" else _fused
    s, v, state = fn(xs, d, th, vr, init, reset, kind, param, bool(detach_reset))
    out = x.dtype
    s = s.astype(out)
    if not (return_membrane or return_state):
        return s
    items = (s,)
    if return_membrane:
        items += (v.astype(out),)
    if return_state:
        items += (state.astype(out),)
    return items
