"""Export to and import from the Neuromorphic Intermediate Representation (NIR).

NIR (Pedersen et al., "Neuromorphic intermediate representation: a unified instruction set for
interoperable brain-inspired computing", Nature Communications 2024) describes neurons by
continuous-time ODEs.  Our layers are the forward-Euler discretisations of those ODEs with step
``dt``, so a layer maps to a NIR node whose constants reproduce our update *exactly* when a
simulator integrates the node with forward Euler at the same ``dt`` (stored in the graph's
metadata as ``"dt"``)::

    NIR CubaLIF / CubaLI                     Euler step dt                 spikescan LIF / LI
    tau_syn I' = -I + w_in S            I[t] = (1 - dt/tau_syn) I + dt/tau_syn w_in S[t]    i[t] = a i[t-1] + x[t]
    tau_mem v' = (v_leak - v) + R I     v[t] = (1 - dt/tau_mem) v + dt/tau_mem R I[t]       v[t] = b v[t-1] + c i[t]

hence ``tau_syn = dt / (1 - a)``, ``w_in = tau_syn / dt``, ``tau_mem = dt / (1 - b)``,
``R = c * tau_mem / dt`` (``c = 1 - b`` for the default ``input_scale``: ``R = 1``),
``v_leak = 0``.  ``a``, ``b`` are our per-step decays ``exp(-dt/tau)``; NIR's time constants are
therefore the Euler-equivalent ones, not the ``tau`` our modules were built with (the two agree
to first order in ``dt/tau``).  A LIF without a synaptic stage exports as NIR ``LIF``.

What is exported: ``nn.Sequential`` chains (nested ones are flattened) of ``nn.Linear``
(``Affine``, or ``Linear`` without bias), :class:`~spikescan.nn.LIF` / ``PLIF`` with
``reset="zero"`` (NIR has no subtract reset), :class:`~spikescan.nn.LI`, ``nn.Dropout``
(identity at inference, dropped); and, only when asked
(``spsn="threshold"``), :class:`~spikescan.nn.SPSN` as a ``CubaLI`` followed by
``Threshold(0)``: the deterministic firing ``s = H(u)`` that fires exactly when the SPSN's
firing probability ``sigmoid(u)`` exceeds 1/2 -- neuromorphic hardware does not sample
Bernoulli spikes, so a stochastic network is deployed by its most likely spikes.  Anything else
raises ``ValueError`` naming the layer.

Spike condition: we fire at ``v >= threshold``, NIR writes ``v > threshold``; the two differ only
on exact ties.  :func:`from_nir` rebuilds our modules from such a graph (chains only).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..nn.leaky import LI, LIF, PLIF
from ..nn.spsn import SPSN

__all__ = ["to_nir", "from_nir", "write", "read"]


def _nir():
    try:
        import nir
    except ImportError as exc:  # optional extra
        raise ImportError("NIR export needs the 'nir' package: pip install 'spikescan[nir]'") from exc
    return nir


def _flatten(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if isinstance(model, nn.Sequential):
        out = []
        for name, child in model.named_children():
            out += [(f"{name}.{n}" if n else name, m) for n, m in _flatten(child)]
        return out
    return [("", model)]


def _array(value, features: int) -> np.ndarray:
    """A per-neuron float32 array from a float, 0-d or ``[features]`` tensor."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (features,)).astype(np.float32)


def _decay_dt(decay_module) -> float | None:
    return getattr(decay_module, "dt", None)


def _infer_dt(layers) -> float:
    dts = set()
    for _, m in layers:
        for sub in (getattr(m, "syn", None), getattr(m, "mem", None)):
            dt = _decay_dt(sub) if sub is not None else None
            if dt is not None:
                dts.add(float(dt))
    if len(dts) > 1:
        raise ValueError(f"the layers use different dt values {sorted(dts)}; pass dt= explicitly")
    if not dts:
        raise ValueError("cannot infer dt from the model (no LI/LIF/SPSN layer with a dt); pass dt=")
    return dts.pop()


def _tau_from_decay(decay: np.ndarray, dt: float, what: str) -> np.ndarray:
    if np.any(decay >= 1) or np.any(decay < 0):
        raise ValueError(f"{what}: decays must lie in [0, 1) to map to a NIR time constant, got "
                         f"[{decay.min()}, {decay.max()}]")
    return (dt / (1.0 - decay.astype(np.float64))).astype(np.float32)


