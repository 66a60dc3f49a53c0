"""NIR export/import: the exported ODE constants, integrated by an independent forward-Euler
simulator of the NIR equations, reproduce our layers; write/read round trips; clear errors."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")

from spikescan.export import from_nir, read, to_nir, write  # noqa: E402
from spikescan.nn import LI, LIF, PLIF, SPSN  # noqa: E402

DT = 1e-3


def _euler(graph, x: np.ndarray) -> np.ndarray:
    """Simulate a chain-shaped NIR graph with forward Euler at the graph's dt, straight from the
    NIR node equations (written here independently of spikescan's code)."""
    dt = graph.metadata["dt"]
    order, node = [], "input"
    succ = dict(graph.edges)
    while node in succ:
        node = succ[node]
        order.append(node)
    T = x.shape[0]
    h = x.astype(np.float64)
    for name in order:
        n = graph.nodes[name]
        kind = type(n).__name__
        if kind == "Output":
            break
        if kind == "Affine":
            h = h @ n.weight.T.astype(np.float64) + n.bias
        elif kind == "Linear":
            h = h @ n.weight.T.astype(np.float64)
        elif kind == "Threshold":
            h = (h > n.threshold).astype(np.float64)
        elif kind in ("CubaLIF", "CubaLI", "LIF", "LI"):
            cuba = kind.startswith("Cuba")
            tau_mem = np.asarray(n.tau_mem if cuba else n.tau, np.float64)
            cur = np.zeros(h.shape[1:])
            v = np.zeros(h.shape[1:])
            out = np.empty_like(h)
            for t in range(T):
                if cuba:
                    cur = cur + dt / n.tau_syn * (-cur + n.w_in * h[t])
                else:
                    cur = h[t]
                v = v + dt / tau_mem * (n.v_leak - v + n.r * cur)
                if kind.endswith("LIF"):
                    z = (v > n.v_threshold).astype(np.float64)
                    out[t] = z
                    v = np.where(z > 0, n.v_reset, v)
                else:
                    out[t] = v
            h = out
        else:
            raise AssertionError(kind)
    return h


def _lif_net(learn=False, input_scale="one_minus_decay", plif=False):
    torch.manual_seed(0)
    cls = PLIF if plif else LIF
    return nn.Sequential(nn.Linear(12, 16), cls(16, 0.005, 0.02, DT, threshold=0.3, learn_tau=learn,
                                                input_scale=input_scale),
                         nn.Dropout(0.2), nn.Linear(16, 5), LI(5, 0.01, 0.02, DT)).eval()


def _close_spikes(a: np.ndarray, b: np.ndarray, frac=0.995):
    # float32 (ours) vs float64 (simulator): a spike may flip on a near-tie; allow very few.
    assert a.shape == b.shape
    assert (a == b).mean() >= frac, (a != b).sum()


@pytest.mark.parametrize("learn,input_scale,plif", [(False, "one_minus_decay", False),
                                                     (True, "one_minus_decay", False),
                                                     (False, 2.5, False), (False, "one_minus_decay", True)])
def test_exported_constants_reproduce_lif_network(learn, input_scale, plif):
    net = _lif_net(learn, input_scale, plif)
    if learn:
        with torch.no_grad():
            net[1].mem.log_tau.uniform_(np.log(0.01), np.log(0.05))
    x = torch.rand(40, 3, 12) * 3
    graph = to_nir(net)
    assert graph.metadata["dt"] == DT
    assert [type(graph.nodes[k]).__name__ for k in ("0", "1", "3", "4")] == ["Affine", "CubaLIF", "Affine", "CubaLI"]
    assert "2" not in graph.nodes  # dropout dropped
    # the network in float64, like the simulator: in float32 a near-tie membrane may flip a spike
    # and every later output with it, whatever the tolerance
    net64 = copy.deepcopy(net).double()
    with torch.no_grad():
        ours = net64(x.double()).numpy()
        spikes = net64[1](net64[0](x.double())).numpy()
    assert spikes.sum() > 10  # the test exercises firing and reset
    sub = nir.NIRGraph(nodes={k: graph.nodes[k] for k in ("input", "0", "1")} | {"output": graph.nodes["output"]},
                       edges=[("input", "0"), ("0", "1"), ("1", "output")], metadata=graph.metadata,
                       type_check=False)
    np.testing.assert_array_equal(spikes, _euler(sub, x.numpy()))
    # the graph's constants are the float32 network's (each rounded to ~6e-8 relative), carried
    # through 40 steps of leaky integration: a few 1e-6 relative, so 2e-5
    np.testing.assert_allclose(_euler(graph, x.numpy()), ours, rtol=2e-5, atol=1e-7)


def test_spsn_exports_only_when_asked_and_as_deterministic_threshold():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(8, 10), SPSN(10, 0.005, 0.02, DT), nn.Linear(10, 4), LI(4, 0.01, 0.02, DT))
    with pytest.raises(ValueError, match="stochastic SPSN.*spsn='threshold'"):
        to_nir(net)
    graph = to_nir(net, spsn="threshold")
    kinds = [type(graph.nodes[k]).__name__ for k in ("1", "1_threshold")]
    assert kinds == ["CubaLI", "Threshold"]
    x = torch.rand(30, 2, 8) * 4
    with torch.no_grad():
        u = net[1].membrane(net[0](x)).numpy()
    sub = nir.NIRGraph(nodes={k: graph.nodes[k] for k in ("input", "0", "1", "1_threshold")} | {"output": graph.nodes["output"]},
                       edges=[("input", "0"), ("0", "1"), ("1", "1_threshold"), ("1_threshold", "output")],
                       metadata=graph.metadata, type_check=False)
    _close_spikes((u > 0).astype(np.float64), _euler(sub, x.numpy()))
    back = from_nir(graph)
    with torch.no_grad():
        det = back[:3](x).numpy()
    _close_spikes((u >= 0).astype(np.float32), det)


