"""Leaky integration in JAX: ``u[t] = decay * u[t-1] + scale * x[t]``, ``u[-1] = v0`` (default 0).

The linear recurrence of :func:`spikescan.ops.scan.leaky_integrate` (SPSN paper eq. 8-15; the
leaky half of the LIF of the temporal-parallelization paper, eq. 1, without the reset), with the
same argument names.  Two backends:

``"sequential"``   ``jax.lax.scan`` over ``t``, the recurrence as written: the reference.
``"associative"``  ``jax.lax.associative_scan`` over the affine maps ``u -> a*u + b``, composed
                   as ``(a1, b1) then (a2, b2) = (a2*a1, a2*b1 + b2)``: depth ``O(log T)``, work
                   ``O(T)``; the parallel form for accelerators.  It forms products of at most
                   ``T`` decays, never a division or a negative power, so decays 0 and 1 are
                   exact.
``"auto"``         ``"sequential"`` on the CPU (where the tree form, which streams its
                   ``[T, ...]`` operands through memory once per level, measured slower: see
                   the README), ``"associative"`` on other devices (not measured).

Gradients (to ``x``, ``decay``, ``scale``, ``v0``) are JAX's own differentiation of each form.
Rounding: each output of ``"sequential"`` carries at most ``2(t+1)`` roundings of the terms it
sums, ``"associative"`` about ``4 log2(T)``; both are compared with the float64 recurrence in
``tests/jax/test_scan.py`` with that bound.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _checks as C

__all__ = ["leaky_integrate", "li", "BACKENDS"]

BACKENDS = ("auto", "sequential", "associative")


def _full(a, shape):
    return jnp.broadcast_to(a, shape)


def _sequential(y, decay, v0):
    def step(u, y_t):
        u = decay * u + y_t
        return u, u

    init = jnp.zeros(y.shape[1:], y.dtype) if v0 is None else _full(v0, y.shape[1:])
    return jax.lax.scan(step, init, y)[1]


def _combine(left, right):
    a1, b1 = left
    a2, b2 = right
    return a2 * a1, a2 * b1 + b2


def _associative(y, decay, v0):
    if v0 is not None:
        y = y.at[0].add(decay * v0)
    a = _full(decay, y.shape)
    return jax.lax.associative_scan(_combine, (a, y), axis=0)[1]


def _auto(x) -> str:
    try:
        platform = list(x.devices())[0].platform
    except Exception:  # a tracer: the default device decides
        platform = jax.default_backend()
    return "sequential" if platform == "cpu" else "associative"


def leaky_integrate(x, decay, *, scale=1.0, v0=None, backend: str = "auto"):
    """Leaky integration over time of ``x [T, ...]``: ``u[t] = decay * u[t-1] + scale * x[t]``.

    Args:
        x: floating array ``[T, ...]`` (time first, ``T >= 1``); half types computed in float32.
        decay: float or array broadcastable to ``x.shape[1:]``, values in ``[0, 1]``.
        scale: float or array broadcastable to ``x.shape[1:]`` (multiplies ``x`` first, as on
            the torch side: ``y = x * scale``, then the recurrence on ``y``).
        v0: initial state ``u[-1]``, None (zero) or float / array broadcastable to ``x.shape[1:]``.
        backend: ``"auto"``, ``"sequential"`` (``lax.scan``) or ``"associative"``
            (``lax.associative_scan``); see the module docstring.

    Returns ``u`` with the shape and dtype of ``x``.
    """
    x = C.time_first(x, "x")
    C.choice(backend, "backend", BACKENDS)
    d = C.param(decay, "decay", x, low=0.0, high=1.0)
    unit = isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale == 1
    s = None if unit else C.param(scale, "scale", x)
    v = None if v0 is None else C.param(v0, "v0", x)
    y = x.astype(C.compute_dtype(x.dtype))
    if s is not None:
        y = y * s
    name = _auto(x) if backend == "auto" else backend
    u = (_sequential if name == "sequential" else _associative)(y, d, v)
    return u.astype(x.dtype)


def li(x, decay_mem, decay_syn=None, *, backend: str = "auto"):
    """The LI readout (SPSN eq. 5, 7; :class:`spikescan.nn.LI`): ``u`` of

        i[t] = decay_syn * i[t-1] + x[t]          (i = x when decay_syn is None)
        u[t] = decay_mem * u[t-1] + (1 - decay_mem) * i[t]

    as two :func:`leaky_integrate` calls.  Returns ``u`` with the shape and dtype of ``x``.
    """
    x = C.time_first(x, "x")
    current = x if decay_syn is None else leaky_integrate(x, decay_syn, backend=backend)
    return leaky_integrate(current, decay_mem, scale=1.0 - decay_mem, backend=backend)