def _leaky_constants(module, features: int, dt: float, input_scale: float | np.ndarray):
    """``(tau_syn | None, w_in | None, tau_mem, r)`` of a LI/LIF/SPSN-like module."""
    b = _array(module.mem(), features)
    tau_mem = _tau_from_decay(b, dt, f"{type(module).__name__}.mem")
    r = (np.asarray(input_scale, dtype=np.float64) * tau_mem / dt).astype(np.float32)
    r = np.broadcast_to(r, (features,)).astype(np.float32)
    if module.syn is None:
        return None, None, tau_mem, r
    a = _array(module.syn(), features)
    tau_syn = _tau_from_decay(a, dt, f"{type(module).__name__}.syn")
    return tau_syn, (tau_syn / dt).astype(np.float32), tau_mem, r


def _lif_input_scale(m: LIF, b: np.ndarray) -> np.ndarray | float:
    if m.input_scale == "one_minus_decay":
        return 1.0 - b.astype(np.float64)
    return float(m.input_scale)


def to_nir(model: nn.Module, *, dt: float | None = None, spsn: str = "error"):
    """Convert a chain of layers to a ``nir.NIRGraph`` (see the module docstring for the mapping).

    Args:
        model: an ``nn.Sequential`` (or a single supported layer); its first layer must be an
            ``nn.Linear`` so that the input size is known.
        dt: the step the layers were built with; inferred from them when None.
        spsn: ``"error"`` (default) refuses stochastic SPSN layers; ``"threshold"`` exports them
            as their deterministic counterpart (``CubaLI`` + ``Threshold(0)``).

    Returns:
        ``nir.NIRGraph`` with nodes ``input``, one per layer (named by the module path), and
        ``output``, chained by edges; metadata ``{"dt": dt, "source": "spikescan"}``.
    """
    nir = _nir()
    if spsn not in ("error", "threshold"):
        raise ValueError(f"spsn must be 'error' or 'threshold', got {spsn!r}")
    layers = [(n or type(m).__name__.lower(), m) for n, m in _flatten(model)]
    layers = [(n, m) for n, m in layers if not isinstance(m, nn.Dropout)]
    if not layers:
        raise ValueError("model has no layers to export")
    for name, m in layers:  # name unsupported layers before anything else can fail
        if not isinstance(m, (nn.Linear, LIF, LI, SPSN)):
            raise ValueError(f"layer {name!r} ({type(m).__name__}) has no NIR export; supported: "
                             "nn.Linear, nn.Dropout, LIF/PLIF (reset='zero'), LI, SPSN")
    dt = _infer_dt(layers) if dt is None else float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number, got {dt}")

    nodes: dict[str, Any] = {}
    chain: list[str] = []
    n_in = None
    width = None
    for name, m in layers:
        key = name.replace(".", "_")
        if isinstance(m, nn.Linear):
            w = m.weight.detach().cpu().numpy().astype(np.float32)
            if width is None:
                n_in = m.in_features
            nodes[key] = (nir.Affine(weight=w, bias=m.bias.detach().cpu().numpy().astype(np.float32))
                          if m.bias is not None else nir.Linear(weight=w))
            width = m.out_features
        elif isinstance(m, LIF):  # PLIF included
            if m.reset != "zero":
                raise ValueError(f"layer {name!r}: NIR neurons reset to v_reset; reset={m.reset!r} "
                                 "(subtract) has no NIR equivalent")
            f = m.features
            b = _array(m.mem(), f)
            tau_syn, w_in, tau_mem, r = _leaky_constants(m, f, dt, _lif_input_scale(m, b))
            common = dict(r=r, v_leak=np.zeros(f, np.float32), v_threshold=_array(m.threshold, f),
                          v_reset=np.full(f, m.v_reset, np.float32))
            if tau_syn is None:
                nodes[key] = nir.LIF(tau=tau_mem, **common)
            else:
                nodes[key] = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, w_in=w_in, **common)
            width = f
        elif isinstance(m, (LI, SPSN)):
            if isinstance(m, SPSN) and spsn == "error":
                raise ValueError(f"layer {name!r} is a stochastic SPSN, which NIR cannot express; pass "
                                 "spsn='threshold' to export its deterministic firing H(u) instead")
            f = m.features
            b = _array(m.mem(), f)
            tau_syn, w_in, tau_mem, r = _leaky_constants(m, f, dt, 1.0 - b.astype(np.float64))
            if tau_syn is None:
                nodes[key] = nir.LI(tau=tau_mem, r=r, v_leak=np.zeros(f, np.float32))
            else:
                nodes[key] = nir.CubaLI(tau_syn=tau_syn, tau_mem=tau_mem, r=r,
                                        v_leak=np.zeros(f, np.float32), w_in=w_in)
            if isinstance(m, SPSN):
                chain.append(key)
                key = key + "_threshold"
                nodes[key] = nir.Threshold(threshold=np.zeros(f, np.float32))
            width = f
        chain.append(key)
    if n_in is None:
        raise ValueError("the chain must start with an nn.Linear so that the input size is known")
    nodes["input"] = nir.Input(input_type={"input": np.array([n_in])})
    nodes["output"] = nir.Output(output_type={"output": np.array([width])})
    order = ["input", *chain, "output"]
    edges = list(zip(order[:-1], order[1:]))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": dt, "source": "spikescan"})


