"""NeuroBench-style metrics: hand-counted tiny networks, brute-force loops, and NeuroBench itself when installed."""

import importlib.util
import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from spikescan.nn import LI, LIF, SpikingNeuron, TimeDistributed
from spikescan.train import record_spikes
from spikescan.train import metrics as M
from spikescan.train.metrics import WorkloadMeter, input_counts, summarise, workload_metrics
from spikescan.train.models import FeedForwardSNN

HAS_NEUROBENCH = importlib.util.find_spec("neurobench") is not None
needs_neurobench = pytest.mark.skipif(
    not HAS_NEUROBENCH, reason="neurobench is not installed (pip install neurobench==2.3.0 to cross-check)")


class Replay(SpikingNeuron):
    """A spiking layer that outputs given spikes, whatever its input (hand-made spike trains)."""

    def __init__(self, spikes):
        super().__init__()
        self.spikes = spikes

    def forward(self, x):
        return self.spikes


def brute_force_ops(x, weight):
    """Effective and dense operations of ``x @ weight.T``, one (input entry, weight) pair at a time."""
    x2 = x.reshape(-1, weight.shape[1])
    effective = dense = 0
    for r, i, o in itertools.product(range(x2.shape[0]), range(weight.shape[1]), range(weight.shape[0])):
        dense += 1
        effective += int(x2[r, i] != 0 and weight[o, i] != 0)
    return effective, dense


def test_static_metrics_hand_values():
    l1, l2 = nn.Linear(3, 2), nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        l1.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]))  # 3 zeros of 6
        l1.bias.zero_()  # zero biases are not weights: no effect on the sparsity
        l2.weight.copy_(torch.tensor([[0.5, 0.0]]))  # 1 zero of 2
    model = nn.Sequential(l1, Replay(None), l2)
    model.register_buffer("counter", torch.zeros(5, dtype=torch.int16))
    out = M.static_metrics(model)
    assert out == {"parameter_count": 6 + 2 + 2, "footprint_bytes": 8 * 4 + 2 * 8 + 5 * 2,
                   "connection_sparsity": 4 / 8}
    assert M.connection_sparsity(nn.Sequential(LIF(3))) == 0.0  # no synaptic layer at all


