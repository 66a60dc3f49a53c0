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
to first order in ``dt/tau``).  A LIF without a synaptic stage exports as NIR ``LIF``.  Only the
per-step decays matter, so any ``dt`` gives a graph that reproduces the network at that step:
``to_nir(model, dt=...)`` chooses the graph's time unit.

What is exported: ``nn.Sequential`` chains (nested ones are flattened) of ``nn.Linear``
(``Affine``, or ``Linear`` without bias), :class:`~spikescan.nn.LIF` / ``PLIF`` with
``reset="zero"`` (NIR has no subtract reset), :class:`~spikescan.nn.LI`, ``nn.Dropout``
(identity at inference, dropped); and, only when asked
(``spsn="threshold"``), :class:`~spikescan.nn.SPSN` as a ``CubaLI`` followed by
``Threshold(0)``: the deterministic firing ``s = H(u)`` that fires exactly when the SPSN's
firing probability ``sigmoid(u)`` exceeds 1/2 -- neuromorphic hardware does not sample
Bernoulli spikes, so a stochastic network is deployed by its most likely spikes.  Anything else
raises ``ValueError`` naming the layer.  Each neuron node carries, in its ``metadata``, what NIR
cannot say (the class, learnable parameters, input scaling, surrogate, the decays' exact
parameters): :func:`from_nir` rebuilds the very module from it when it agrees with the node's
constants, and from the constants alone otherwise (a graph from another tool, or read at another
``dt``).

Peers (``peer=``): each peer's NIR importer accepts only part of NIR (snnTorch 1.0.0 integrates
at a hard-coded ``dt = 1e-4`` and has no input resistance; SpikingJelly 2.0.0 takes one value per
layer; Norse 1.1.0 ignores ``r`` and ``v_reset``; none of them has a ``LI`` node).  ``to_nir(model,
peer=...)`` writes the equivalent graph that importer maps faithfully -- an input scale the peer's
neuron lacks is folded into the rows of the preceding ``Affine`` (exact in real arithmetic) -- or
raises ``ValueError`` naming the peer's limitation and the alternative.  See :data:`PEERS`.

Spike condition: we fire at ``v >= threshold``, NIR writes ``v > threshold``; the two differ only
on exact ties.  :func:`from_nir` rebuilds our modules from such a graph (chains only);
:func:`node_map` / :func:`module_map` plug our modules into ``nirtorch.nir_to_torch`` /
``nirtorch.torch_to_nir`` for graphs of any shape.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .. import surrogate as surrogate_lib
from ..nn.base import Decay, SigmoidDecay
from ..nn.leaky import LI, LIF, PLIF, RLIF
from ..nn.spsn import SPSN

__all__ = ["to_nir", "from_nir", "write", "read", "node_map", "module_map", "PEERS"]

# The step of a graph whose layers carry no dt of their own (a PLIF keeps only sigmoid(w)): the
# modules' default.  Any value reproduces the per-step decays; it only sets the graph's time unit.
DEFAULT_DT = 1e-3
# float32 storage of NIR's constants rounds each to 2**-24 relative; two of them enter a derived
# quantity (r*dt/tau), so 1e-6 separates rounding from a real difference with a 5x margin.
_RTOL = 1e-6


class _Peer(NamedTuple):
    label: str              # the tested version
    dt: float | None        # the step its importer hard-codes (None: takes it as an argument)
    lif_r: str              # "tau/dt": no input scale; "1": r ignored (taken as 1); "1|tau/dt": either
    cuba_spec: bool         # honours CubaLIF's r and w_in as NIR defines them
    per_neuron_tau: bool
    per_neuron_threshold: bool
    maps: str               # the node types its importer knows
    load: str               # how to load a graph there
    readout: str            # the alternative to a LI readout