def _chain(graph) -> list[str]:
    """The node names from input to output; ValueError unless the graph is a simple chain."""
    succ: dict[str, str] = {}
    for a, b in graph.edges:
        if a in succ:
            raise ValueError(f"node {a!r} has several successors: only chains can be imported")
        succ[a] = b
    inputs = [k for k, v in graph.nodes.items() if type(v).__name__ == "Input"]
    if len(inputs) != 1:
        raise ValueError(f"expected one Input node, found {len(inputs)}")
    order, node = [], inputs[0]
    while node in succ:
        node = succ[node]
        if node in order:
            raise ValueError("the graph has a cycle: only feed-forward chains can be imported")
        order.append(node)
    if len(order) + 1 != len(graph.nodes):
        raise ValueError("the graph is not a single chain from its Input to its Output")
    return order


def _uniform(arr, what: str) -> float:
    a = np.asarray(arr, dtype=np.float64).reshape(-1)
    if not np.allclose(a, a[0], rtol=1e-6, atol=0):
        raise ValueError(f"{what} must be the same for every neuron to import, got [{a.min()}, {a.max()}]")
    return float(a[0])


def _set_decay(decay_module, decays: np.ndarray, dt: float) -> None:
    """Give a :class:`~spikescan.nn.base.Decay` per-neuron values ``exp(-dt/tau)`` = ``decays``."""
    tau = -dt / np.log(decays.astype(np.float64))
    decay_module.learn = True
    decay_module.log_tau = nn.Parameter(torch.tensor(np.log(tau), dtype=torch.float32))


def _decays(tau, dt: float, features: int, what: str) -> np.ndarray:
    tau = np.broadcast_to(np.asarray(tau, dtype=np.float64), (features,))
    d = 1.0 - dt / tau
    if np.any(d <= 0) or np.any(d >= 1):
        raise ValueError(f"{what}: tau must exceed dt={dt} for a decay in (0, 1), got tau in "
                         f"[{tau.min()}, {tau.max()}]")
    return d


def _leaky_module(cls, node, dt: float, **kwargs):
    """A LI/LIF from a (Cuba)LI(F) node; per-step decays a = 1 - dt/tau_syn, b = 1 - dt/tau_mem."""
    kind = type(node).__name__
    tau_mem = np.asarray(node.tau_mem if hasattr(node, "tau_mem") else node.tau, dtype=np.float64).reshape(-1)
    features = tau_mem.shape[0]
    if np.any(np.asarray(node.v_leak) != 0):
        raise ValueError(f"{kind} node with v_leak != 0 cannot be imported (our neurons leak to 0)")
    b = _decays(tau_mem, dt, features, f"{kind}.tau_mem")
    scale = np.broadcast_to(np.asarray(node.r, dtype=np.float64), (features,)) * dt / tau_mem
    a = None
    if hasattr(node, "tau_syn"):
        a = _decays(node.tau_syn, dt, features, f"{kind}.tau_syn")
        w_in = np.broadcast_to(np.asarray(node.w_in, dtype=np.float64), (features,))
        scale = scale * w_in * dt / np.broadcast_to(np.asarray(node.tau_syn, dtype=np.float64), (features,))
    # Build with placeholder taus, then set the exact per-step decays.
    m = cls(features, tau_syn=1.0 if a is not None else None, tau_mem=1.0, dt=dt, **kwargs)
    _set_decay(m.mem, b, dt)
    if a is not None:
        _set_decay(m.syn, a, dt)
    return m, b, scale