def test_connection_sparsity_counts_conv_weights_and_nested_layers():
    conv = nn.Conv2d(2, 3, 2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0  # 1 nonzero of 24
    model = nn.Sequential(TimeDistributed(conv), nn.Sequential(nn.Linear(4, 4)))
    with torch.no_grad():
        model[1][0].weight.fill_(1.0)  # 16 nonzero
    assert M.connection_sparsity(model) == pytest.approx(23 / 40)


def hand_network():
    """Linear(3->2) -> spikes s (given) -> Linear(2->1), input x [T=2, B=2, 3]."""
    l1, l2 = nn.Linear(3, 2), nn.Linear(2, 1)
    with torch.no_grad():
        l1.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]))  # fan-out of inputs 0,1,2: 1, 0, 2
        l2.weight.copy_(torch.tensor([[0.5, 0.0]]))  # fan-out of neurons 0,1: 1, 0
    x = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                      [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    s = torch.tensor([[[1.0, 0.0], [1.0, 1.0]],
                      [[0.0, 0.0], [0.0, 1.0]]])
    return nn.Sequential(l1, Replay(s), l2), x, s


def test_workload_hand_values():
    model, x, _ = hand_network()
    meter = WorkloadMeter(model)
    with meter.batch(samples=2):
        model(x)
    # layer 0: nonzero inputs per channel over (t, b): 2, 2, 2 -> effective 2*1 + 2*0 + 2*2 = 6 ACs;
    # dense = 4 rows * 3 * 2 = 24.  Layer 2: spikes per neuron 2, 2 -> 2*1 + 2*0 = 2 ACs; dense 4 * 2 * 1 = 8.
    assert meter.counts() == {
        "samples": 2,
        "activation/1/nonzero": 4, "activation/1/entries": 8, "activation/1/neuron_samples": 4,
        "synapse/0/effective_acs": 6, "synapse/0/effective_macs": 0, "synapse/0/dense": 24,
        "synapse/2/effective_acs": 2, "synapse/2/effective_macs": 0, "synapse/2/dense": 8,
    }
    res = meter.result()
    assert res["activation_sparsity"] == {"1": 0.5}
    assert res["activation_sparsity_total"] == 0.5
    assert res["spikes_per_sample"] == {"1": 2.0}
    assert res["spikes_per_neuron_per_sample"] == {"1": 1.0}
    assert res["synaptic_ops_per_sample"] == {"effective_acs": 4.0, "effective_macs": 0.0, "dense": 16.0}
    assert res["synaptic_ops_per_sample_by_layer"] == {
        "0": {"effective_acs": 3.0, "effective_macs": 0.0, "dense": 12.0},
        "2": {"effective_acs": 1.0, "effective_macs": 0.0, "dense": 4.0}}


def test_dense_input_counts_macs_and_minus_one_is_spiking():
    model, x, _ = hand_network()
    meter = WorkloadMeter(model)
    with meter.batch(samples=2):
        model(x * 0.5)  # not 0/1: the first layer's operations are MACs
    with meter.batch(samples=2):
        model(-x)  # 0/-1 is spiking (NeuroBench: values in {0, 1, -1})
    c = meter.counts()
    assert (c["synapse/0/effective_macs"], c["synapse/0/effective_acs"]) == (6, 6)
    assert (c["synapse/2/effective_macs"], c["synapse/2/effective_acs"]) == (0, 4)
    assert c["samples"] == 4


def test_summarise_is_json_with_static_and_workload_keys():
    model, x, _ = hand_network()
    meter = WorkloadMeter(model)
    assert set(summarise(model)) == {"parameter_count", "footprint_bytes", "connection_sparsity"}
    with meter.batch(samples=2):
        model(x)
    out = summarise(model, meter)
    assert json.loads(json.dumps(out)) == out
    assert out == {**M.static_metrics(model), **meter.result()}
    assert summarise(model, meter.counts()) == out


@pytest.mark.parametrize("binary", [True, False])
def test_effective_ops_match_brute_force(binary):
    g = torch.Generator().manual_seed(1)
    layer = nn.Linear(7, 5, bias=True)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(5, 7, generator=g) < 0.6)  # sparse weights
    x = (torch.rand(4, 3, 7, generator=g) < 0.3).float()
    if binary:
        x = x * torch.where(torch.rand(x.shape, generator=g) < 0.5, 1.0, -1.0)
    else:
        x = x * torch.rand(x.shape, generator=g)
    meter = WorkloadMeter(layer)
    with meter.batch(samples=3):
        layer(x)
    effective, dense = brute_force_ops(x, layer.weight.detach())
    c = meter.counts()
    assert c["synapse//effective_acs" if binary else "synapse//effective_macs"] == effective
    assert c["synapse//effective_macs" if binary else "synapse//effective_acs"] == 0
    assert c["synapse//dense"] == dense == 4 * 3 * 7 * 5


def test_feedforward_counts_match_recorded_spikes_and_brute_force():
    torch.manual_seed(0)
    net = FeedForwardSNN(9, [8, 6], 3, neuron="lif", tau_syn=None, tau_mem=0.002)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.abs_().mul_(3.0)  # excitatory: every layer fires
    x = (torch.rand(12, 4, 9) < 0.4).float()
    inputs = {}
    handles = [m.register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(n, i[0]))
               for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    meter = WorkloadMeter(net)
    with torch.no_grad(), record_spikes(net) as spikes, meter.batch(samples=4):
        net(x)
    for h in handles:
        h.remove()
    c = meter.counts()
    assert [n for n, _ in meter.activation] == ["1", "3"] and [n for n, _ in meter.synaptic] == ["0", "2", "4"]
    assert all(int(s.sum()) > 0 for s in spikes)  # both layers fire: the test sees real counts
    for name, s in zip(["1", "3"], spikes):
        assert c[f"activation/{name}/nonzero"] == int((s != 0).sum())
        assert c[f"activation/{name}/entries"] == s.numel()
        assert c[f"activation/{name}/neuron_samples"] == 4 * s.shape[-1]
    for name, layer in [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]:
        effective, dense = brute_force_ops(inputs[name], layer.weight.detach())
        assert (c[f"synapse/{name}/effective_acs"], c[f"synapse/{name}/dense"]) == (effective, dense)
    res = meter.result()
    assert res["spikes_per_neuron_per_sample"]["1"] == pytest.approx(float(spikes[0].sum()) / (4 * 8))
    assert res["spikes_per_sample"]["3"] == pytest.approx(float(spikes[1].sum()) / 4)