PEERS: dict[str, _Peer] = {
    "snntorch": _Peer(
        "snnTorch 1.0.0", 1e-4, "tau/dt", False, True, False,
        "Affine, Linear, Conv2d, Flatten, AvgPool2d, IF, LIF, CubaLIF",
        "snntorch.import_nir.import_from_nir(graph) (dt is 1e-4 inside it)",
        "run the readout on its output as snn.Synaptic(alpha=a, beta=b, reset_mechanism='none') "
        "(snn.Leaky(beta=b, reset_mechanism='none') for tau_syn=None), whose membrane times (1 - b) is "
        "this LI's output, with a = LI.syn(), b = LI.mem()"),
    "spikingjelly": _Peer(
        "SpikingJelly 2.0.0", None, "1|tau/dt", False, False, False,
        "Affine, Linear, Conv1d, Conv2d, AvgPool2d, Flatten, IF, LIF, CubaLIF",
        "spikingjelly.activation_based.nir_exchange.import_from_nir(graph, dt=graph.metadata['dt'])",
        "run the readout on its output as neuron.CUBALIFNode(c_decay=a, v_decay=b, v_threshold=float('inf')) "
        "(neuron.LIFNode(tau=1/(1 - b), decay_input=True, v_threshold=float('inf')) for tau_syn=None), reading "
        "its membrane .v, times (1 - b) for the CUBALIFNode; a = LI.syn(), b = LI.mem() (one value per layer)"),
    "norse": _Peer(
        "Norse 1.1.0", None, "1", True, True, True,
        "Affine, Linear, Conv2d, Flatten, IF, LIF, CubaLIF, SumPool2d; any other node is dropped silently",
        "norse.torch.from_nir(graph, dt=graph.metadata['dt'])",
        "run the readout on its output as norse.torch.LIBoxCell(LIBoxParameters(tau_mem_inv=(1 - b)/dt), dt=dt) "
        "(for tau_syn set: first a LIBoxCell with tau_mem_inv=(1 - a)/dt on the input times 1/(1 - a)); "
        "a = LI.syn(), b = LI.mem()"),
}


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


