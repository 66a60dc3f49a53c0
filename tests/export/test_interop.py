"""NIR graphs against the real peers' own importers and exporters (snnTorch, Norse, SpikingJelly,
nirtorch), both directions, spikes compared exactly (see ``_interop.py`` for the precision and
margin argument).  ``EXPECTED`` is the table in the README's NIR section; ``python -m
tests.export.interop_table`` prints it from the same cases."""

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("nir", reason="NIR export needs nir (pip install 'spikescan[nir]')")

from spikescan.export import PEERS as PEER_RULES  # noqa: E402
from spikescan.export import node_map, to_nir  # noqa: E402
from tests.export._interop import DIRECTIONS, NETWORKS, PEERS, case, inputs, spikescan_net  # noqa: E402

pytestmark = [pytest.mark.interop,
              # Norse and snnTorch load and export through nirtorch's older API
              pytest.mark.filterwarnings("ignore:nirtorch.*deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")]  # Norse

TO, FROM = DIRECTIONS
# module to import for each peer (all of them load graphs through nirtorch)
MODULE = {"snntorch": "snntorch", "norse": "norse", "spikingjelly": "spikingjelly", "nirtorch": "nirtorch"}

EXPECTED = {
    **{(TO, p, n): "identical" for p in PEERS for n in NETWORKS},
    **{(FROM, p, n): "identical" for p in PEERS for n in NETWORKS},
    # no peer importer has a LI node: refused, with an alternative that runs identically
    (TO, "snntorch", "LI readout"): "refused",
    (TO, "norse", "LI readout"): "refused",
    (TO, "spikingjelly", "LI readout"): "refused",
    # SpikingJelly's importer takes one tau per layer
    (TO, "spikingjelly", "PLIF per-neuron"): "refused",
    # snnTorch and SpikingJelly export no non-spiking leaky integrator
    (FROM, "snntorch", "LI readout"): "n/a",
    (FROM, "spikingjelly", "LI readout"): "n/a",
    # Norse's exporter writes no w_in, and its LIFCell feeds the membrane the current of the
    # step before (v[t] uses i[t-1]): no dt reproduces it
    (FROM, "norse", "CUBA"): "differs",
}


def _require(peer):
    for mod in {MODULE[peer], "nirtorch"}:
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed (pip install 'spikescan[peers]')")


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_interop_table(direction, peer, network):
    _require(peer)
    out = case(direction, peer, network)
    assert out.status == EXPECTED[direction, peer, network], out.note
    if out.status == "refused":
        assert PEER_RULES[peer].label in out.note  # the message names the peer's limitation
        if network == "LI readout":
            assert "model[:-1]" in out.note and out.alternative.startswith("identical"), out.alternative


def test_norse_drops_a_li_node_silently_and_peer_norse_refuses_it():
    _require("norse")
    import norse.torch

    net, x = spikescan_net("LI readout"), inputs()
    graph = to_nir(net)
    m = norse.torch.from_nir(graph, dt=graph.metadata["dt"])
    with torch.no_grad():
        out, state = [], None
        for x_t in x.float().unbind(0):
            y, state = m(x_t, state)
            out.append(y)
        body = net[:3].float()(x.float())
    # what Norse returns is the readout's input: the LI node is gone
    torch.testing.assert_close(torch.stack(out), body, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Norse 1.1.0.*dropped silently.*model\\[:-1\\]"):
        to_nir(net, peer="norse")


def test_nirtorch_default_affine_map_drops_the_bias_and_node_map_keeps_it():
    _require("nirtorch")
    import nirtorch

    lin = nn.Linear(3, 2).double()
    with torch.no_grad():
        lin.bias.fill_(5.0)
    graph = to_nir(lin)
    x = torch.rand(4, 1, 3, dtype=torch.float64)
    ours = nirtorch.nir_to_torch(graph, node_map(dt=1e-3)).double()
    torch.testing.assert_close(ours(x)[0], lin(x), rtol=0, atol=0)
    theirs = nirtorch.nir_to_torch(graph, {}).double()  # nirtorch 2.6's DEFAULT_MAP
    assert not torch.allclose(theirs(x)[0], lin(x))  # it sets module.weight.bias, not module.bias


def test_nirtorch_runs_a_branching_graph_of_our_modules():
    _require("nirtorch")
    import nir
    import nirtorch

    net = spikescan_net("LIF chain")
    g = to_nir(net)
    # a skip connection: the input also drives the output layer through a second Affine
    skip = nir.Affine(weight=np.full((4, 6), 0.1, np.float32), bias=np.zeros(4, np.float32))
    nodes = dict(g.nodes) | {"skip": skip}
    edges = list(g.edges) + [("input", "skip"), ("skip", "3")]
    branched = nir.NIRGraph(nodes=nodes, edges=edges, metadata=g.metadata)
    x = inputs()
    gm = nirtorch.nir_to_torch(branched, node_map(dt=1e-3)).double()
    with torch.no_grad():
        expected = net[3](net[2](net[1](net[0](x))) + x @ torch.from_numpy(skip.weight).double().T)
        got = gm(x)[0]
    assert got.sum() > 0
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
