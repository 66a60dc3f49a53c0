"""NIR interop with the real peers, shared by ``test_interop.py`` and the table script
(``python -m tests.export.interop_table``): each case builds a network on one side, moves it
through NIR with the other side's own exporter / importer, runs both and reports an
:class:`Outcome`.

Spikes are compared exactly.  Both sides run in float64 where the peer allows it (SpikingJelly,
nirtorch); snnTorch's spikes are float32 whatever its parameters and Norse keeps its parameters
in float32, so those run in float32.  Two things can then move a membrane without any real
difference: the float32 rounding of NIR's stored time constants (2**-24 relative, in every
peer), and float32 arithmetic, which rounds the matmul and the update of each step by at most
``(fan_in + 3) * 2**-24`` relative, ``T (fan_in + 3) 2**-24 max|v|`` ~ 1.5e-4 over these
networks' 25 steps (fan-in 8, |v| < 9).  So every case first checks, on an independent float64
simulation of the spikescan side, that no membrane comes within ``MARGIN`` = 5e-4 of its
threshold -- a spike that differs then is a real difference, not rounding.  LI readouts
(membranes, not spikes) are compared to ``READOUT_RTOL``: the same rounding through T leaky
steps stays below ``T * 2**-22`` ~ 6e-6 relative to the readout's scale, so 1e-5.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from spikescan.export import from_nir, module_map, node_map, to_nir
from spikescan.nn import LI, LIF, PLIF

NETWORKS = ("LIF chain", "CUBA", "PLIF per-neuron", "LI readout")
PEERS = ("snntorch", "norse", "spikingjelly", "nirtorch")
DIRECTIONS = ("spikescan -> peer", "peer -> spikescan")
T, B, N_IN, N_HID, N_OUT = 25, 3, 6, 8, 4
DT = 1e-3
MARGIN = 5e-4
READOUT_RTOL = 1e-5


class Outcome(NamedTuple):
    status: str  # "identical" | "differs" | "refused" | "n/a"
    note: str = ""  # the details: spike counts, the refusal's message
    alternative: str = ""  # a refused LI readout: the outcome of the alternative its message names


# ---------------------------------------------------------------------------------------------
# spikescan side


def _linears() -> tuple[nn.Linear, nn.Linear]:
    """The two weight layers every network of a row shares, scaled so that both layers fire."""
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(N_IN, N_HID), nn.Linear(N_HID, N_OUT)
    with torch.no_grad():
        for lin in (lin1, lin2):
            lin.weight.mul_(3.0)
            lin.bias.add_(0.4)
    return lin1, lin2


def spikescan_net(network: str) -> nn.Sequential:
    """The spikescan network of each row (reference loops: float64 kernels would compile)."""
    tau_syn = 0.005 if network == "CUBA" else None
    if network == "PLIF per-neuron":
        l1 = PLIF(N_HID, tau_syn=None, threshold=0.3, input_scale="one_minus_decay")
        l2 = PLIF(N_OUT, tau_syn=None, threshold=0.2, input_scale="one_minus_decay")
        with torch.no_grad():  # per-neuron decays in [0.6, 0.95]
            l1.mem.w.copy_(torch.linspace(0.4, 2.9, N_HID))
            l2.mem.w.copy_(torch.linspace(0.5, 2.5, N_OUT))
    else:
        l1 = LIF(N_HID, tau_syn=tau_syn, tau_mem=0.01, dt=DT, threshold=0.3, input_scale="one_minus_decay")
        l2 = LIF(N_OUT, tau_syn=tau_syn, tau_mem=0.02, dt=DT, threshold=0.2, input_scale="one_minus_decay")
    if network == "LI readout":  # the README network: Linear-LIF-Linear-LI (a CubaLI)
        l2 = LI(N_OUT, tau_syn=0.02, dt=DT, input_scale="one_minus_decay")
    lin1, lin2 = _linears()
    net = nn.Sequential(lin1, l1, lin2, l2)
    for m in net:
        if hasattr(m, "backend"):
            m.backend = "sequential"
    return net.double().eval()


def inputs(seed: int = 5) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(0.0, 1.5, (T, B, N_IN)))


def _f64(v) -> np.ndarray:
    return torch.as_tensor(v, dtype=torch.float64).detach().numpy()


def simulate(net: nn.Sequential, x: torch.Tensor) -> tuple[np.ndarray, float]:
    """``(output, margin)``: an independent float64 loop over the spikescan modules' per-step
    constants, and the smallest distance of any spiking membrane to its threshold."""
    h = x.numpy().astype(np.float64)
    margin = np.inf
    for m in net:
        if isinstance(m, nn.Linear):
            h = h @ m.weight.detach().double().numpy().T
            if m.bias is not None:
                h = h + m.bias.detach().double().numpy()
            continue
        f = m.features
        b = np.broadcast_to(_f64(m.mem()), (f,))
        a = None if m.syn is None else np.broadcast_to(_f64(m.syn()), (f,))
        spiking = isinstance(m, LIF)
        scale = 1.0 - b if m.input_scale == "one_minus_decay" else float(m.input_scale)
        th = np.broadcast_to(_f64(m.threshold), (f,)) if spiking else None
        cur, v, out = np.zeros(h.shape[1:]), np.zeros(h.shape[1:]), np.empty_like(h)
        for t in range(h.shape[0]):
            cur = h[t] if a is None else a * cur + h[t]
            v = b * v + scale * cur
            if spiking:
                margin = min(margin, float(np.abs(v - th).min()))
                s = (v >= th).astype(np.float64)
                out[t] = s
                v = np.where(s > 0, m.v_reset, v)
            else:
                out[t] = v
        h = out
    return h, margin


def _compare(ours: np.ndarray, theirs: np.ndarray, spiking: bool, note: str = "") -> Outcome:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        return Outcome("differs", f"output shape {theirs.shape} instead of {ours.shape}. {note}".strip())
    if spiking:
        n = int((ours != theirs).sum())
        if n:
            return Outcome("differs", f"{n} of {ours.size} spikes differ. {note}".strip())
        return Outcome("identical", f"{int(ours.sum())} spikes. {note}".strip())
    err = float(np.abs(ours - theirs).max() / np.abs(ours).max())
    if err > READOUT_RTOL:
        return Outcome("differs", f"readout off by {err:.2g} of its scale. {note}".strip())
    return Outcome("identical", f"readout within {err:.1g} of its scale. {note}".strip())


def _checked_run(net, x) -> tuple[np.ndarray, float]:
    """spikescan's own output, asserted equal to the independent simulation, and the margin."""
    with torch.no_grad():
        out = net(x).numpy()
    ref, margin = simulate(net, x)
    spiking = isinstance(net[-1], LIF)
    if spiking:
        assert np.array_equal(out, ref), "spikescan disagrees with the float64 simulation of its own constants"
        assert out.sum() > 5 and out.mean() < 0.9, f"a case must fire, and not always: {out.mean():.2f}"
    else:
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    assert margin > MARGIN, f"a membrane comes within {margin:.2g} of its threshold: choose other inputs"
    return out, margin