def test_count_kernel_equals_torch_reductions_and_python_loop():
    g = torch.Generator().manual_seed(3)
    base = torch.rand(50, 13, generator=g)
    cases = {
        "binary": (base < 0.2).float(),
        "signed": torch.where(base < 0.1, -1.0, (base > 0.8).float()),
        "dense": base * (base > 0.5),
        "nan": torch.where(base < 0.05, float("nan"), (base > 0.9).float()),
        "negzero": -(base > 0.7).float() * 0.0,
        "zeros": torch.zeros(50, 13),
    }
    for name, x in cases.items():
        for dtype in (torch.float32, torch.float64):
            xd = x.to(dtype)
            nz, binary = M._tensor_counts(xd, 13)  # numba on the CPU
            ref_nz = torch.count_nonzero(xd, dim=0)
            ref_binary = bool(((xd == 0) | (xd == 1) | (xd == -1)).all())
            assert nz.tolist() == ref_nz.tolist() and bool(binary) == ref_binary, name
            py = np.zeros(13, np.int64)
            assert bool(M._count_nonzero_by_channel(xd.numpy(), 0, 50, py)) == ref_binary  # the uncompiled loop
            assert py.tolist() == ref_nz.tolist()
    # the torch path (other dtypes, other devices) agrees too
    nz, binary = M._tensor_counts(cases["signed"].half(), 13)
    assert nz.tolist() == torch.count_nonzero(cases["signed"], dim=0).tolist() and bool(binary)
    nz, binary = M._tensor_counts(cases["dense"].bfloat16(), 13)
    assert not bool(binary)
    # non-contiguous input: counted by its values, not its memory layout
    xt = cases["dense"].t().contiguous().t()
    assert M._tensor_counts(xt, 13)[0].tolist() == torch.count_nonzero(xt, dim=0).tolist()


def test_torch_reductions_count_like_the_kernel(monkeypatch):
    """What runs where the kernel does not (GPU, half precision, no numba) gives the same counts."""
    torch.manual_seed(0)
    net = FeedForwardSNN(9, [8, 6], 3, neuron="lif", tau_syn=None, tau_mem=0.002)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.abs_().mul_(3.0)
    x = (torch.rand(12, 4, 9) < 0.4).float()
    counts = []
    for kernel in (None, False):  # compiled kernel, then torch reductions
        monkeypatch.setattr(M, "_kernel", kernel)
        meter = WorkloadMeter(net)
        with torch.no_grad(), meter.batch(samples=4):
            net(x)
        with torch.no_grad(), meter.batch(samples=4):
            net(x * 0.5)  # MACs in the first layer
        counts.append(meter.counts())
    assert counts[0] == counts[1]
    assert counts[0]["synapse/0/effective_macs"] > 0 and counts[0]["synapse/2/effective_acs"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_counts_equal_cpu_counts():
    model, x, s = hand_network()
    conv = nn.Sequential(TimeDistributed(nn.Conv2d(2, 4, 3, padding=1, groups=2)))
    xc = (torch.rand(3, 2, 2, 5, 5) < 0.3).float()
    results = []
    for device in ("cpu", "cuda"):
        model[1].spikes = s.to(device)
        meter, conv_meter = WorkloadMeter(model.to(device)), WorkloadMeter(conv.to(device))
        with meter.batch(samples=2):
            model(x.to(device))
        with meter.batch(samples=2):
            model((x * 0.5).to(device))
        with conv_meter.batch(samples=2):
            conv(xc.to(device))
        results.append((meter.counts(), conv_meter.counts()))
    assert results[0] == results[1]


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1), dict(padding=1, groups=2, dilation=2),
                                    dict(padding=1, padding_mode="circular")])