def _values(value, features: int) -> np.ndarray:
    """A per-neuron float64 array from a float, 0-d or ``[features]`` tensor or array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (features,)).copy()


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _check_dt(dt, what: str = "dt") -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating)) or not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"{what} must be a positive finite number of seconds, got {dt!r}")
    return float(dt)


def _infer_dt(layers) -> float:
    dts = set()
    for _, m in layers:
        for sub in (getattr(m, "syn", None), getattr(m, "mem", None)):
            dt = getattr(sub, "dt", None)  # a SigmoidDecay (PLIF) keeps no dt
            if dt is not None:
                dts.add(float(dt))
    if len(dts) > 1:
        raise ValueError(f"the layers use different dt values {sorted(dts)}; pass dt= explicitly")
    return dts.pop() if dts else DEFAULT_DT


def _tau(decay: np.ndarray, dt: float, what: str) -> np.ndarray:
    if np.any(decay >= 1) or np.any(decay < 0):
        raise ValueError(f"{what}: decays must lie in [0, 1) to map to a NIR time constant, got "
                         f"[{decay.min()}, {decay.max()}]")
    return dt / (1.0 - decay)


# ---------------------------------------------------------------------------------------------
# export


def _decay_meta(prefix: str, d) -> dict:
    """The exact parameters of a decay, so that an import rebuilds it bit for bit."""
    if isinstance(d, SigmoidDecay):
        return {f"{prefix}_kind": "sigmoid", f"{prefix}_w": _f32(d.w.detach().cpu())}
    if d.learn:
        return {f"{prefix}_kind": "log_tau", f"{prefix}_dt": d.dt, f"{prefix}_log_tau": _f32(d.log_tau.detach().cpu())}
    return {f"{prefix}_kind": "fixed", f"{prefix}_dt": d.dt, f"{prefix}_tau": float(d._tau)}


def _neuron_meta(m) -> dict:
    meta: dict[str, Any] = {"spikescan": "LI" if isinstance(m, (LI, SPSN)) else type(m).__name__}
    meta.update(_decay_meta("mem", m.mem))
    if m.syn is not None:
        meta.update(_decay_meta("syn", m.syn))
    if isinstance(m, LIF):
        th = m.threshold
        meta["threshold_kind"] = ("parameter" if isinstance(th, nn.Parameter) else
                                  "tensor" if isinstance(th, torch.Tensor) else "float")
        if meta["threshold_kind"] == "float":
            meta["threshold"] = float(th)
        meta.update(input_scale=_input_scale(m), v_reset=m.v_reset, detach_reset=m.detach_reset, backend=m.backend)
        sg = m.surrogate
        if type(surrogate_lib.get(sg.kind)) is type(sg):  # a built-in: it can be rebuilt by name
            meta.update(surrogate=sg.kind, surrogate_param=float(sg.param))
    elif isinstance(m, LI):
        meta.update(input_scale=_input_scale(m), backend=m.backend)
    return meta


def _input_scale(m):
    """A layer's factor on the current entering the membrane (SPSN has the paper's ``1 - b``)."""
    scale = getattr(m, "input_scale", "one_minus_decay")
    return scale if scale == "one_minus_decay" else float(scale)


def _neuron_node(m, name: str, dt: float, nir):
    """The (Cuba)LI(F) node of a LIF/PLIF/LI/SPSN module at step ``dt``."""
    f = m.features
    b = _values(m.mem(), f)
    tau_mem = _tau(b, dt, f"layer {name!r} ({type(m).__name__}).mem")
    if _input_scale(m) != "one_minus_decay":
        r = _input_scale(m) * tau_mem / dt
    else:
        r = np.ones(f)  # c = 1 - b = dt / tau_mem
    common = dict(r=_f32(r), v_leak=np.zeros(f, np.float32), metadata=_neuron_meta(m))
    syn = None
    if m.syn is not None:
        tau_syn = _tau(_values(m.syn(), f), dt, f"layer {name!r} ({type(m).__name__}).syn")
        syn = dict(tau_syn=_f32(tau_syn), w_in=_f32(tau_syn / dt))
    if isinstance(m, LIF):
        common.update(v_threshold=_f32(_values(m.threshold, f)), v_reset=np.full(f, m.v_reset, np.float32))
        if syn is None:
            return nir.LIF(tau=_f32(tau_mem), **common)
        return nir.CubaLIF(tau_mem=_f32(tau_mem), **syn, **common)
    if syn is None:
        return nir.LI(tau=_f32(tau_mem), **common)
    return nir.CubaLI(tau_mem=_f32(tau_mem), **syn, **common)


def _linear_node(m: nn.Linear, nir):
    w = _f32(m.weight.detach().cpu())
    if m.bias is None:
        return nir.Linear(weight=w)
    return nir.Affine(weight=w, bias=_f32(m.bias.detach().cpu()))


def to_nir(model: nn.Module, *, dt: float | None = None, spsn: str = "error", peer: str | None = None):
    """Convert a chain of layers to a ``nir.NIRGraph`` (see the module docstring for the mapping).

    Args:
        model: an ``nn.Sequential`` (or a single supported layer); its first layer must be an
            ``nn.Linear`` so that the input size is known.
        dt: the graph's step in seconds: its time constants are those that reproduce the layers'
            per-step decays at this step.  None: the layers' own ``dt`` (:data:`DEFAULT_DT` when
            none has one, e.g. a network of PLIFs without a synaptic stage); with
            ``peer="snntorch"``, snnTorch's hard-coded ``1e-4``.
        spsn: ``"error"`` (default) refuses stochastic SPSN layers; ``"threshold"`` exports them
            as their deterministic counterpart (``CubaLI`` + ``Threshold(0)``).
        peer: None for the graph as NIR defines it; ``"snntorch"``, ``"spikingjelly"`` or
            ``"norse"`` for the equivalent graph that peer's importer maps faithfully (see
            :data:`PEERS`); ``ValueError`` naming the peer's limitation when there is none.

    Returns:
        ``nir.NIRGraph`` with nodes ``input``, one per layer (named by the module path), and
        ``output``, chained by edges; metadata ``{"dt": dt, "source": "spikescan"}`` (plus
        ``"peer"``).
    """
    nir = _nir()
    if spsn not in ("error", "threshold"):
        raise ValueError(f"spsn must be 'error' or 'threshold', got {spsn!r}")
    if peer is not None and peer not in PEERS:
        raise ValueError(f"peer must be None or one of {sorted(PEERS)}, got {peer!r}")
    layers = [(n or type(m).__name__.lower(), m) for n, m in _flatten(model)]
    layers = [(n, m) for n, m in layers if not isinstance(m, nn.Dropout)]
    if not layers:
        raise ValueError("model has no layers to export")
    for name, m in layers:  # name unsupported layers before anything else can fail
        if not isinstance(m, (nn.Linear, LIF, LI, SPSN)) or isinstance(m, RLIF):
            raise ValueError(f"layer {name!r} ({type(m).__name__}) has no NIR export; supported: "
                             "nn.Linear, nn.Dropout, LIF/PLIF (reset='zero'), LI, SPSN")
    if peer is not None and PEERS[peer].dt is not None:
        fixed = PEERS[peer].dt
        if dt is not None and float(dt) != fixed:
            raise ValueError(f"dt={dt!r} with peer={peer!r}: {PEERS[peer].label}'s importer integrates every graph at "
                             f"dt={fixed} (hard-coded), so the graph is written at that step; leave dt=None")
        dt = fixed
    dt = _infer_dt(layers) if dt is None else _check_dt(dt)

    nodes: dict[str, Any] = {}
    chain: list[str] = []
    n_in = None
    width = None
    for name, m in layers:
        key = name.replace(".", "_")
        if isinstance(m, nn.Linear):
            if width is None:
                n_in = m.in_features
            nodes[key] = _linear_node(m, nir)
            width = m.out_features
        else:
            if isinstance(m, LIF) and m.reset != "zero":
                raise ValueError(f"layer {name!r}: NIR neurons reset to v_reset; reset={m.reset!r} "
                                 "(subtract) has no NIR equivalent")
            if isinstance(m, SPSN) and spsn == "error":
                raise ValueError(f"layer {name!r} is a stochastic SPSN, which NIR cannot express; pass "
                                 "spsn='threshold' to export its deterministic firing H(u) instead")
            nodes[key] = _neuron_node(m, name, dt, nir)
            if isinstance(m, SPSN):
                chain.append(key)
                key = key + "_threshold"
                nodes[key] = nir.Threshold(threshold=np.zeros(m.features, np.float32))
            width = m.features
        chain.append(key)
    if n_in is None:
        raise ValueError("the chain must start with an nn.Linear so that the input size is known")
    nodes["input"] = nir.Input(input_type={"input": np.array([n_in])})
    nodes["output"] = nir.Output(output_type={"output": np.array([width])})
    order = ["input", *chain, "output"]
    edges = list(zip(order[:-1], order[1:]))
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": dt, "source": "spikescan"})
    return graph if peer is None else _for_peer(graph, peer, nir)


# ---------------------------------------------------------------------------------------------
# what each peer's importer maps


class _Discrete(NamedTuple):
    """A (Cuba)LI(F) node as our per-step update at step dt: float64 ``[features]`` arrays."""

    b: np.ndarray                 # membrane decay 1 - dt/tau_mem
    a: np.ndarray | None          # current decay 1 - dt/tau_syn (Cuba nodes)
    scale: np.ndarray             # input to membrane increment: r dt/tau_mem (* w_in dt/tau_syn)
    threshold: np.ndarray | None  # spiking nodes
    v_reset: np.ndarray | None
    v_leak: np.ndarray


_FIELDS = ("tau", "tau_mem", "tau_syn", "r", "w_in", "v_leak", "v_threshold", "v_reset")


def _features(node, name: str, hint: int | None) -> int:
    """The node's neuron count: its arrays' size, or ``hint`` (the preceding layer's width) for
    0-d / 1-element parameters that NIR broadcasts."""
    arrays = [np.asarray(getattr(node, k)) for k in _FIELDS if getattr(node, k, None) is not None]
    sizes = {a.size for a in arrays} - {1}
    if len(sizes) > 1:
        raise ValueError(f"node {name!r}: parameters of different sizes {sorted(sizes)}")
    if sizes:
        n = sizes.pop()
        if hint is not None and hint != n:
            raise ValueError(f"node {name!r} has {n} neurons but its input has {hint} features")
        return n
    if hint is not None:
        return hint
    if all(a.ndim == 0 for a in arrays):
        raise ValueError(f"node {name!r} has 0-d parameters and no preceding Affine/Linear to take its size "
                         "from; give its parameters the shape [features]")
    return 1


def _decays(tau, dt: float, f: int, what: str) -> np.ndarray:
    tau = _values(tau, f)
    d = 1.0 - dt / tau
    if np.any(d <= 0) or np.any(d >= 1):
        raise ValueError(f"{what}: tau must exceed dt={dt} for a decay in (0, 1), got tau in "
                         f"[{tau.min()}, {tau.max()}]")
    return d


def _discrete(node, name: str, dt: float, f: int) -> _Discrete:
    kind = type(node).__name__
    cuba = kind.startswith("Cuba")
    tau_mem = _values(node.tau_mem if cuba else node.tau, f)
    b = _decays(tau_mem, dt, f, f"node {name!r} ({kind}).tau_mem")
    scale = _values(node.r, f) * dt / tau_mem
    a = None
    if cuba:
        a = _decays(node.tau_syn, dt, f, f"node {name!r} ({kind}).tau_syn")
        scale = scale * _values(node.w_in, f) * (1.0 - a)
    spiking = kind.endswith("LIF")
    v_reset = None
    if spiking:
        v_reset = np.zeros(f) if node.v_reset is None else _values(node.v_reset, f)
    return _Discrete(b, a, scale, _values(node.v_threshold, f) if spiking else None, v_reset,
                     _values(node.v_leak, f))


def _close(x: np.ndarray, y: np.ndarray) -> bool:
    return bool(np.allclose(x, y, rtol=_RTOL, atol=0))


def _uniform(x: np.ndarray) -> bool:
    return _close(x, np.full_like(x, x[0]))


def _scaled_linear(node, factor: np.ndarray, nir):
    """``node`` (Affine/Linear) with its output rows times ``factor``."""
    w = _f32(np.asarray(node.weight, np.float64) * factor[:, None])
    if type(node).__name__ == "Linear":
        return nir.Linear(weight=w)
    return nir.Affine(weight=w, bias=_f32(np.asarray(node.bias, np.float64) * factor))


def _for_peer(graph, peer: str, nir):
    """The graph rewritten into the node forms ``peer``'s importer maps faithfully."""
    p = PEERS[peer]
    dt = float(graph.metadata["dt"])
    nodes = {k: v for k, v in graph.nodes.items()}
    order = _chain(graph)
    before = dict(zip(order[1:], order[:-1]))
    width = None
    for key in order:
        node = nodes[key]
        kind = type(node).__name__
        if kind in ("Affine", "Linear"):
            width = np.asarray(node.weight).shape[0]
            continue
        if kind == "Output":
            continue
        if kind in ("LI", "CubaLI"):
            raise ValueError(f"node {key!r} ({kind}, a LI readout): {p.label}'s NIR importer has no {kind} node "
                             f"(it maps {p.maps}). Export the network without it (to_nir(model[:-1], peer={peer!r})) "
                             f"and {p.readout}")
        if kind not in ("LIF", "CubaLIF"):
            raise ValueError(f"node {key!r} ({kind}): {p.label}'s NIR importer maps only {p.maps}")
        f = _features(node, key, width)
        d = _discrete(node, key, dt, f)
        if not np.all(d.v_reset == 0):
            raise ValueError(f"node {key!r}: {p.label}'s importer resets to 0 (its zero reset ignores or forbids "
                             f"v_reset), got v_reset in [{d.v_reset.min()}, {d.v_reset.max()}]; use v_reset=0")
        per_neuron = [(what, x) for what, x in (("tau_mem", d.b), ("tau_syn", d.a), ("v_threshold", d.threshold))
                      if x is not None and not _uniform(x)]
        for what, _ in per_neuron:
            if (what == "v_threshold" and not p.per_neuron_threshold) or (what != "v_threshold" and not p.per_neuron_tau):
                raise ValueError(f"node {key!r}: {p.label}'s importer takes one {what} per layer, this layer has one "
                                 "per neuron; train with a shared value (learn_tau=False / learn_threshold=False, a LIF "
                                 "instead of a PLIF) to load it there")
        tau_mem = dt / (1.0 - d.b)
        common = dict(v_leak=np.zeros(f, np.float32), v_threshold=_f32(d.threshold), v_reset=_f32(d.v_reset))
        if d.a is None:
            if p.lif_r == "1" or (p.lif_r == "1|tau/dt" and _close(d.scale, 1.0 - d.b)):
                r, target = np.ones(f), 1.0 - d.b
            else:
                r, target = tau_mem / dt, np.ones(f)
            new = nir.LIF(tau=_f32(tau_mem), r=_f32(r), **common)
        else:
            tau_syn = dt / (1.0 - d.a)
            if p.cuba_spec:
                new, target = nir.CubaLIF(tau_syn=_f32(tau_syn), tau_mem=_f32(tau_mem), r=_f32(node.r * np.ones(f)),
                                          w_in=_f32(node.w_in * np.ones(f)), **common), d.scale
            else:
                new, target = nir.CubaLIF(tau_syn=_f32(tau_syn), tau_mem=_f32(tau_mem), r=_f32(tau_mem / dt),
                                          w_in=_f32(tau_syn / dt), **common), np.ones(f)
        factor = d.scale / target
        if not np.allclose(factor, 1.0, rtol=1e-9, atol=0):
            prev = before.get(key)
            if prev is None or type(nodes[prev]).__name__ not in ("Affine", "Linear"):
                raise ValueError(f"node {key!r}: {p.label}'s neuron has no input scale of this layer's kind, and "
                                 "there is no Affine/Linear right before it to fold the scale into")
            nodes[prev] = _scaled_linear(nodes[prev], factor, nir)
        nodes[key] = new
        width = f
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata={**graph.metadata, "peer": peer})