# snnTorch's spikes are float32 whatever its parameters ((x > 0).float()), Norse keeps its
# parameters in float32: both run in float32
DTYPE = {"snntorch": torch.float32, "norse": torch.float32, "spikingjelly": torch.float64, "nirtorch": torch.float64}


def _steps(step: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dtype=torch.float64) -> np.ndarray:
    return torch.stack([step(x_t.to(dtype)) for x_t in x.unbind(0)]).detach().double().numpy()


@contextlib.contextmanager
def _quiet():
    """The peers print and log on import (snnTorch's "replace rnn subgraph", Norse's r warning)."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _loaded_readout(peer: str, net: nn.Sequential, x: torch.Tensor) -> np.ndarray:
    """The refusal's alternative, done: the graph without the readout in the peer, then the LI
    rebuilt from the peer's own modules as the error message says."""
    body = peer_model(peer, to_nir(net[:-1], peer=peer))
    li = net[-1]
    a = float(li.syn()) if li.syn is not None else None
    b = float(li.mem())
    y = torch.from_numpy(body(x))
    if peer == "snntorch":
        import snntorch as snn

        cell = snn.Synaptic(alpha=a, beta=b, reset_mechanism="none") if a is not None else None
        syn = mem = torch.zeros_like(y[0])
        out = []
        for y_t in y.unbind(0):
            if cell is None:
                mem = b * mem + y_t
            else:
                _, syn, mem = cell(y_t, syn, mem)
            out.append((1 - b) * mem)
        return torch.stack(out).numpy()
    if peer == "spikingjelly":
        from spikingjelly.activation_based import functional, neuron

        cell = (neuron.CUBALIFNode(c_decay=a, v_decay=b, v_threshold=float("inf")) if a is not None else
                neuron.LIFNode(tau=1 / (1 - b), decay_input=True, v_threshold=float("inf")))
        functional.reset_net(cell)
        out = []
        for y_t in y.unbind(0):
            cell(y_t)
            out.append(cell.v * (1 - b) if a is not None else cell.v)
        return torch.stack(out).numpy()
    if peer == "norse":
        from norse.torch import LIBoxCell, LIBoxParameters

        syn_cell = LIBoxCell(LIBoxParameters(tau_mem_inv=torch.tensor((1 - a) / DT)), dt=DT) if a is not None else None
        mem_cell = LIBoxCell(LIBoxParameters(tau_mem_inv=torch.tensor((1 - b) / DT)), dt=DT)
        s_syn = s_mem = None
        out = []
        for y_t in y.unbind(0):
            cur = y_t
            if syn_cell is not None:
                cur, s_syn = syn_cell(y_t / (1 - a), s_syn)
            u, s_mem = mem_cell(cur, s_mem)
            out.append(u)
        return torch.stack(out).detach().double().numpy()
    raise AssertionError(peer)