def test_conv_ops_equal_the_binarised_layer(kwargs):
    g = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(4, 6, 3, **kwargs)
    with torch.no_grad():
        conv.weight.mul_(torch.rand(conv.weight.shape, generator=g) < 0.5)
    x = (torch.rand(5, 4, 7, 6, generator=g) < 0.3).float()
    meter = WorkloadMeter(conv)
    with meter.batch(samples=5):
        conv(x)
    # NeuroBench's definition: a 0/1 copy of the layer (no bias) on a 0/1 copy of the input, summed
    ref = conv._conv_forward((x != 0).double(), (conv.weight != 0).double(), None).sum()
    ref_dense = conv._conv_forward(torch.ones_like(x).double(), torch.ones_like(conv.weight).double(), None).sum()
    c = meter.counts()
    assert (c["synapse//effective_acs"], c["synapse//effective_macs"], c["synapse//dense"]) == (
        int(ref), 0, int(ref_dense))


def test_hooks_only_inside_batch_and_failed_batches_add_nothing():
    model, x, _ = hand_network()
    meter = WorkloadMeter(model)
    model(x)  # outside a batch: not counted
    with pytest.raises(RuntimeError, match="boom"):
        with meter.batch(samples=2):
            model(x)
            raise RuntimeError("boom")
    assert set(meter.counts().values()) == {0}
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError, match="nest"):
        with meter.batch(samples=2), meter.batch(samples=2):
            pass
    with pytest.raises(ValueError, match="samples"):
        with meter.batch(samples=2.0):
            pass


def test_counts_sum_over_meters_like_ranks():
    model, x, _ = hand_network()
    whole, a, b = WorkloadMeter(model), WorkloadMeter(model), WorkloadMeter(model)
    for meter, batches in ((whole, [x, x[:, :1]]), (a, [x]), (b, [x[:, :1]])):
        for xb in batches:
            model[1].spikes = (xb[..., :2] != 0).float()
            with meter.batch(samples=xb.shape[1]):
                model(xb)
    summed = {k: a.counts()[k] + b.counts()[k] for k in a.keys()}  # what all_reduce(op="sum") gives
    assert summed == whole.counts()
    assert workload_metrics({k: float(v) for k, v in summed.items()}) == whole.result()
    a.update(b.counts())
    assert a.counts() == whole.counts()
    a.reset()
    assert set(a.counts().values()) == {0}


def test_relu_layers_are_activations_and_their_successors_macs():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    meter = WorkloadMeter(model)
    with meter.batch(samples=2):
        h = model[1](model[0](x))
        model[2](h)
        model[2](h)  # a second pass over the last layer counts again
    c = meter.counts()
    assert [n for n, _ in meter.activation] == ["1"]
    assert c["activation/1/nonzero"] == int((h != 0).sum())
    assert c["synapse/2/effective_macs"] == 2 * brute_force_ops(h, model[2].weight.detach())[0]
    assert c["synapse/0/effective_macs"] == brute_force_ops(x, model[0].weight.detach())[0]


class FakeEvents:
    """The smallest object the synaptic hook accepts instead of a tensor."""

    def __init__(self, dense, is_binary=None):
        self.shape, self._dense = tuple(dense.shape), dense
        if is_binary is not None:
            self.is_binary = is_binary

    def count_nonzero_by_channel(self):
        return torch.count_nonzero(self._dense.reshape(-1, self.shape[-1]), dim=0)