# ---------------------------------------------------------------------------------------------
# import


def _chain(graph) -> list[str]:
    """The node names from input to output; ValueError unless the graph is a simple chain."""
    succ: dict[str, str] = {}
    for a, b in graph.edges:
        if a in succ:
            raise ValueError(f"node {a!r} has several successors: only chains can be imported "
                             "(nirtorch.nir_to_torch(graph, node_map(dt=...)) runs any graph)")
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


def _param(values: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.tensor(values, dtype=torch.float32))


def _decay_from_meta(meta: dict, prefix: str, features: int, current):
    """The decay module ``meta`` describes (``current``: the one the constructor made)."""
    kind = str(meta[f"{prefix}_kind"])
    if kind == "sigmoid":
        current.w = _param(np.asarray(meta[f"{prefix}_w"]))
        return current
    d = Decay(features, 1.0 if kind == "log_tau" else float(meta[f"{prefix}_tau"]), float(meta[f"{prefix}_dt"]),
              kind == "log_tau", f"{prefix}_tau")
    if kind == "log_tau":
        d.log_tau = _param(np.asarray(meta[f"{prefix}_log_tau"]))
    return d


def _from_meta(meta: dict, kind: str, f: int, d: _Discrete):
    """The module the node's spikescan metadata describes, or None when it describes none."""
    cls = {"LIF": LIF, "PLIF": PLIF, "LI": LI}.get(str(meta.get("spikescan")))
    spiking = kind.endswith("LIF")
    if cls is None or (cls is LI) == spiking or ("syn_kind" in meta) != kind.startswith("Cuba"):
        return None
    if ("mem_kind" in meta and str(meta["mem_kind"]) == "sigmoid") != (cls is PLIF):
        return None
    tau_syn = 1.0 if "syn_kind" in meta else None
    scale = meta.get("input_scale", "one_minus_decay")  # exports before LI had input_scale: 1 - b
    scale = str(scale) if isinstance(scale, str) else float(scale)
    if cls is LI:
        m = LI(f, tau_syn=tau_syn, tau_mem=1.0, dt=1.0 if "mem_dt" not in meta else float(meta["mem_dt"]),
               backend=str(meta.get("backend", "auto")), input_scale=scale)
    else:
        sg = None
        if "surrogate" in meta:
            sg = type(surrogate_lib.get(str(meta["surrogate"])))(float(meta["surrogate_param"]))
        m = cls(f, tau_syn=tau_syn, tau_mem=1.0, dt=float(meta.get("mem_dt", 1.0)), threshold=float(meta.get("threshold", 1.0)),
                reset="zero", v_reset=float(meta["v_reset"]), surrogate=sg, detach_reset=bool(meta["detach_reset"]),
                input_scale=scale, backend=str(meta.get("backend", "auto")))
        th_kind = str(meta.get("threshold_kind", "float"))
        if th_kind != "float":  # per-neuron values: the node's float32 array holds them exactly
            m.threshold = _param(d.threshold) if th_kind == "parameter" else torch.tensor(d.threshold, dtype=torch.float32)
    m.mem = _decay_from_meta(meta, "mem", f, m.mem)
    if tau_syn is not None:
        m.syn = _decay_from_meta(meta, "syn", f, m.syn)
    return m


