"""The JAX modules to and from the torch side and NIR, through :mod:`spikescan.export`'s one graph.

:func:`to_torch` copies a :class:`spikescan.jax.nn.SNN` (or one layer) into the equivalent
:mod:`spikescan.nn` modules -- same constructor arguments, the learned parameters copied
(``nnx.Linear``'s ``kernel [in, out]`` is ``torch.nn.Linear``'s ``weight.T``) -- and
:func:`from_torch` the other way.  The NIR functions are those two around
:func:`spikescan.export.to_nir` / :func:`~spikescan.export.from_nir`, so both sides export the
same graph (the mapping of a layer to NIR's ODE constants is written once, there) and a model
trained in JAX runs in torch and vice versa.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from .. import export as _export
from .. import nn as tnn
from . import nn as jnn

__all__ = ["to_torch", "from_torch", "to_nir", "from_nir", "write", "read"]


def _np(a):
    return np.asarray(a[...] if isinstance(a, nnx.Variable) else a)


def _layers(model):
    if isinstance(model, jnn.SNN):
        return list(model.layers)
    if hasattr(model, "model") and isinstance(model.model, jnn.SNN):  # snn_wrapper's result
        return list(model.model.layers)
    return [model]


def _copy_decay_to_torch(src, dst, dtype) -> None:
    if isinstance(src, jnn.SigmoidDecay):
        dst.w = torch.nn.Parameter(torch.tensor(_np(src.w), dtype=dtype))
    elif src.learn:
        dst.learn = True  # a NIR import learns the synaptic decay too
        dst.log_tau = torch.nn.Parameter(torch.tensor(_np(src.log_tau), dtype=dtype))
        # a decay built from beta= computes beta ** (tau0 / tau) on both sides
        dst._beta = getattr(src, "beta", None)
        if dst._beta is not None:
            dst._log_tau0 = src.log_tau0
    else:
        dst._value, dst._tau = src.value, src.tau  # the fixed decay exactly (a beta= one is not exp(-dt/tau))


def _tau(decay) -> float | None:
    return None if decay is None else decay.tau


def _layer_to_torch(layer, i: int, dtype):
    if isinstance(layer, nnx.Linear):
        kernel = _np(layer.kernel)
        out = torch.nn.Linear(kernel.shape[0], kernel.shape[1], bias=layer.bias is not None)
        with torch.no_grad():
            out.weight.copy_(torch.tensor(kernel.T))
            if layer.bias is not None:
                out.bias.copy_(torch.tensor(_np(layer.bias)))
        return out.to(dtype)
    if isinstance(layer, nnx.Dropout):
        return torch.nn.Dropout(layer.rate)
    if isinstance(layer, jnn.Threshold):
        raise ValueError(f"layer {i} (Threshold) is an imported, deployed SPSN; export the SPSN itself with "
                         "spsn='threshold'")
    if isinstance(layer, jnn.LIF):  # PLIF included
        cls = tnn.PLIF if isinstance(layer, jnn.PLIF) else tnn.LIF
        learn_tau = isinstance(layer.mem, jnn.Decay) and layer.mem.learn
        learn_th = isinstance(layer.threshold, nnx.Param)
        th0 = float(_np(layer.threshold).reshape(-1)[0]) if learn_th else layer.threshold
        out = cls(layer.features, tau_syn=_tau(layer.syn), tau_mem=layer.mem.tau, dt=layer.mem.dt, threshold=th0,
                  reset=layer.reset, v_reset=layer.v_reset, surrogate=layer.surrogate,
                  detach_reset=layer.detach_reset, learn_tau=learn_tau, learn_threshold=learn_th,
                  input_scale=layer.input_scale).to(dtype)
        _copy_decay_to_torch(layer.mem, out.mem, dtype)
        if layer.syn is not None:
            _copy_decay_to_torch(layer.syn, out.syn, dtype)
        if learn_th:
            out.threshold = torch.nn.Parameter(torch.tensor(_np(layer.threshold), dtype=dtype))
        return out
    if isinstance(layer, (jnn.LI, jnn.SPSN)):
        learn = layer.mem.learn
        if isinstance(layer, jnn.LI):
            out = tnn.LI(layer.features, tau_syn=_tau(layer.syn), tau_mem=layer.mem.tau, dt=layer.mem.dt,
                         learn_tau=learn, input_scale=layer.input_scale)
        else:
            out = tnn.SPSN(layer.features, tau_syn=_tau(layer.syn), tau_mem=layer.mem.tau, dt=layer.mem.dt,
                           firing=layer.firing, learn_tau=learn, gs_tau=layer.gs_tau, logit_scale=layer.logit_scale)
        out = out.to(dtype)
        for name in ("syn", "mem"):
            if getattr(layer, name) is not None:
                _copy_decay_to_torch(getattr(layer, name), getattr(out, name), dtype)
        return out
    raise ValueError(f"layer {i} ({type(layer).__name__}) has no torch counterpart; supported: nnx.Linear, "
                     "nnx.Dropout, LIF, PLIF, LI, SPSN")


def to_torch(model, *, dtype=torch.float32) -> torch.nn.Sequential:
    """The :mod:`spikescan.nn` network computing what the JAX ``model`` computes (parameters copied)."""
    return torch.nn.Sequential(*(_layer_to_torch(layer, i, dtype) for i, layer in enumerate(_layers(model))))


def _set_decay(dst, src) -> None:
    """Give the JAX decay ``dst`` the values of the torch decay ``src``."""
    if hasattr(src, "w"):  # SigmoidDecay
        dst.w = nnx.Param(jnp.asarray(src.w.detach().cpu().numpy()))
        return
    value = src()
    if isinstance(value, torch.Tensor):
        dst.learn = True
        dst.log_tau = nnx.Param(jnp.asarray(src.log_tau.detach().cpu().numpy()))
        # a decay built from beta= computes beta ** (tau0 / tau) on both sides
        dst.beta = getattr(src, "_beta", None)
        dst.log_tau0 = getattr(src, "_log_tau0", None) if dst.beta is not None else None
    else:
        dst.learn = False
        dst.value = float(value)
        dst.tau = -dst.dt / math.log(dst.value)


def _layer_from_torch(m, i: int, rngs):
    if isinstance(m, torch.nn.Linear):
        out = nnx.Linear(m.in_features, m.out_features, use_bias=m.bias is not None, rngs=nnx.Rngs(0))
        out.kernel = nnx.Param(jnp.asarray(m.weight.detach().cpu().numpy().T))
        if m.bias is not None:
            out.bias = nnx.Param(jnp.asarray(m.bias.detach().cpu().numpy()))
        return out
    if isinstance(m, torch.nn.Dropout):
        return nnx.Dropout(m.p, rngs=rngs if rngs is not None else nnx.Rngs(0))
    if isinstance(m, tnn.LIF) and not isinstance(m, getattr(tnn, "RLIF", ())):
        cls = jnn.PLIF if isinstance(m, tnn.PLIF) else jnn.LIF
        learn_th = isinstance(m.threshold, torch.Tensor)
        th = m.threshold.detach().cpu().numpy() if learn_th else float(m.threshold)
        # placeholder time constants: the decays' values are copied below; a torch PLIF keeps no dt
        # of its own (its decay is sigmoid(w)), so it takes its current stage's, else 1 ms
        dt = getattr(m.mem, "dt", None) or (m.syn.dt if m.syn is not None else 1e-3)
        out = cls(m.features, tau_syn=None if m.syn is None else 1.0, tau_mem=1.0, dt=dt,
                  threshold=float(np.reshape(th, -1)[0]), reset=m.reset, v_reset=m.v_reset, surrogate=m.surrogate,
                  detach_reset=m.detach_reset, learn_threshold=learn_th, input_scale=m.input_scale)
        if m.syn is not None:
            _set_decay(out.syn, m.syn)
        _set_decay(out.mem, m.mem)
        if learn_th:
            out.threshold = nnx.Param(jnp.asarray(th))
        return out
    if isinstance(m, (tnn.LI, tnn.SPSN)):
        dt = m.mem.dt
        tau_syn = None if m.syn is None else 1.0  # placeholder: the decays' values are copied below
        if isinstance(m, tnn.LI):
            out = jnn.LI(m.features, tau_syn=tau_syn, tau_mem=1.0, dt=dt, input_scale=m.input_scale)
        else:
            out = jnn.SPSN(m.features, tau_syn=tau_syn, tau_mem=1.0, dt=dt, firing=m.firing, gs_tau=m.gs_tau,
                           logit_scale=m.logit_scale, rngs=rngs)
        if m.syn is not None:
            _set_decay(out.syn, m.syn)
        _set_decay(out.mem, m.mem)
        return out
    if type(m).__name__ == "_Threshold" and hasattr(m, "threshold"):  # spikescan.export's imported Threshold
        return jnn.Threshold(m.threshold.detach().cpu().numpy())
    raise ValueError(f"layer {i} ({type(m).__name__}) has no JAX counterpart; supported: nn.Linear, nn.Dropout, "
                     "LIF, PLIF, LI, SPSN")


def from_torch(model: torch.nn.Module, *, rngs: nnx.Rngs | None = None) -> jnn.SNN:
    """The JAX :class:`~spikescan.jax.nn.SNN` computing what the torch chain ``model`` computes.

    ``rngs`` feeds the SPSN layers (and dropout) of the result; without it they need a ``key``
    at every call.
    """
    layers = list(model) if isinstance(model, torch.nn.Sequential) else [model]
    return jnn.SNN(*(_layer_from_torch(m, i, rngs) for i, m in enumerate(layers)))


def to_nir(model, **kwargs):
    """``spikescan.export.to_nir(to_torch(model), **kwargs)`` (e.g. ``spsn="threshold"``)."""
    return _export.to_nir(to_torch(model), **kwargs)


def from_nir(graph, *, dt: float | None = None, rngs: nnx.Rngs | None = None) -> jnn.SNN:
    """``from_torch(spikescan.export.from_nir(graph, dt=dt))``."""
    return from_torch(_export.from_nir(graph, dt=dt), rngs=rngs)


def write(path, model, **kwargs) -> None:
    """Write the JAX ``model`` as a NIR file (:func:`spikescan.export.write` of :func:`to_torch`)."""
    _export.write(path, to_torch(model), **kwargs)


def read(path, *, rngs: nnx.Rngs | None = None, **kwargs) -> jnn.SNN:
    """Read a NIR file into JAX modules (:func:`spikescan.export.read`, then :func:`from_torch`)."""
    return from_torch(_export.read(path, **kwargs), rngs=rngs)
