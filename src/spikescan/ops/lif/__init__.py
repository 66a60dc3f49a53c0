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

``"sequential"``  :func:`~spikescan.ops.lif.reference.lif_reference`, a Python loop over
                  :func:`lif_step`, the reference every fast backend is tested against;
                  autograd through the loop (double backward works).
``"fused"``       the time-fused kernels of :mod:`spikescan.ops.lif.fused` (numba on the CPU,
                  Triton on CUDA, ``torch.library`` custom ops that ``torch.compile`` traces): all ``T`` steps in one kernel forward and one reverse-time
                  kernel backward, keeping for the backward the input and a state checkpoint
                  every 32 steps (CPU; the membranes are recomputed per segment) or the
                  pre-reset membrane ``v`` (CUDA, 4 bytes per (t, neuron) in float32).
                  Built-in surrogates only (by ``kind``); float16/bfloat16 computed in float32;
                  no double backward.
``"auto"``        ``"fused"`` when the kernel can run ``x`` with this surrogate (a CPU with
                  numba or CUDA with Triton, a built-in surrogate), else ``"sequential"``.  No dependence on ``T``: the fused kernel
                  does the same arithmetic as the loop, in one pass, at every ``T``.

Backends are registered in :mod:`spikescan.ops._backend` (``spikescan.ops.backends("lif")``).
A backend receives validated arguments and returns ``(s, v, v_post_last)`` with ``s``, ``v``
shaped like ``x`` and ``v_post_last`` shaped ``x.shape[1:]``, all in ``x.dtype``, and must give
the same values and gradients (to tolerance) as the sequential reference, ``H(0) = 1``
included.  With ``need_membrane=False`` (the caller will drop ``v``) a backend may skip writing
``v``.  Under ``torch.autocast`` the result has the autocast dtype (state is float32 inside).
"""

from __future__ import annotations

from torch import Tensor

from ... import defaults as _defaults
from ... import surrogate as _surrogate
from ..._checks import check_choice, check_finite, check_time_first
from .._backend import fused_unsupported, register, register_auto, resolve
from .._params import check_v_reset, output_dtype, param
from .fused import lif_fused as _lif_fused_backend
from .reference import LIFParameters, LIFStep, lif_reference, lif_step

__all__ = ["lif", "lif_fused", "lif_step", "lif_reference", "LIFParameters", "LIFStep", "RESETS"]

RESETS = ("subtract", "zero")


register("lif", "sequential", description="Python loop over lif_step (the reference; double backward)")(
    lif_reference)
register("lif", "fused", unsupported=fused_unsupported,
         description="time-fused kernel, one pass each way (numba CPU / Triton CUDA)")(_lif_fused_backend)
# The fused kernel does the loop's arithmetic in one pass at every T: no dependence on T.
register_auto("lif", lambda x, **context: ("fused", "sequential"))


def lif(x: Tensor, decay, threshold=_defaults.THRESHOLD, *, reset: str = _defaults.RESET,
        v_reset=_defaults.V_RESET, surrogate=None, v0=None, detach_reset: bool = _defaults.DETACH_RESET,
        backend: str = "auto", return_membrane: bool = False,
        return_state: bool = False, check: bool | None = None):
    """Run an exact LIF neuron with reset over the whole sequence ``x`` (see the module docstring).

    Defaults (:mod:`spikescan.defaults`, shared with :class:`spikescan.nn.LIF`): threshold 1,
    ``reset="zero"`` to 0, the reset's spike not detached, ``FastSigmoid(25)``.

    Args:
        x: input current, floating tensor ``[T, B, ...]`` (any ``[T, *rest]`` with ``T >= 1``).
        decay: membrane decay factor in ``[0, 1]`` (``exp(-dt/tau_mem)`` or ``1 - 1/tau``), a
            float or a tensor broadcastable to ``x.shape[1:]`` (per neuron); differentiable.
        threshold: firing threshold ``> 0``, float or tensor broadcastable to ``x.shape[1:]``;
            differentiable (through the surrogate and, for ``"subtract"``, the reset).
        reset: ``"zero"`` (default: hard reset to ``v_reset``) or ``"subtract"`` (``v - threshold*s``).
        v_reset: reset potential for ``reset="zero"``, float or tensor; must stay 0 with
            ``"subtract"``.
        surrogate: surrogate derivative of ``H`` (instance, name, or ``None`` for
            ``FastSigmoid(25)``); see :mod:`spikescan.surrogate`.
        v0: initial post-reset membrane ``v_post[-1]``, float or tensor broadcastable to
            ``x.shape[1:]`` (e.g. the ``state`` of a previous call); ``None`` means 0.
        detach_reset: detach the spike inside the reset term.
        backend: ``"auto"`` (default: ``"fused"`` where the kernel supports ``x``'s device and
            the surrogate, else ``"sequential"``), ``"fused"`` or ``"sequential"``; see the
            module docstring.  A named backend that cannot run the call is an error.
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
    check_choice(reset, "reset", RESETS)
    surrogate = _surrogate.get(surrogate)
    impl = resolve("lif", backend, x, surrogate=surrogate).fn  # before the data checks touch x's device
    check_finite(x, "x", check)
    decay = param(decay, "decay", x, low=0.0, high=1.0)
    threshold = param(threshold, "threshold", x, low=0.0, low_inclusive=False)
    v_reset_t = param(v_reset, "v_reset", x)
    check_v_reset(reset, v_reset)  # after param: v_reset is a number or a floating tensor
    v_reset = v_reset_t
    if v0 is not None:
        v0 = param(v0, "v0", x)  # always checked finite, like the other parameters

    out_dtype = output_dtype(x)
    s, v, state = impl(x, decay, threshold, v_reset, v0, reset=reset, surrogate=surrogate,
                       detach_reset=bool(detach_reset), need_membrane=bool(return_membrane))
    if out_dtype != x.dtype:
        s, v, state = s.to(out_dtype), v.to(out_dtype), state.to(out_dtype)

    if not (return_membrane or return_state):
        return s
    out = (s,)
    if return_membrane:
        out += (v,)
    if return_state:
        out += (state,)
    return out


def lif_fused(x: Tensor, decay, threshold=1.0, **kwargs):
    """:func:`lif` with ``backend="fused"`` (same arguments but ``backend``)."""
    if "backend" in kwargs:
        raise TypeError("lif_fused() got an unexpected keyword argument 'backend'")
    return lif(x, decay, threshold, backend="fused", **kwargs)