def _module_agrees(m, d: _Discrete, f: int) -> bool:
    """Whether module ``m`` computes what the node's constants ``d`` say (to their float32 storage)."""
    b = _values(m.mem(), f)
    if not _close(1.0 - b, 1.0 - d.b):
        return False
    if d.a is not None and not _close(1.0 - _values(m.syn(), f), 1.0 - d.a):
        return False
    scale = 1.0 - b if m.input_scale == "one_minus_decay" else np.full(f, float(m.input_scale))
    if not _close(scale, d.scale):
        return False
    return not isinstance(m, LIF) or (_close(_values(m.threshold, f), d.threshold) and
                                      bool(np.allclose(m.v_reset, d.v_reset, rtol=_RTOL, atol=_RTOL)))


def _decay_module(decays: np.ndarray, dt: float, name: str):
    """A fixed decay for one shared value, learnable per-neuron ``log tau`` otherwise (a fixed
    :class:`~spikescan.nn.base.Decay` holds one number)."""
    tau = -dt / np.log(decays)
    if _uniform(decays):
        return Decay(decays.shape[0], float(tau[0]), dt, False, name)
    d = Decay(decays.shape[0], 1.0, dt, True, name)
    d.log_tau = _param(np.log(tau))
    return d


def _from_constants(node, name: str, d: _Discrete, dt: float, f: int):
    """``(module, fold)`` from the node's constants alone; ``fold``: a per-neuron input factor the
    module cannot hold, for the preceding Affine's rows (None when there is none)."""
    kind = type(node).__name__
    if not np.all(d.v_leak == 0):
        raise ValueError(f"node {name!r} ({kind}) with v_leak != 0 cannot be imported (our neurons leak to 0)")
    fold = None
    tau_syn = None if d.a is None else 1.0
    if _close(d.scale, 1.0 - d.b):
        scale = "one_minus_decay"
    elif _close(d.scale, np.ones(f)):
        scale = 1.0  # the scale float32 constants write for 1 (e.g. snnTorch's r = tau/dt)
    elif _uniform(d.scale):
        scale = float(d.scale[0])
    else:
        scale, fold = "one_minus_decay", d.scale / (1.0 - d.b)
    if kind.endswith("LIF"):
        if not _uniform(d.v_reset):
            raise ValueError(f"node {name!r}: v_reset must be the same for every neuron to import, got "
                             f"[{d.v_reset.min()}, {d.v_reset.max()}]")
        th = float(d.threshold[0]) if _uniform(d.threshold) else None
        m = LIF(f, tau_syn=tau_syn, tau_mem=1.0, dt=dt, threshold=1.0 if th is None else th, reset="zero",
                v_reset=float(d.v_reset[0]), input_scale=scale)
        if th is None:
            m.threshold = _param(d.threshold)
    else:
        m = LI(f, tau_syn=tau_syn, tau_mem=1.0, dt=dt, input_scale=scale)
    m.mem = _decay_module(d.b, dt, "tau_mem")
    if d.a is not None:
        m.syn = _decay_module(d.a, dt, "tau_syn")
    return m, fold