def peer_model(peer: str, graph) -> Callable[[torch.Tensor], np.ndarray]:
    """The peer's own importer on ``graph``, as a function of a whole ``[T, B, F]`` float64 input."""
    with _quiet():
        if peer == "snntorch":
            from snntorch.import_nir import import_from_nir

            m = import_from_nir(graph)
            return lambda x: _steps(lambda x_t: m(x_t)[0], x, DTYPE[peer])
        if peer == "spikingjelly":
            from spikingjelly.activation_based.nir_exchange import import_from_nir

            m = import_from_nir(graph, dt=graph.metadata["dt"], dtype=torch.float64)
        elif peer == "norse":
            import norse.torch

            m = norse.torch.from_nir(graph, dt=graph.metadata["dt"])
        elif peer == "nirtorch":
            import nirtorch

            m = nirtorch.nir_to_torch(graph, node_map(dt=graph.metadata["dt"])).double()
            return lambda x: m(x)[0].detach().numpy()
        else:
            raise AssertionError(peer)

    def run(x):
        state = None

        def step(x_t):
            nonlocal state
            out, state = m(x_t, state)
            return out

        with _quiet():
            return _steps(step, x, DTYPE[peer])

    return run


def to_peer(peer: str, network: str) -> Outcome:
    """spikescan -> NIR (``to_nir(peer=...)``) -> the peer's importer."""
    net, x = spikescan_net(network), inputs()
    ours, _ = _checked_run(net, x)
    spiking = network != "LI readout"
    try:
        graph = to_nir(net, peer=None if peer == "nirtorch" else peer)
    except ValueError as exc:
        if spiking:
            return Outcome("refused", str(exc))
        alt = _compare(ours, _loaded_readout(peer, net, x), spiking=False)
        return Outcome("refused", str(exc), f"{alt.status}: {alt.note}")
    return _compare(ours, peer_model(peer, graph)(x), spiking)


# ---------------------------------------------------------------------------------------------
# peer side