def test_write_read_round_trip_gives_the_same_network(tmp_path):
    net = _lif_net(learn=True)
    path = tmp_path / "net.nir"
    write(path, net)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    back = read(path).eval()
    x = torch.rand(50, 4, 12) * 3
    with torch.no_grad():
        a, b = net(x), back(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert isinstance(back[1], LIF) and isinstance(back[3], LI)


def test_per_neuron_threshold_round_trip():
    net = _lif_net()
    net[1].threshold = nn.Parameter(torch.linspace(0.2, 0.5, 16))
    back = from_nir(to_nir(net)).eval()
    x = torch.rand(20, 2, 12) * 3
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x), rtol=1e-4, atol=1e-5)


def test_unsupported_layers_and_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="subtract.*no NIR equivalent"):
        to_nir(nn.Sequential(nn.Linear(3, 4), LIF(4, reset="subtract")))
    with pytest.raises(ValueError, match="'1'.*ReLU.*no NIR export"):
        to_nir(nn.Sequential(nn.Linear(3, 4), nn.ReLU()))
    with pytest.raises(ValueError, match="start with an nn.Linear"):
        to_nir(nn.Sequential(LI(4)))
    with pytest.raises(ValueError, match="different dt"):
        to_nir(nn.Sequential(nn.Linear(3, 4), LIF(4, dt=1e-3), nn.Linear(4, 2), LI(2, dt=2e-3)))
    with pytest.raises(ValueError, match="spsn must be"):
        to_nir(_lif_net(), spsn="sample")
    with pytest.raises(FileNotFoundError, match="missing.nir"):
        read(tmp_path / "missing.nir")
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="bad.nir.*could not be read"):
        read(bad)
    graph = to_nir(_lif_net())
    graph.metadata.pop("dt")
    with pytest.raises(ValueError, match="no 'dt'"):
        from_nir(graph)


def test_cli_export_of_a_trained_run(tmp_path, capsys):
    from spikescan.cli import main

    run = tmp_path / "run"
    main(["train", "--neuron", "lif", "--hidden", "16", "--epochs", "1", "--max-batches", "2",
          "--out", str(run), "--no-progress"])
    assert main(["export", str(run)]) == 0
    net = read(run / "network.nir")
    assert isinstance(net[1], LIF) and isinstance(net[-1], LI)
    from spikescan.train.evaluate import load_run_model

    model, _ = load_run_model(run)
    x = torch.rand(64, 3, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-5)
    run2 = tmp_path / "run2"
    main(["train", "--hidden", "16", "--epochs", "1", "--max-batches", "2", "--out", str(run2), "--no-progress"])
    capsys.readouterr()
    assert main(["export", str(run2)]) == 1
    assert "stochastic SPSN" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# read-back: the imported module is the exported one