def _node_module(node, name: str, dt: float, hint: int | None):
    """``(module, fold)`` for one neuron node: the metadata's module when it agrees with the node."""
    kind = type(node).__name__
    f = _features(node, name, hint)
    d = _discrete(node, name, dt, f)
    meta = getattr(node, "metadata", None) or {}
    m = _from_meta(meta, kind, f, d) if meta else None
    if m is not None and _module_agrees(m, d, f):
        return m, None
    return _from_constants(node, name, d, dt, f)


def _linear_module(node) -> nn.Linear:
    kind = type(node).__name__
    w = torch.tensor(np.asarray(node.weight), dtype=torch.float32)
    lin = nn.Linear(w.shape[1], w.shape[0], bias=kind == "Affine")
    with torch.no_grad():
        lin.weight.copy_(w)
        if kind == "Affine":
            lin.bias.copy_(torch.tensor(np.asarray(node.bias), dtype=torch.float32))
    return lin


def _graph_dt(graph, dt) -> float:
    if dt is not None:
        return _check_dt(dt)
    dt = (graph.metadata or {}).get("dt")
    if dt is None:
        raise ValueError("the graph has no 'dt' in its metadata; pass dt= (snnTorch 1.0.0 exports are at 1e-4, "
                         "SpikingJelly's at the dt given to its export_to_nir, 1e-4 by default)")
    return _check_dt(float(dt), "the graph's metadata['dt']")


