"""Exact leaky integrate-and-fire neuron with reset, over a whole sequence.

For every time step ``t = 0 .. T-1`` (input current ``x`` laid out ``[T, B, ...]``)::

    v[t]      = decay * v_post[t-1] + x[t]              v_post[-1] = v0 (default 0)
    s[t]      = H(v[t] - threshold)                     H(0) = 1, surrogate derivative in backward
    v_post[t] = v[t] - threshold * s[t]                 reset="subtract" (soft reset)
    v_post[t] = v[t] * (1 - s[t]) + v_reset * s[t]      reset="zero"     (hard reset to v_reset)

``v`` is the membrane *before* the reset; the reset acts at the step of the spike, so the next
step starts from ``v_post``.  With ``detach_reset=True`` the ``s[t]`` inside the reset is
detached (gradient flows only through ``H``'s surrogate, not through the reset path).

Relation to the papers:

- SPSN (eq. 5-6) LIF baseline: ``i[n] = alpha*i[n-1] + x[n]`` (a linear scan, computed
  elsewhere), then this function with ``x = (1 - beta) * i``, ``decay = beta``,
  ``threshold = 1``, ``reset="zero"``, ``v_reset = 0``, ``detach_reset=True`` and surrogate
  ``FastSigmoid(slope=100)`` (= ``1/(100|u|+1)^2``) is what the authors' code runs.  Eq. 6
  read literally, ``u[n+1] = (beta*u[n] + (1-beta)*i[n+1]) * (1 - s[n])``, would also discard
  the input arriving the step after a spike; the code (and this function) resets at the spike
  step and keeps that input.
- Temporal-parallelization paper (eq. 1-2): ``v[t] = k*v[t-1]*(1 - x[t-1]) + V_rest*x[t-1] +
  I[t]``, ``x[t] = H(v[t] - V_th)``.  This is ``reset="zero"`` with ``decay = k`` and
  ``v_reset = V_rest / k`` (here ``v_reset`` decays with the membrane, there it does not), so
  the two are identical for ``V_rest = 0``, the value of their benchmark (k = 0.2, V_th = 0.3).

Backends (``backend=``):

``"sequential"``  this file's Python loop, the reference every fast backend is tested against;
                  autograd through the loop (double backward works).
``"fused"``       the time-fused kernels of :mod:`spikescan.ops.fused` (numba on the CPU,
                  Triton on CUDA): all ``T`` steps in one kernel forward and one reverse-time
                  kernel backward, keeping for the backward the input and a state checkpoint
                  every 32 steps (CPU; the membranes are recomputed per segment) or the
                  pre-reset membrane ``v`` (CUDA, 4 bytes per (t, neuron) in float32).
                  Built-in surrogates only (by ``kind``); float16/bfloat16 computed in float32;
                  no double backward.
``"auto"``        ``"fused"`` when :func:`spikescan.ops.fused.supports_lif` says the kernel can
                  run ``x`` with this surrogate (a CPU with numba or CUDA with Triton, a built-in
                  surrogate), else ``"sequential"``.  No dependence on ``T``: the fused kernel
                  does the same arithmetic as the loop, in one pass, at every ``T``.

A backend is a function in :data:`_BACKENDS` with the signature of :func:`_lif_sequential`; it
receives validated arguments and returns ``(s, v, v_post_last)`` with ``s``, ``v`` shaped like
``x`` and ``v_post_last`` shaped ``x.shape[1:]``, all in ``x.dtype``, and must give the same
values and gradients (to tolerance) as the sequential reference, ``H(0) = 1`` included.  With
``need_membrane=False`` (the caller will drop ``v``) a backend may skip writing ``v``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .. import surrogate as _surrogate
from .._checks import as_param_tensor, check_choice, check_finite, check_time_first, compute_dtype
from .firing import _Heaviside

__all__ = ["lif"]

_RESETS = ("subtract", "zero")


def _lif_sequential(x: Tensor, decay: Tensor, threshold: Tensor, v_reset: Tensor, v0: Tensor | None, *,
                    reset: str, surrogate: _surrogate.Surrogate, detach_reset: bool, need_membrane: bool = True):
    """Reference: one Python step per time step, autograd through the whole loop.

    ``need_membrane`` is ignored: the membranes are graph nodes of the loop anyway.
    """
    dtype = compute_dtype(x.dtype)
    xs = x.to(dtype)
    decay, threshold, v_reset = decay.to(dtype), threshold.to(dtype), v_reset.to(dtype)
    v_post = xs.new_zeros(()) if v0 is None else v0.to(dtype)
    spikes, membrane = [], []
    # unbind, not xs[t]: the backward of T separate index ops accumulates T full-size zero-padded
    # gradients, which makes BPTT quadratic in T.
    for x_t in xs.unbind(0):
        v = decay * v_post + x_t
        s = _Heaviside.apply(v - threshold, surrogate)
        s_reset = s.detach() if detach_reset else s
        if reset == "subtract":
            v_post = v - threshold * s_reset
        else:
            v_post = v * (1.0 - s_reset) + v_reset * s_reset
        spikes.append(s)
        membrane.append(v)
    out = x.dtype
    return torch.stack(spikes).to(out), torch.stack(membrane).to(out), v_post.to(out)


def _lif_fused(x: Tensor, decay: Tensor, threshold: Tensor, v_reset: Tensor, v0: Tensor | None, *,
               reset: str, surrogate: _surrogate.Surrogate, detach_reset: bool, need_membrane: bool = True):
    """The time-fused kernel (:func:`spikescan.ops.fused.lif_backend`), imported on first use."""
    from .fused import lif_backend

    return lif_backend(x, decay, threshold, v_reset, v0, reset=reset, surrogate=surrogate,
                       detach_reset=detach_reset, need_membrane=need_membrane)


_BACKENDS: dict[str, Callable] = {"sequential": _lif_sequential, "fused": _lif_fused}


def _check_v_reset(reset: str, v_reset) -> None:
    """``v_reset`` must be 0 with ``reset="subtract"`` (a Python number is checked without a device sync)."""
    if reset != "subtract":
        return
    if isinstance(v_reset, torch.Tensor):
        nonzero = bool((v_reset.detach() != 0).any())
    else:
        nonzero = v_reset != 0
    if nonzero:
        raise ValueError("v_reset is used only with reset='zero'; with reset='subtract' leave it at 0")


def _fused_unsupported(x: Tensor, surrogate: _surrogate.Surrogate) -> str | None:
    """Why the fused kernel cannot run ``x`` with ``surrogate``, or ``None`` when it can."""
    from . import fused
    from ._kernels._common import SURROGATE_CODES

    if not fused.is_available(x.device):
        if x.device.type == "cpu":
            need = "numba (pip install numba)"
        elif x.device.type == "cuda":
            need = "triton and a visible CUDA device"
        else:
            need = "a CPU (numba) or CUDA (Triton) tensor"
        return f"the fused kernels cannot run on {x.device}: they need {need}"
    kind = getattr(surrogate, "kind", "")
    if kind not in SURROGATE_CODES:
        return (f"the fused kernels implement only the built-in surrogates {sorted(SURROGATE_CODES)}, "
                f"got {type(surrogate).__name__} (kind {kind!r})")
    return None


def _resolve_backend(backend: str, x: Tensor, surrogate: _surrogate.Surrogate) -> str:
    check_choice(backend, "backend", set(_BACKENDS) | {"auto"})
    if backend in ("auto", "fused"):
        reason = _fused_unsupported(x, surrogate)
        if backend == "auto":
            return "fused" if reason is None else "sequential"
        if reason is not None:
            raise ValueError(f"backend='fused' is not available here: {reason}; use backend='sequential' "
                             f"(or 'auto', which falls back to it)")
    return backend


def _param(value, name: str, x: Tensor, **bounds) -> Tensor:
    """Validated parameter; a Python number is built in the compute dtype (0.999 must not round to float16)."""
    t = as_param_tensor(value, name, x, dtype=compute_dtype(x.dtype), **bounds)
    if torch.broadcast_shapes(t.shape, x.shape[1:]) != x.shape[1:]:
        raise ValueError(
            f"{name} of shape {tuple(t.shape)} would enlarge the per-step shape {tuple(x.shape[1:])} "
            f"of the input; it must broadcast to it"
        )
    return t


def lif(x: Tensor, decay, threshold=1.0, *, reset: str = "subtract", v_reset=0.0, surrogate=None,
        v0=None, detach_reset: bool = False, backend: str = "auto", return_membrane: bool = False,
        return_state: bool = False, check: bool | None = None):
    """Run an exact LIF neuron with reset over the whole sequence ``x`` (see the module docstring).

    Args:
        x: input current, floating tensor ``[T, B, ...]`` (any ``[T, *rest]`` with ``T >= 1``).
        decay: membrane decay factor in ``[0, 1]`` (``exp(-dt/tau_mem)`` or ``1 - 1/tau``), a
            float or a tensor broadcastable to ``x.shape[1:]`` (per neuron); differentiable.
        threshold: firing threshold ``> 0``, float or tensor broadcastable to ``x.shape[1:]``;
            differentiable (through the surrogate and, for ``"subtract"``, the reset).
        reset: ``"subtract"`` (``v - threshold*s``) or ``"zero"`` (hard reset to ``v_reset``).
        v_reset: reset potential for ``reset="zero"``, float or tensor; must stay 0 with
            ``"subtract"``.
        surrogate: surrogate derivative of ``H`` (instance, name, or ``None`` for
            ``FastSigmoid(25)``); see :mod:`spikescan.surrogate`.
        v0: initial post-reset membrane ``v_post[-1]``, float or tensor broadcastable to
            ``x.shape[1:]`` (e.g. the ``state`` of a previous call); ``None`` means 0.
        detach_reset: detach the spike inside the reset term.
        backend: ``"auto"`` (default: ``"fused"`` where the kernel supports ``x``'s device and
            the surrogate, else ``"sequential"``), ``"fused"`` or ``"sequential"``; see the
            module docstring.
        return_membrane: also return the pre-reset membrane ``v`` ``[T, ...]`` (the quantity
            the fused kernels store for backward; spikes are ``v >= threshold``).
        return_state: also return the final post-reset membrane ``v_post[T-1]``
            (``x.shape[1:]``), to continue the sequence with ``v0=state`` (streaming,
            truncated BPTT).  It carries gradient; detach it to truncate.
        check: scan ``x`` for NaN/Inf (default: only in debug mode; the parameters and ``v0``
            are always checked).

    Returns:
        ``s`` (spikes, 0/1, shape and dtype of ``x``) alone, or the tuple of the requested items
        in the order ``(s, v, state)``.
    """
    check_time_first(x, "x")
    check_choice(reset, "reset", _RESETS)
    surrogate = _surrogate.get(surrogate)
    fn = _BACKENDS[_resolve_backend(backend, x, surrogate)]  # before the data checks touch x's device
    check_finite(x, "x", check)
    decay = _param(decay, "decay", x, low=0.0, high=1.0)
    threshold = _param(threshold, "threshold", x, low=0.0, low_inclusive=False)
    v_reset_t = _param(v_reset, "v_reset", x)
    _check_v_reset(reset, v_reset)  # after _param: v_reset is a number or a floating tensor
    v_reset = v_reset_t
    if v0 is not None:
        v0 = _param(v0, "v0", x)  # always checked finite, like the other parameters

    s, v, state = fn(x, decay, threshold, v_reset, v0, reset=reset, surrogate=surrogate,
                     detach_reset=bool(detach_reset), need_membrane=bool(return_membrane))

    if not (return_membrane or return_state):
        return s
    out = (s,)
    if return_membrane:
        out += (v,)
    if return_state:
        out += (state,)
    return out