class TakesEvents(nn.Linear):
    def forward(self, x):
        return super().forward(x._dense if isinstance(x, FakeEvents) else x)


def test_event_input_objects_count_like_their_dense_tensor():
    g = torch.Generator().manual_seed(4)
    layer = TakesEvents(6, 3)
    x = (torch.rand(5, 2, 6, generator=g) < 0.3).float()
    counts = []
    for inp in (x, FakeEvents(x), FakeEvents(x * 0.5, is_binary=False)):
        meter = WorkloadMeter(layer)
        with meter.batch(samples=2):
            layer(inp)
        counts.append(meter.counts())
    assert counts[0] == counts[1]
    assert counts[2]["synapse//effective_macs"] == counts[0]["synapse//effective_acs"] > 0
    nz, rows, binary = input_counts(FakeEvents(x), 6)
    assert rows == 10 and binary is True and nz.tolist() == torch.count_nonzero(x.reshape(10, 6), dim=0).tolist()
    with pytest.raises(TypeError, match="count_nonzero_by_channel"):
        input_counts(object(), 6)


def test_spikescan_spike_events_are_counted_without_densifying():
    events = pytest.importorskip("spikescan.ops.events", reason="spikescan.ops.events (SpikeEvents) not in this tree")
    linear = pytest.importorskip("spikescan.nn.linear", reason="spikescan.nn.linear (EventLinear) not in this tree")
    g = torch.Generator().manual_seed(5)
    layer = linear.EventLinear(6, 3)
    x = (torch.rand(5, 2, 6, generator=g) < 0.3).float()
    dense_meter, event_meter = WorkloadMeter(layer), WorkloadMeter(layer)
    with dense_meter.batch(samples=2):
        layer(x)
    with event_meter.batch(samples=2):
        layer(events.SpikeEvents.from_dense(x))
    assert event_meter.counts() == dense_meter.counts()
    graded = WorkloadMeter(layer)
    with graded.batch(samples=2):
        layer(events.SpikeEvents.from_dense(x * 0.5))  # values kept: not spiking
    assert graded.counts()["synapse//effective_macs"] == dense_meter.counts()["synapse//effective_acs"]