def from_nir(graph, *, dt: float | None = None) -> nn.Sequential:
    """Rebuild an ``nn.Sequential`` of our layers from a chain-shaped ``nir.NIRGraph``.

    ``Affine``/``Linear`` -> ``nn.Linear``; ``LIF``/``CubaLIF`` -> :class:`~spikescan.nn.LIF`
    (zero reset); ``LI``/``CubaLI`` -> :class:`~spikescan.nn.LI` (or, followed by
    ``Threshold(0)``, the deterministic counterpart of an exported SPSN is rebuilt as ``LI`` +
    a Heaviside).

    A node written by :func:`to_nir` comes back as the module that was exported (class, PLIF
    included, learnable parameters, input scaling, surrogate, exact decays) whenever its metadata
    agrees with its constants at this ``dt``.  Otherwise the module is built from the constants:
    one shared decay / threshold becomes a fixed float, per-neuron ones learnable per-neuron
    parameters; the input scale ``r dt/tau_mem (w_in dt/tau_syn)`` becomes
    ``input_scale="one_minus_decay"`` or a number, and a per-neuron scale neither of these can
    hold is folded into the rows of the preceding ``Affine``.  0-d parameters take the preceding
    layer's width.

    Args:
        graph: the ``nir.NIRGraph``.
        dt: the step to integrate the graph at; None: ``graph.metadata["dt"]``.  Peers' graphs
            carry none: snnTorch 1.0.0 writes for ``1e-4``, SpikingJelly 2.0.0 for the ``dt``
            passed to its ``export_to_nir`` (``1e-4`` by default); Norse 1.1.0 writes
            ``tau = dt * tau_true``, which integrates as Norse meant at ``dt**2``.
    """
    dt = _graph_dt(graph, dt)
    layers: list[nn.Module] = []
    width = None
    for name in _chain(graph):
        node = graph.nodes[name]
        kind = type(node).__name__
        if kind == "Output":
            break
        if kind in ("Affine", "Linear"):
            layers.append(_linear_module(node))
            width = layers[-1].out_features
        elif kind in ("LIF", "CubaLIF", "LI", "CubaLI"):
            m, fold = _node_module(node, name, dt, width)
            if fold is not None:
                if not layers or not isinstance(layers[-1], nn.Linear):
                    raise ValueError(f"node {name!r} has a per-neuron input scale r*dt/tau_mem (*w_in*dt/tau_syn) that "
                                     "our modules cannot hold and no Affine/Linear before it to fold it into")
                with torch.no_grad():
                    factor = torch.tensor(fold, dtype=torch.float64)
                    layers[-1].weight.copy_(layers[-1].weight.double() * factor[:, None])
                    if layers[-1].bias is not None:
                        layers[-1].bias.copy_(layers[-1].bias.double() * factor)
            layers.append(m)
            width = m.features
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


