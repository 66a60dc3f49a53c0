"""Neuron states: what a module carries from one call to the next.

Every neuron module takes the whole sequence ``x`` ``[T, B, *, features]`` and, optionally, the
state the previous call ended in::

    s, state = layer(x[:100], return_state=True)          # steps 0 .. 99
    s2, state = layer(x[100:], state, return_state=True)  # steps 100 .., continuing exactly

A sequence split anywhere into chunks and fed with the carried state gives the spikes of the
whole sequence bit for bit (on the recurrence backends: ``"sequential"`` and ``"fused"``; the
parallel scans ``"fft"`` / ``"chunked"`` agree to rounding), and, because the state keeps its
autograd history, the gradients of the whole sequence (``state`` detached: truncated BPTT).
``layer.step(x_t, state) -> (out_t, state)`` is the same for one step ``x_t`` ``[B, *, features]``.

Each neuron's state is a small ``NamedTuple`` of tensors shaped like one time step
(``[B, *, features]``; a field given by the user may be anything broadcastable to it), in the
compute dtype (float32 for float16/bfloat16 input, else ``x.dtype``) so that a chunk continues
from exactly the numbers the whole sequence would have.  ``state=None`` is the rest state
(all zeros; SPSN: a fresh seed).  Units: currents in units of the input ``x``, membranes in
units of the threshold (the same numbers the layer compares with its threshold).  A state is
data, like ``x``: its fields are checked for shape, device and dtype, their NaN/Inf scan runs in
debug mode (:func:`spikescan._checks.debug_mode`).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .._checks import as_param_tensor, check_finite, compute_dtype

__all__ = ["LIFState", "RLIFState", "LIState", "SPSNState", "PSUState", "SingleSpikeState", "MaxMembraneState"]


class LIFState(NamedTuple):
    """State of :class:`~spikescan.nn.LIF` / :class:`~spikescan.nn.PLIF` after step ``t``.

    Attributes:
        i: synaptic current ``i[t]`` (units of ``x``); ``None`` when the layer has no synaptic
            stage (``tau_syn=None``).
        v: post-reset membrane ``v'[t]`` (units of the threshold): the ``v0`` of
            :func:`spikescan.ops.lif.lif`, where step ``t + 1`` starts from.
    """

    i: Optional[Tensor]
    v: Tensor


class RLIFState(NamedTuple):
    """State of :class:`~spikescan.nn.RLIF` after step ``t``.

    Attributes:
        i: synaptic current ``i[t]`` (units of ``x``); ``None`` without a synaptic stage.
        v: post-reset membrane ``v'[t]`` (units of the threshold).
        s: spikes ``s[t]`` (0/1), fed back through ``W_rec`` into the current of step ``t + 1``.
    """

    i: Optional[Tensor]
    v: Tensor
    s: Tensor


class LIState(NamedTuple):
    """State of :class:`~spikescan.nn.LI` after step ``t``.

    Attributes:
        i: synaptic current ``i[t]`` (units of ``x``); ``None`` without a synaptic stage.
        u: membrane ``u[t]`` (the layer's output).
    """

    i: Optional[Tensor]
    u: Tensor


class SPSNState(NamedTuple):
    """State of :class:`~spikescan.nn.SPSN` after step ``t``.

    Attributes:
        i: synaptic current ``i[t]`` (units of ``x``; ``x[t]`` itself when ``tau_syn=None``).
        u: membrane ``u[t]`` (the logit of the firing probability, up to ``logit_scale``).
        seed: the 0-dim int64 seed of the sequence's noise, drawn once at its first step.
        t: 0-dim int64, the number of steps run so far (the absolute index of the next step).
            The uniform of step ``t``, neuron ``n`` is a hash of ``(seed, t, n)``, so the chunks
            of a sequence draw exactly the noise of the whole.
    """

    i: Tensor
    u: Tensor
    seed: Tensor
    t: Tensor


class PSUState(NamedTuple):
    """State of :class:`~spikescan.nn.PSU` after step ``t`` (the two leaky sums of its causal operators).

    Attributes:
        h: ``(P x)[t]``, the leaky sum of the input (``H = scale * h``; units of ``x``).
        q: ``(P sigmoid(H))[t]``, the leaky sum of the spike estimates, from which the reset term
            of step ``t + 1`` is ``-decay * q`` (dimensionless: a spike count).
    """

    h: Tensor
    q: Tensor


class SingleSpikeState(NamedTuple):
    """State of :class:`~spikescan.nn.SingleSpikeLIF` after step ``t``.

    Attributes:
        v: the no-reset membrane ``V~[t]`` (units of the threshold).
        count: ``sum_{m<=t} S~[m]``, how many steps so far had ``V~ >= threshold`` (0 until the
            neuron's one spike); carries the surrogate gradient of those steps.
        phi: ``phi(S~)[t] = sum_{m<=t} count[m]`` (FastSNN Proposition 1): 0 before the spike,
            1 at it, >= 2 after.  The neuron has fired iff ``count > 0``.
    """

    v: Tensor
    count: Tensor
    phi: Tensor


class MaxMembraneState(NamedTuple):
    """State of :class:`~spikescan.nn.MaxMembraneReadout` after step ``t``.

    Attributes:
        v: the membrane ``V[t]``.
        vmax: ``max_{m<=t} V[m]``, the logits so far.
    """

    v: Tensor
    vmax: Tensor


def check_state(module, state, cls):
    """``state`` if it is ``None`` or a ``cls``; otherwise a ``TypeError`` naming what was expected."""
    if state is None or isinstance(state, cls):
        return state
    raise TypeError(f"{type(module).__name__}'s state must be a spikescan.nn.{cls.__name__} (what a call with "
                    f"return_state=True returns) or None, got {type(state).__name__}")


def state_tensor(value, label: str, x: Tensor) -> Tensor:
    """One field of a state (``label``: its name in messages, e.g. ``"state.v"``), validated
    against the sequence ``x`` ``[T, *rest]``: a number or a floating tensor broadcastable to
    ``rest``, on ``x``'s device, finite; in the compute dtype, its autograd history kept
    (gradients reach the previous chunk).

    A state is data, like ``x``: a tensor already shaped ``rest`` on ``x``'s device in the
    compute dtype (what a previous call returned) is scanned for NaN/Inf only in debug mode,
    as ``x`` is, so that a step costs no reduction and no host sync per field."""
    dtype = compute_dtype(x.dtype)
    if (isinstance(value, Tensor) and value.dtype == dtype and value.shape == x.shape[1:]
            and value.device == x.device):
        check_finite(value, label, always=True)
        return value
    return as_param_tensor(value, label, x, dtype=dtype, always=True).to(dtype)


_HERE = os.path.dirname(os.path.abspath(__file__))
_TORCH_MODULE = os.path.dirname(os.path.abspath(torch.nn.modules.module.__file__))


def _deprecated(message: str) -> None:
    """A ``DeprecationWarning`` attributed to the user's line: the first frame outside this
    package's ``nn`` and torch's ``Module.__call__``."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) in (_HERE, _TORCH_MODULE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DeprecationWarning, stacklevel=level + 1)


def legacy_state(module, state, v0, cls):
    """``(state, v0_label)`` for the LIF family: maps the pre-state ``v0`` (the second positional
    argument, or the keyword) onto ``cls(i=None, v=v0, ...)`` with a ``DeprecationWarning``;
    ``v0_label`` names the membrane in messages ("v0" when it came as ``v0``)."""
    name = type(module).__name__
    if state is not None and not isinstance(state, tuple):  # a v0 tensor or number in state's place
        if v0 is not None:
            raise TypeError(f"{name}.forward got v0 twice (positionally and by keyword)")
        state, v0 = None, state
    if v0 is None:
        return check_state(module, state, cls), "state.v"
    if state is not None:
        raise TypeError(f"{name}.forward takes state or v0 (deprecated), not both")
    _deprecated(f"{name}.forward(x, v0) is deprecated: pass state={cls.__name__}(i=None, v=v0"
                f"{', s=None' if 's' in cls._fields else ''}) (the state of a call with return_state=True)")
    return cls(None, v0, *(None,) * (len(cls._fields) - 2)), "v0"


def legacy_return_membrane(module, state, return_membrane: bool):
    """``(state, return_membrane)``: a bool in ``state``'s place is the pre-state positional
    ``return_membrane`` (mapped, with a ``DeprecationWarning``)."""
    if isinstance(state, bool):
        _deprecated(f"{type(module).__name__}.forward(x, return_membrane) is deprecated: the second positional "
                    f"argument is now the state; pass return_membrane={state} by keyword")
        return None, state or return_membrane
    return state, return_membrane


def pack(out: Tensor, dtype: torch.dtype, membrane: Optional[Tensor] = None, state=None):
    """``out`` alone, or ``(out, [membrane], [state])`` with the requested items; ``out`` and
    ``membrane`` in the input's ``dtype``, the state left in the compute dtype."""
    items = (out.to(dtype),)
    if membrane is not None:
        items += (membrane.to(dtype),)
    if state is not None:
        items += (state,)
    return items[0] if len(items) == 1 else items


def last(seq: Tensor) -> Tensor:
    """Step ``T - 1`` of a ``[T, ...]`` tensor, as its own tensor: a view would keep the whole
    sequence's storage alive for as long as the state is held."""
    return seq[-1].clone()