class BatchFirst(nn.Module):
    """NeuroBench feeds ``[B, T, ...]`` and counts samples on dim 0; spikescan is time-first."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        out = self.net(x.transpose(0, 1))
        return out.mean(0) if out.dim() == 3 else out


def conv_network():
    conv = nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2)
    return nn.Sequential(TimeDistributed(conv), TimeDistributed(nn.Flatten()), LIF(4 * 3 * 3, None, 0.002),
                         nn.Linear(36, 3), LI(3))


NETWORKS = {
    "lif-spikes": (lambda: FeedForwardSNN(12, [10, 8], 4, neuron="lif", tau_syn=None, tau_mem=0.002), (12,), True),
    "lif-dense": (lambda: FeedForwardSNN(12, [10, 8], 4, neuron="lif", tau_syn=None, tau_mem=0.002), (12,), False),
    "spsn": (lambda: FeedForwardSNN(12, [10], 4, neuron="spsn-sb"), (12,), True),
    "relu": (lambda: FeedForwardSNN(12, [10, 8], 4, neuron="relu"), (12,), False),
    "conv": (conv_network, (2, 6, 6), True),
}


@needs_neurobench
@pytest.mark.parametrize("case", sorted(NETWORKS))
def test_neurobench_cross_check(case):
    from torch.utils.data import DataLoader, TensorDataset
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount
    from neurobench.metrics.workload import ActivationSparsity, ActivationSparsityByLayer, SynapticOperations
    from neurobench.models import TorchModel

    build, features, spikes = NETWORKS[case]
    torch.manual_seed(0)
    net = build()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(3.0)
                if case != "relu":
                    m.weight.abs_()  # excitatory: every spiking layer fires
                m.weight[m.weight.abs() < 0.25] = 0.0  # nonzero connection sparsity
    net.eval()
    X = torch.rand(20, 15, *features)  # [N, T, ...], batch-first for NeuroBench
    X = (X < 0.3).float() if spikes else X
    loader = DataLoader(TensorDataset(X, torch.zeros(20, dtype=torch.long)), batch_size=7)  # 7 + 7 + 6
    model = TorchModel(BatchFirst(net))
    model.add_activation_module(SpikingNeuron)
    bench = Benchmark(model, loader, [], [], [[ParameterCount, Footprint, ConnectionSparsity],
                                              [ActivationSparsity, ActivationSparsityByLayer, SynapticOperations]])
    torch.manual_seed(1)  # stochastic neurons (SPSN) draw the same spikes in both passes
    ref = bench.run(quiet=True)

    meter = WorkloadMeter(net)
    torch.manual_seed(1)
    with torch.no_grad():
        for x, _ in loader:
            with meter.batch(samples=x.shape[0]):
                net(x.transpose(0, 1))
    ours = summarise(net, meter)

    assert ours["parameter_count"] == ref["ParameterCount"]
    assert ours["footprint_bytes"] == ref["Footprint"]
    assert round(ours["connection_sparsity"], 4) == ref["ConnectionSparsity"]
    assert ours["activation_sparsity"] == pytest.approx(ref["ActivationSparsityByLayer"], abs=1e-12)
    assert ours["activation_sparsity_total"] == pytest.approx(ref["ActivationSparsity"], abs=1e-12)
    syn = ref["SynapticOperations"]
    assert ours["synaptic_ops_per_sample"] == pytest.approx(
        {"effective_acs": syn["Effective_ACs"], "effective_macs": syn["Effective_MACs"], "dense": syn["Dense"]},
        rel=1e-12)
    assert ours["synaptic_ops_per_sample"]["effective_acs" if case != "relu" else "effective_macs"] > 0
    assert min(ours["activation_sparsity"].values()) < 1.0  # some layer fired


@pytest.mark.parametrize("density, steps, fused_kernel, fused_output", [
    (0.005, 50, True, False), (0.005, 200, True, True), (0.1, 50, False, False)])
def test_an_input_layer_fused_into_its_neurons_is_still_counted(density, steps, fused_kernel, fused_output):
    """``FeedForwardSNN`` runs ``EventLinear -> SingleSpikeLIF -> EventLinear`` in the neuron's
    call, as one kernel on sparse events, so the input layer's own forward (and hook) never runs,
    nor the output layer's when its input (the spikes: density <= 1 / T) runs event-driven: their
    synaptic operations must come from the neuron's call, equal to the composed path's -- and
    counted once when the neuron falls back to calling the layers (events too dense for it)."""
    from spikescan.ops.events import SpikeEvents

    torch.manual_seed(0)
    model = FeedForwardSNN(30, [20], 4, "single-spike", tau_syn=None, tau_mem=0.01,
                           neuron_kwargs={"input_scale": 1.0}, readout_layer="max-membrane")
    with torch.no_grad():
        model[0].weight.mul_(8.0)  # some neurons fire: the output layer has events to count
    dense = (torch.rand(steps, 6, 30, generator=torch.Generator().manual_seed(1)) < density).float()
    x = SpikeEvents.from_dense(dense)
    assert model[1]._fuses_with(model[0], x, False) is fused_kernel
    assert (fused_kernel and model[1]._feeds_events(model[2], x)) is fused_output
    counts = []
    for fused in (True, False):
        meter = WorkloadMeter(model)
        with torch.no_grad(), meter.batch(samples=6):
            if fused:
                out = model(x)  # the fused pair
            else:
                h = x
                for layer in model:  # one layer after another: every hook fires
                    h = layer(h)
                out = h
        counts.append(meter.counts())
        assert out.shape == (6, 4)
    assert counts[0] == counts[1]
    assert counts[0]["synapse/0/effective_acs"] == x.num_events * 20 > 0
    assert counts[0]["synapse/2/effective_acs"] == counts[0]["activation/1/nonzero"] * 4 > 0