def _peer_net(peer: str, network: str):
    """``(module, run, export)``: the peer's network, its float64 run on ``[T, B, F]``, and its
    exporter's graph with the ``dt`` to read it at (``None``: not expressible there)."""
    lin1, lin2 = _linears()
    b1, b2 = np.exp(-DT / 0.01), np.exp(-DT / 0.02)
    a = np.exp(-DT / 0.005)
    if peer == "snntorch":
        import snntorch as snn
        from snntorch import utils
        from snntorch.export_nir import export_to_nir

        def full(n, v):  # a scalar beta fails its exporter's type inference
            return torch.full((n,), float(v))

        if network == "LIF chain":
            n1 = snn.Leaky(beta=full(N_HID, b1), threshold=full(N_HID, 0.3), reset_mechanism="zero", init_hidden=True)
            n2 = snn.Leaky(beta=full(N_OUT, b2), threshold=full(N_OUT, 0.2), reset_mechanism="zero", init_hidden=True)
        elif network == "CUBA":
            n1 = snn.Synaptic(alpha=full(N_HID, a), beta=full(N_HID, b1), threshold=full(N_HID, 0.3),
                              reset_mechanism="zero", reset_delay=False, init_hidden=True)
            n2 = snn.Synaptic(alpha=full(N_OUT, a), beta=full(N_OUT, b2), threshold=full(N_OUT, 0.2),
                              reset_mechanism="zero", reset_delay=False, init_hidden=True)
        elif network == "PLIF per-neuron":
            # its exporter needs the threshold in the shape of the per-neuron beta (NIR's shape check)
            n1 = snn.Leaky(beta=torch.linspace(0.6, 0.95, N_HID), learn_beta=True, threshold=torch.full((N_HID,), 0.3),
                           reset_mechanism="zero", init_hidden=True)
            n2 = snn.Leaky(beta=torch.linspace(0.7, 0.9, N_OUT), learn_beta=True, threshold=torch.full((N_OUT,), 0.2),
                           reset_mechanism="zero", init_hidden=True)
        else:
            return None
        net = nn.Sequential(lin1, n1, lin2, n2)

        def run(x):
            utils.reset(net)
            return _steps(net, x, DTYPE[peer])  # init_hidden neurons keep their state, return spikes only

        def export():
            with _quiet():
                return export_to_nir(net, torch.zeros(1, N_IN), ignore_dims=[0]), 1e-4

        return net, run, export
    if peer == "spikingjelly":
        from spikingjelly.activation_based import functional, layer, neuron
        from spikingjelly.activation_based.nir_exchange import export_to_nir

        l1, l2 = layer.Linear(N_IN, N_HID), layer.Linear(N_HID, N_OUT)
        l1.load_state_dict(lin1.state_dict())
        l2.load_state_dict(lin2.state_dict())
        if network == "LIF chain":
            n1 = neuron.LIFNode(tau=1 / (1 - b1), decay_input=True, v_threshold=0.3, v_reset=0.0)
            n2 = neuron.LIFNode(tau=1 / (1 - b2), decay_input=True, v_threshold=0.2, v_reset=0.0)
        elif network == "CUBA":
            n1 = neuron.CUBALIFNode(c_decay=a, v_decay=b1, v_threshold=0.3, v_reset=0.0)
            n2 = neuron.CUBALIFNode(c_decay=a, v_decay=b2, v_threshold=0.2, v_reset=0.0)
        elif network == "PLIF per-neuron":  # SpikingJelly's PLIF learns one tau per layer
            n1 = neuron.ParametricLIFNode(init_tau=1 / (1 - b1), decay_input=True, v_threshold=0.3, v_reset=0.0)
            n2 = neuron.ParametricLIFNode(init_tau=1 / (1 - b2), decay_input=True, v_threshold=0.2, v_reset=0.0)
        else:
            return None
        net = nn.Sequential(l1, n1, l2, n2).double()

        def run(x):
            functional.reset_net(net)
            out = _steps(net, x)
            functional.reset_net(net)
            return out

        def export():
            with _quiet():
                return export_to_nir(net, torch.zeros(2, N_IN, dtype=torch.float64), dt=1e-4), 1e-4

        return net, run, export
    if peer == "norse":
        import norse.torch as norse
        from norse.torch import LIBoxCell, LIBoxParameters, LIFBoxCell, LIFBoxParameters, LIFCell, LIFParameters

        def full(n, v):  # its exporter needs every parameter in the layer's shape
            return torch.full((n,), float(v))

        if network in ("LIF chain", "LI readout"):
            n1 = LIFBoxCell(LIFBoxParameters(tau_mem_inv=full(N_HID, 100.0), v_th=full(N_HID, 0.3), v_leak=full(N_HID, 0)), dt=DT)
            n2 = LIFBoxCell(LIFBoxParameters(tau_mem_inv=full(N_OUT, 50.0), v_th=full(N_OUT, 0.2), v_leak=full(N_OUT, 0)), dt=DT)
            if network == "LI readout":
                n2 = LIBoxCell(LIBoxParameters(tau_mem_inv=full(N_OUT, 50.0), v_leak=full(N_OUT, 0)), dt=DT)
        elif network == "CUBA":
            n1 = LIFCell(LIFParameters(tau_syn_inv=full(N_HID, 200.0), tau_mem_inv=full(N_HID, 100.0),
                                       v_th=full(N_HID, 0.3), v_leak=full(N_HID, 0)), dt=DT)
            n2 = LIFCell(LIFParameters(tau_syn_inv=full(N_OUT, 200.0), tau_mem_inv=full(N_OUT, 50.0),
                                       v_th=full(N_OUT, 0.2), v_leak=full(N_OUT, 0)), dt=DT)
        else:  # per-neuron time constants
            n1 = LIFBoxCell(LIFBoxParameters(tau_mem_inv=torch.linspace(50.0, 400.0, N_HID), v_th=full(N_HID, 0.3),
                                             v_leak=full(N_HID, 0)), dt=DT)
            n2 = LIFBoxCell(LIFBoxParameters(tau_mem_inv=torch.linspace(80.0, 300.0, N_OUT), v_th=full(N_OUT, 0.2),
                                             v_leak=full(N_OUT, 0)), dt=DT)
        net = norse.SequentialState(lin1, n1, lin2, n2)

        def run(x):
            state = None

            def step(x_t):
                nonlocal state
                out, state = net(x_t, state)
                return out

            return _steps(step, x, DTYPE[peer])

        def export():
            # its exporter writes tau = dt * tau_mem (dt / tau_mem_inv): integrated at dt**2, the
            # graph takes the steps Norse takes
            with _quiet():
                return norse.to_nir(net, torch.zeros(1, N_IN), dt=DT), DT**2

        return net, run, export
    if peer == "nirtorch":
        import nirtorch

        net = spikescan_net(network)

        def export():
            return nirtorch.torch_to_nir(net, module_map(dt=DT)), DT  # nirtorch writes no metadata

        return net, lambda x: net(x).detach().numpy(), export
    raise AssertionError(peer)