def _trained_like_net():
    """One of each exported kind, every parameter moved off its initial value."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(6, 8), PLIF(8, tau_syn=None, threshold=0.3, input_scale="one_minus_decay"),
                        nn.Linear(8, 7), LIF(7, tau_syn=0.02, learn_tau=True, learn_threshold=True, input_scale=2.5,
                                             surrogate="atan", detach_reset=False),
                        nn.Linear(7, 5), LIF(5, tau_syn=None, tau_mem=0.03, threshold=0.25),
                        nn.Linear(5, 3), LI(3, tau_syn=0.02, learn_tau=True, input_scale=0.7)).eval()
    with torch.no_grad():
        net[1].mem.w.uniform_(0.5, 3.0)
        net[3].mem.log_tau.uniform_(np.log(0.01), np.log(0.05))
        net[3].threshold.uniform_(0.2, 0.4)
        net[7].syn.log_tau.uniform_(np.log(0.005), np.log(0.05))
        net[7].mem.log_tau.uniform_(np.log(0.005), np.log(0.05))
    return net


def _signature(m):
    """What must survive the round trip, apart from the parameter values."""
    out = [type(m).__name__, sorted(n for n, _ in m.named_parameters())]
    if isinstance(m, (LIF, LI)):
        out += [m.input_scale, type(m.input_scale)]
    if isinstance(m, LIF):
        out += [type(m.threshold), m.surrogate, m.detach_reset, m.v_reset,
                m.mem.learn if hasattr(m.mem, "learn") else "sigmoid"]
    return out


@pytest.mark.parametrize("via_file", [False, True])
def test_round_trip_rebuilds_the_exported_modules_bit_for_bit(tmp_path, via_file):
    net = _trained_like_net()
    if via_file:
        write(tmp_path / "net.nir", net)
        back = read(tmp_path / "net.nir")
    else:
        back = from_nir(to_nir(net))
    assert [_signature(m) for m in back] == [_signature(m) for m in net]
    assert sum(p.numel() for p in back.parameters()) == sum(p.numel() for p in net.parameters())
    for (name, p), q in zip(net.named_parameters(), back.parameters()):
        assert torch.equal(p, q), name
    x = torch.rand(40, 3, 6) * 3
    with torch.no_grad():
        assert net[:2](x).sum() > 10 and net[:4](x).sum() > 10
        assert torch.equal(back(x), net(x))


def test_import_of_a_graph_without_our_metadata_builds_from_the_constants():
    net = _trained_like_net()
    graph = to_nir(net)
    for node in graph.nodes.values():
        node.metadata = {}
    back = from_nir(graph)
    assert [type(m).__name__ for m in back] == ["Linear", "LIF", "Linear", "LIF", "Linear", "LIF", "Linear", "LI"]
    # per-neuron values need a tensor, shared ones stay floats
    assert back[1].mem.learn and not back[5].mem.learn and not back[3].syn.learn
    assert isinstance(back[3].threshold, nn.Parameter) and isinstance(back[5].threshold, float)
    assert back[1].input_scale == "one_minus_decay" and back[5].input_scale == 1.0
    assert back[7].input_scale == pytest.approx(0.7, rel=1e-6)
    assert back[3].input_scale == pytest.approx(2.5, rel=1e-6)  # r and tau_mem are float32 in the graph
    net64, back64 = copy.deepcopy(net).double(), back.double()
    x = torch.rand(40, 3, 6, dtype=torch.float64) * 3
    with torch.no_grad():
        ref = net64(x)
        # the graph's float32 time constants (2**-24 relative) give decays that differ by as
        # little from ours; through 40 steps the readout moves by a few 1e-7 of its scale
        # unless a spike flips, which would move it by ~1e-2
        assert (back64(x) - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_per_neuron_input_scale_of_a_foreign_graph_folds_into_the_preceding_affine():
    f = 4
    tau = np.array([0.01, 0.02, 0.015, 0.03], np.float32)
    r = np.array([0.5, 2.0, 1.5, 3.0], np.float32)  # neither 1 (= 1 - decay) nor one number
    w = np.random.default_rng(0).uniform(-1, 1, (f, 3)).astype(np.float32)
    lif = nir.LIF(tau=tau, r=r, v_leak=np.zeros(f, np.float32), v_threshold=np.full(f, 0.2, np.float32))
    graph = nir.NIRGraph.from_list(nir.Affine(weight=w, bias=np.full(f, 0.3, np.float32)), lif)
    graph.metadata = {"dt": DT}
    back = from_nir(graph).double()
    assert back[1].input_scale == "one_minus_decay"
    x = np.random.default_rng(1).uniform(0, 2, (50, 2, 3))
    with torch.no_grad():
        ours = back(torch.from_numpy(x)).numpy()
    assert ours.sum() > 5
    _close_spikes(ours, _euler(graph, x))
    alone = nir.NIRGraph.from_list(lif)
    alone.metadata = {"dt": DT}
    with pytest.raises(ValueError, match="per-neuron input scale.*no Affine/Linear before it"):
        from_nir(alone)


def test_zero_d_parameters_take_the_width_of_the_preceding_affine():
    def lif():
        return nir.LIF(tau=np.array(0.01), r=np.array(1.0), v_leak=np.array(0.0), v_threshold=np.array(0.2))

    graph = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((5, 2), np.float32), bias=np.zeros(5, np.float32)),
                                   lif(), type_check=False)
    graph.metadata = {"dt": DT}
    back = from_nir(graph)
    assert back[1].features == 5
    assert back(torch.rand(10, 3, 2)).shape == (10, 3, 5)
    alone = nir.NIRGraph.from_list(lif(), type_check=False)
    alone.metadata = {"dt": DT}
    with pytest.raises(ValueError, match="0-d parameters and no preceding Affine/Linear"):
        from_nir(alone)
    bad = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((5, 2), np.float32), bias=np.zeros(5, np.float32)),
                                 nir.LIF(tau=np.full(3, 0.01), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
                                 type_check=False)
    bad.metadata = {"dt": DT}
    with pytest.raises(ValueError, match="has 3 neurons but its input has 5 features"):
        from_nir(bad)


def test_plif_without_synaptic_stage_exports_at_the_default_or_given_dt():
    from spikescan.export.nir import DEFAULT_DT

    net = nn.Sequential(nn.Linear(3, 4), PLIF(4, tau_syn=None, threshold=0.5))
    assert to_nir(net).metadata["dt"] == DEFAULT_DT  # a PLIF keeps no dt of its own
    graph = to_nir(net, dt=1e-4)
    assert graph.metadata["dt"] == 1e-4
    b = net[1].mem().detach().double().numpy()
    np.testing.assert_allclose(graph.nodes["1"].tau, 1e-4 / (1 - b), rtol=1e-7)
    back = from_nir(graph)
    assert isinstance(back[1], PLIF)
    x = torch.rand(30, 2, 3) * 3
    with torch.no_grad():
        assert torch.equal(back(x), net(x))


def test_dt_on_write_and_read():
    net = _lif_net()
    g3, g4 = to_nir(net), to_nir(net, dt=1e-4)
    assert (g3.metadata["dt"], g4.metadata["dt"]) == (DT, 1e-4)
    # the same per-step decays in another time unit: the time constants scale with dt
    np.testing.assert_allclose(g4.nodes["1"].tau_mem, g3.nodes["1"].tau_mem / 10, rtol=1e-6)
    x = torch.rand(30, 2, 12) * 3
    with torch.no_grad():
        assert torch.equal(from_nir(g4)(x), net(x))
    # read at another step: the time constants hold, the per-step decays follow dt
    slow = from_nir(g3, dt=2e-3)
    np.testing.assert_allclose(slow[1].mem(), 1 - 2e-3 / g3.nodes["1"].tau_mem.astype(np.float64), rtol=1e-12)
    for bad in (0.0, -1e-3, float("nan"), "1e-3", True):
        with pytest.raises(ValueError, match="dt must be a positive finite number"):
            to_nir(net, dt=bad)
        with pytest.raises(ValueError, match="dt must be a positive finite number"):
            from_nir(g3, dt=bad)


def test_lif_threshold_tensor_is_a_value_error_naming_the_per_neuron_way():
    with pytest.raises(ValueError, match="threshold must be one number.*learn_threshold=True"):
        LIF(4, threshold=torch.ones(4))


def test_rlif_is_refused_rather_than_exported_without_its_recurrence():
    from spikescan.nn import RLIF

    with pytest.raises(ValueError, match="RLIF.*no NIR export"):
        to_nir(nn.Sequential(nn.Linear(3, 4), RLIF(4)))


# ---------------------------------------------------------------------------------------------
# peer forms (the peers' own importers are run in test_interop.py)


@pytest.mark.parametrize("peer", ["snntorch", "spikingjelly", "norse"])
@pytest.mark.parametrize("input_scale", ["one_minus_decay", 2.5])
def test_peer_graphs_compute_the_same_network(peer, input_scale):
    net = _lif_net(input_scale=input_scale)[:2]
    graph = to_nir(net, dt=None if peer == "snntorch" else 1e-3, peer=peer)
    assert graph.metadata["peer"] == peer
    node = graph.nodes["1"]
    dt = graph.metadata["dt"]
    assert dt == (1e-4 if peer == "snntorch" else DT)
    if peer == "snntorch" or (peer == "spikingjelly" and input_scale != "one_minus_decay"):
        # no input resistance there: r = tau/dt, the scale sits in the weights
        np.testing.assert_allclose(node.r, node.tau_mem / dt, rtol=1e-6)
        np.testing.assert_allclose(node.w_in, node.tau_syn / dt, rtol=1e-6)
    x = np.random.default_rng(3).uniform(0, 3, (40, 3, 12))
    a, b = _euler(graph, x), _euler(to_nir(net), x)
    assert a.sum() > 10
    # the folded weights are float32-rounded products: a spike may flip on a near-tie
    _close_spikes(a, b)


def test_peer_limitations_are_named():
    net = _lif_net()
    for peer, label in (("snntorch", "snnTorch 1.0.0"), ("norse", "Norse 1.1.0"), ("spikingjelly", "SpikingJelly 2.0.0")):
        with pytest.raises(ValueError, match=f"{label}'s NIR importer has no CubaLI node.*model\\[:-1\\]"):
            to_nir(net, peer=peer)
    body = net[:2]
    with pytest.raises(ValueError, match="dt=0.001 with peer='snntorch'.*hard-coded"):
        to_nir(body, dt=1e-3, peer="snntorch")
    per_neuron = copy.deepcopy(body)
    per_neuron[1].threshold = nn.Parameter(torch.linspace(0.2, 0.4, 16))
    with pytest.raises(ValueError, match="snnTorch 1.0.0's importer takes one v_threshold per layer"):
        to_nir(per_neuron, peer="snntorch")
    assert to_nir(per_neuron, peer="norse").nodes["1"].v_threshold.shape == (16,)
    learn = _lif_net(learn=True)[:2]
    with torch.no_grad():
        learn[1].mem.log_tau.uniform_(np.log(0.01), np.log(0.05))
    with pytest.raises(ValueError, match="SpikingJelly 2.0.0's importer takes one tau_mem per layer"):
        to_nir(learn, peer="spikingjelly")
    reset = nn.Sequential(nn.Linear(3, 4), LIF(4, v_reset=-0.1))
    with pytest.raises(ValueError, match="resets to 0.*v_reset=0"):
        to_nir(reset, peer="norse")
    with pytest.raises(ValueError, match="peer must be None or one of"):
        to_nir(body, peer="lava")
    spsn = nn.Sequential(nn.Linear(3, 4), SPSN(4), nn.Linear(4, 2), LIF(2))
    with pytest.raises(ValueError, match="snnTorch 1.0.0.s NIR importer has no CubaLI node"):
        to_nir(spsn, spsn="threshold", peer="snntorch")