# ---------------------------------------------------------------------------------------------
# nirtorch


def node_map(*, dt: float) -> dict:
    """NIR node type -> builder of our module, for ``nirtorch.nir_to_torch(graph, node_map(dt=...))``.

    nirtorch wires graphs of any shape (branches, sums) from it; our modules take the whole
    sequence, so the resulting ``GraphModule`` is called once on ``[T, B, features]`` and returns
    ``(output, state)``; each neuron sits in a thin wrapper, its ``.module``.  Each node is built as
    :func:`from_nir` builds it, except that a node has no neighbours here: 0-d parameters and
    per-neuron input scales that need folding are refused.
    """
    nir = _nir()
    dt = _check_dt(dt)

    def neuron(node):
        m, fold = _node_module(node, type(node).__name__, dt, None)
        if fold is not None:
            raise ValueError(f"{type(node).__name__} node with a per-neuron input scale our modules cannot hold; "
                             "from_nir folds it into the preceding Affine of a chain")
        return _WholeSequence(m)

    return {nir.Affine: _linear_module, nir.Linear: _linear_module, nir.LIF: neuron, nir.CubaLIF: neuron,
            nir.LI: neuron, nir.CubaLI: neuron, nir.Threshold: lambda n: _Threshold(np.asarray(n.threshold))}


class _WholeSequence(nn.Module):
    """One of our neurons in a nirtorch ``GraphModule``.  nirtorch expects a module whose
    ``forward`` has a ``state`` argument to return ``(output, state)``; ours return the output
    alone unless asked, so this wrapper (without ``state``) is called as a stateless layer on
    the whole sequence."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def module_map(*, dt: float) -> dict:
    """Module type -> NIR node builder, for ``nirtorch.torch_to_nir(model, module_map(dt=...))``:
    the nodes :func:`to_nir` writes (with their metadata), for models that are not chains."""
    nir = _nir()
    dt = _check_dt(dt)

    def neuron(m):
        if isinstance(m, LIF) and m.reset != "zero":
            raise ValueError(f"{type(m).__name__} with reset={m.reset!r} (subtract) has no NIR equivalent")
        return _neuron_node(m, type(m).__name__, dt, nir)

    return {nn.Linear: lambda m: _linear_node(m, nir), LIF: neuron, PLIF: neuron, LI: neuron}


# ---------------------------------------------------------------------------------------------
# files


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
    """``from_nir(nir.read(path), **kwargs)`` with a clear error for a missing or unreadable file."""
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