def from_nir(graph, *, dt: float | None = None) -> nn.Sequential:
    """Rebuild an ``nn.Sequential`` of our layers from a chain-shaped ``nir.NIRGraph``.

    ``Affine``/``Linear`` -> ``nn.Linear``; ``LIF``/``CubaLIF`` -> :class:`~spikescan.nn.LIF`
    (zero reset); ``LI``/``CubaLI`` -> :class:`~spikescan.nn.LI` (or, followed by
    ``Threshold(0)``, the deterministic counterpart of an exported SPSN is rebuilt as ``LI`` +
    a Heaviside).  ``dt`` defaults to the graph's metadata.
    Per-neuron time constants become per-neuron (learnable) decays.
    """
    dt = graph.metadata.get("dt") if dt is None else dt
    if dt is None:
        raise ValueError("the graph has no 'dt' in its metadata; pass dt=")
    dt = float(dt)
    layers: list[nn.Module] = []
    for name in _chain(graph):
        node = graph.nodes[name]
        kind = type(node).__name__
        if kind == "Output":
            break
        if kind in ("Affine", "Linear"):
            w = torch.tensor(np.asarray(node.weight), dtype=torch.float32)
            lin = nn.Linear(w.shape[1], w.shape[0], bias=kind == "Affine")
            with torch.no_grad():
                lin.weight.copy_(w)
                if kind == "Affine":
                    lin.bias.copy_(torch.tensor(np.asarray(node.bias), dtype=torch.float32))
            layers.append(lin)
        elif kind in ("LIF", "CubaLIF"):
            f = np.asarray(node.v_threshold).reshape(-1).shape[0]
            v_reset = np.zeros(f) if node.v_reset is None else np.asarray(node.v_reset)
            m, b, scale = _leaky_module(LIF, node, dt, reset="zero",
                                        v_reset=_uniform(v_reset, f"{name}.v_reset"),
                                        threshold=1.0)
            thr = np.broadcast_to(np.asarray(node.v_threshold, dtype=np.float64), (f,))
            if np.allclose(thr, thr[0]):
                m.threshold = float(thr[0])
            else:
                m.threshold = nn.Parameter(torch.tensor(thr, dtype=torch.float32))
            m.input_scale = _uniform(scale, f"{name}: input scale R*dt/tau_mem (*w_in*dt/tau_syn)")
            layers.append(m)
        elif kind in ("LI", "CubaLI"):
            m, b, scale = _leaky_module(LI, node, dt)
            if not np.allclose(scale, 1.0 - b, rtol=1e-5, atol=1e-7):
                raise ValueError(f"{name}: LI import needs R*dt/tau_mem (*w_in*dt/tau_syn) = dt/tau_mem, "
                                 "the input scaling of spikescan.nn.LI")
            layers.append(m)
        elif kind == "Threshold":
            layers.append(_Threshold(np.asarray(node.threshold)))
        else:
            raise ValueError(f"node {name!r} of type {kind} has no spikescan equivalent")
    return nn.Sequential(*layers)


class _Threshold(nn.Module):
    """NIR ``Threshold``: ``s = H(x - threshold)`` (forward only; an imported, deployed network)."""

    def __init__(self, threshold: np.ndarray):
        super().__init__()
        self.register_buffer("threshold", torch.tensor(threshold, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x >= self.threshold).to(x.dtype)


def write(path, model: nn.Module, **kwargs) -> None:
    """``to_nir(model, **kwargs)`` written to ``path`` (HDF5, via ``nir.write``) through a temp file + rename."""
    import os
    import tempfile

    nir = _nir()
    graph = to_nir(model, **kwargs)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".nir", dir=folder)
    os.close(fd)
    try:
        nir.write(tmp, graph)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path, **kwargs) -> nn.Sequential:
    """``from_nir(nir.read(path))`` with a clear error for a missing or unreadable file."""
    import os

    nir = _nir()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"NIR file {path!r} does not exist")
    try:
        graph = nir.read(path)
    except Exception as exc:
        raise ValueError(f"NIR file {path!r} could not be read as a NIR graph: {exc}") from exc
    return from_nir(graph, **kwargs)
