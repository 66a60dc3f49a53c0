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
