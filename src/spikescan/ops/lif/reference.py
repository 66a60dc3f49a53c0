"""The exact LIF step and the sequential reference every LIF backend is tested against.

:func:`lif_step` is the one copy of the LIF equations (module docstring of
:mod:`spikescan.ops.lif`); the reference loop, the recurrent LIF (``nn.RLIF``) and the PSU
family's LIF stage all call it, so there is nothing to keep in sync.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ... import surrogate as _surrogate
from .._params import compute_dtype
from ..firing import heaviside_unchecked


class LIFParameters(NamedTuple):
    """Parameters of an exact LIF neuron, each a float or a tensor broadcastable to the per-step shape.

    Attributes:
        decay: membrane decay per step in ``[0, 1]`` (``exp(-dt / tau_mem)``; snnTorch's ``beta``).
        threshold: firing threshold ``> 0``.
        v_reset: potential after a spike with ``reset="zero"`` (0 with ``"subtract"``).
        reset: ``"subtract"`` (``v - threshold * s``) or ``"zero"`` (hard reset to ``v_reset``).
        surrogate: surrogate derivative of the Heaviside step (a :class:`spikescan.surrogate.Surrogate`).
        detach_reset: the spike inside the reset term carries no gradient.
    """

    decay: Tensor | float
    threshold: Tensor | float = 1.0
    v_reset: Tensor | float = 0.0
    reset: str = "subtract"
    surrogate: _surrogate.Surrogate = _surrogate.FastSigmoid(25.0)
    detach_reset: bool = False


class LIFStep(NamedTuple):
    """What one step returns: the spike ``s[t]``, the pre-reset membrane ``v[t]`` and the
    post-reset membrane ``v_post[t]`` (the state the next step starts from)."""

    spike: Tensor
    membrane: Tensor
    state: Tensor


def lif_step(x_t: Tensor, v_post: Tensor, p: LIFParameters) -> LIFStep:
    """One step of the exact LIF::

        v[t]      = decay * v_post[t-1] + x[t]
        s[t]      = H(v[t] - threshold)                   H(0) = 1, surrogate gradient
        v_post[t] = v[t] - threshold * s[t]               reset="subtract"
        v_post[t] = v[t] * (1 - s[t]) + v_reset * s[t]    reset="zero"

    No validation (callers validate once per sequence); autograd through every term.
    """
    v = p.decay * v_post + x_t
    s = heaviside_unchecked(v - p.threshold, p.surrogate)
    s_reset = s.detach() if p.detach_reset else s
    if p.reset == "subtract":
        v_post = v - p.threshold * s_reset
    else:
        v_post = v * (1.0 - s_reset) + p.v_reset * s_reset
    return LIFStep(s, v, v_post)


def lif_reference(x: Tensor, decay: Tensor, threshold: Tensor, v_reset: Tensor, v0: Tensor | None, *,
                  reset: str, surrogate: _surrogate.Surrogate, detach_reset: bool, need_membrane: bool = True):
    """The ``"sequential"`` backend: :func:`lif_step` once per time step, autograd through the loop.

    Arguments validated by :func:`spikescan.ops.lif.lif`; returns ``(s, v, v_post[T-1])`` in
    ``x.dtype`` (``need_membrane`` is ignored: the membranes are graph nodes of the loop anyway).
    Double backward works.
    """
    dtype = compute_dtype(x.dtype)
    p = LIFParameters(decay.to(dtype), threshold.to(dtype), v_reset.to(dtype), reset, surrogate, detach_reset)
    v_post = x.new_zeros((), dtype=dtype) if v0 is None else v0.to(dtype)
    spikes, membrane = [], []
    # unbind, not x[t]: the backward of T separate index ops accumulates T full-size zero-padded
    # gradients, which makes BPTT quadratic in T.
    for x_t in x.to(dtype).unbind(0):
        s, v, v_post = lif_step(x_t, v_post, p)
        spikes.append(s)
        membrane.append(v)
    out = x.dtype
    return torch.stack(spikes).to(out), torch.stack(membrane).to(out), v_post.to(out)