# why a case differs, for the table (test_interop.py asserts which cases do)
KNOWN = {
    ("norse", "CUBA"): "Norse's exporter writes no w_in, and its LIFCell feeds the membrane the current of the step "
                       "before (v[t] uses i[t-1]), which no NIR CubaLIF at any dt describes.",
}


def from_peer(peer: str, network: str) -> Outcome:
    """The peer's network -> its own NIR exporter -> ``spikescan.export.from_nir``."""
    made = _peer_net(peer, network)
    if made is None:
        return Outcome("n/a", f"{peer}'s exporter writes no {network.split()[0]} node")
    _, run, export = made
    x = inputs()
    theirs = run(x)
    graph, dt = export()
    ours_net = from_nir(graph, dt=dt)
    for m in ours_net:
        if hasattr(m, "backend"):
            m.backend = "sequential"
    ours_net = ours_net.double()
    spiking = network != "LI readout"
    with torch.no_grad():
        ours = ours_net(x).numpy()
    dt_text = f"{dt:.0e}".replace("e-0", "e-")
    out = _compare(theirs, ours, spiking, f"Read at dt={dt_text}. {KNOWN.get((peer, network), '')}".strip())
    _, margin = simulate(ours_net, x)
    if out.status == "differs" and spiking and margin < MARGIN:
        out = out._replace(note=f"{out.note} A membrane comes within {margin:.2g} of its threshold.")
    return out


def case(direction: str, peer: str, network: str) -> Outcome:
    return (to_peer if direction == DIRECTIONS[0] else from_peer)(peer, network)
