"""The papers' experiments as named presets: plain data, a dict of :class:`TrainConfig` fields + the source.

``spikescan train --preset NAME --data-dir PATH [flags]`` starts from ``TrainConfig()``, applies
the preset's fields, then every flag given on the command line (flags win).  Fields a preset
leaves out keep the :class:`TrainConfig` default, or for ``encoding`` / ``num_steps`` / ``dt``
the data set's default (:mod:`spikescan.data.registry`).  ``source`` names the paper and the
table or section each value comes from, and says what is assumed where the paper is silent.

Papers: SPSN = Yarga & Wood, "Accelerating SNN training with parallelizable stochastic spiking
neurons" (Table I, §IV, Table II); FastSNN = Taylor, King & Harper, "Accelerating spiking neural
network training" (supplementary E, Table 1); PSU = Li et al., "Parallel Spiking Unit for
Efficient Training of Spiking Neural Networks" (setups as in the authors' scripts, see
``shared/notes/methods.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..defaults import SPSN_LIF_BASELINE

__all__ = ["PAPER_ACCURACY", "PRESETS", "Preset", "get_preset", "preset_config"]


@dataclass(frozen=True)
class Preset:
    name: str
    config: dict[str, Any]
    source: str
    summary: str = field(default="")


# SPSN Table I: 3 x 128 FF, 20 LI readout, tau_mem = tau_syn = 20 ms, dt = 1 ms, Adamax 1e-3, batch 64,
# 200 epochs, k_shift 0.1, k_scale 0.3, cross-entropy on the mean-over-time membrane (eq. 20).
_SPSN_SHD = dict(dataset="shd", hidden=[128, 128, 128], tau_syn=0.02, tau_mem=0.02, dt=1e-3, num_steps=1400,
                 readout="mean", optimizer="adamax", lr=1e-3, schedule="none", batch_size=64, eval_batch_size=64,
                 epochs=200, k_shift=0.1, k_scale=0.3, encoding="binary")
_SPSN_SRC = ("SPSN Table I (3x128, tau 20 ms, dt 1 ms, Adamax 1e-3, batch 64, 200 epochs, k_shift 0.1, "
             "k_scale 0.3) and §IV-A (mean-over-time CE); assumed: T = 1400 (1.4 s window, the longest SHD "
             "sample), 0/1 input, no LR schedule, left padding")

# FastSNN supplementary E / Table 1: 1 x 200 hidden single-spike LIF (tau 10 ms), readout with
# infinite threshold (tau 20 ms), CE on max_t V, Adam, batch 128, surrogate slope 100.
# The single-spike hidden layer takes eq. 5's (1 - beta) input factor; the readout and the LIF
# baseline take none (_FAST_SRC says why).
_FAST = dict(hidden=[200], tau_syn=None, tau_mem=0.01, readout="max-membrane", optimizer="adam",
             schedule="none", batch_size=128, eval_batch_size=128, bias_init="zero",
             neuron_kwargs={"input_scale": "one_minus_decay", "threshold": 1.0,
                            "surrogate": "fast_sigmoid(slope=100)"},
             readout_kwargs={"input_scale": 1.0})
# its 'standard SNN' (multi-spike LIF) baseline: reset by subtraction, no input factor
_FAST_LIF = {"input_scale": 1.0, "threshold": 1.0, "reset": "subtract", "detach_reset": True,
             "surrogate": "fast_sigmoid(slope=100)"}
_FAST_DATA = {
    "fmnist": (dict(dataset="fmnist", encoding="ttfs", num_steps=784, dt=1e-3, lr=2e-4, epochs=150),
               "T 784, dt 1 ms, lr 2e-4, 150 epochs; TTFS code eq. 17 (tau_eff 20 ms, theta 0.2)"),
    "nmnist": (dict(dataset="nmnist", encoding="binary", num_steps=300, dt=1e-3, lr=2e-4, epochs=150),
               "T 300, dt 1 ms, lr 2e-4, 150 epochs, 1156 inputs (polarities merged)"),
    "shd": (dict(dataset="shd", encoding="binary", num_steps=700, dt=2e-3, lr=1e-3, epochs=200),
            "T 700, dt 2 ms, lr 1e-3, 200 epochs"),
}
_FAST_TABLE = ("FastSNN supplementary E, Table 1 (1x200 hidden, hidden tau 10 ms, readout tau 20 ms, "
               "max-membrane CE, Adam, batch 128, slope 100, weights U(-sqrt(1/N), sqrt(1/N)), biases 0)")
# the F-MNIST experiment as the authors' code runs it (webstorms/FastSNN): its TTFS code on raw
# pixel values over T = 100 steps (spikescan.data.encodings.ttfs_code_encode), no input factor
_FAST_CODE = dict(dataset="fmnist", encoding="ttfs-code", num_steps=100, dt=1e-3, lr=2e-4, epochs=150)
_FAST_CODE_DATA = ("the authors' code's F-MNIST data (webstorms/FastSNN datasets.py: eq. 17 on raw 0-255 values "
                   "read as seconds, spikes on steps 16-98 of T = 100; encoding 'ttfs-code'), which the paper's "
                   "Table 1 (T = 784, tau_eff 20 ms on [0, 1] pixels) does not describe; no input factor, as "
                   "their code; ")
_FAST_CODE_REST = "otherwise " + _FAST_TABLE + ": lr 2e-4, 150 epochs; surrogate at V - 1; no LR schedule"
_FAST_CODE_SRC = (_FAST_CODE_DATA + "fixed decays (their code also trains the convolution kernels that compute "
                  "the membranes, which spikescan's neurons keep at beta^lag); " + _FAST_CODE_REST)
_FAST_KERNEL_SRC = ("as the authors' code trains it: learned membrane kernels in the hidden layer and the readout "
                    "(webstorms/FastSNN layers.py: the conv2d kernels initialised to beta^lag are nn.Parameters in "
                    "the optimiser)")


def _fast_kernel(data: dict) -> dict:
    """The authors' code's FastSNN network on ``data``: learned membrane kernels of T lags, no input factor."""
    return dict(_FAST, neuron="single-spike-kernel", **data,
                neuron_kwargs=dict(_FAST["neuron_kwargs"], input_scale=1.0),
                readout_kwargs={"input_scale": 1.0, "kernel_steps": data["num_steps"]})
_FAST_SRC = (_FAST_TABLE + ": {}; "
             "input factor: the single-spike hidden layer (1 - beta) as eq. 5 (silent for the first ~300 "
             "batches on F-MNIST, awake within the first epoch; without it, as in the authors' code, its "
             "neurons learn to fire at the first input events and F-MNIST stalls at 62 % after 150 epochs), "
             "the readout and the LIF baseline none (the authors' code: with (1 - beta) the readout learns "
             "slower, 38 % vs 55 % after 5 F-MNIST epochs; the LIF baseline reaches 86.6 % without); "
             "surrogate at V - 1; assumed: no LR schedule, fixed time constants")

# PSU (authors' scripts, methods.md): SHD as 15 frames, 700-1024-1024-20, dropout 0.4, Vth 0.3,
# AdamW 5e-3, cosine, 120 epochs, batch 256, tau = 2 steps.
_PSU_SHD = dict(dataset="shd", hidden=[1024, 1024], num_steps=15, dt=1.4 / 15, encoding="counts", dropout=0.4,
                tau_syn=None, tau_mem=2 * (1.4 / 15), neuron_kwargs={"threshold": 0.3}, optimizer="adamw",
                lr=5e-3, schedule="cosine", epochs=120, batch_size=256, eval_batch_size=256, readout="mean")
_PSU_SHD_SRC = ("PSU (authors' SHD script, shared/notes/methods.md): 15 frames over 1.4 s, 700-1024-1024-20, "
                "dropout 0.4, Vth 0.3, tau 2 steps, AdamW 5e-3, cosine, 120 epochs, batch 256; assumed: no "
                "BatchNorm, LI readout + mean-over-time CE instead of their MSE to one-hot, spike counts per frame")
_PSU_FF = dict(tau_syn=None, neuron="psu", optimizer="adamw", lr=5e-3, schedule="cosine", epochs=120,
               batch_size=128, eval_batch_size=128, readout="mean")
_PSU_FF_SRC = ("PSU: {} as the paper states; assumed: a feed-forward {} network instead of their "
               "convolutional one, AdamW 5e-3 + cosine, 120 epochs, batch 128, CE readout (their SHD training "
               "settings); tau 2 steps")


def _psu(**kw) -> dict:
    d = dict(_PSU_FF)
    d.update(kw)
    d["tau_mem"] = 2 * d["dt"]  # tau = 2 steps, the value of every PSU script
    return d


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("spsn-shd-sb", dict(_SPSN_SHD, neuron="spsn-sb"), "SPSN Table II 'data aug.' (86.89 %); " + _SPSN_SRC),
    Preset("spsn-shd-sb-reg", dict(_SPSN_SHD, neuron="spsn-sb", theta_reg=0.4),
           "SPSN Table II 'data aug. + regularization' (89.23 %), theta_reg 0.4 (Table I, eq. 21); " + _SPSN_SRC),
    Preset("spsn-shd-gs", dict(_SPSN_SHD, neuron="spsn-gs"), "SPSN Table II 'data aug.' (86.10 %); " + _SPSN_SRC),
    Preset("spsn-shd-gs-reg", dict(_SPSN_SHD, neuron="spsn-gs", theta_reg=0.1),
           "SPSN Table II 'data aug. + regularization' (89.73 %), theta_reg 0.1 (Table I, eq. 21); " + _SPSN_SRC),
    Preset("spsn-shd-lif", dict(_SPSN_SHD, neuron="lif", neuron_kwargs=dict(SPSN_LIF_BASELINE, threshold=1.0, v_reset=0.0)),
           "SPSN Table II LIF baseline (85.09 %): threshold 1, hard reset, surrogate slope 100; " + _SPSN_SRC),
    Preset("spsn-shd-relu", dict(_SPSN_SHD, neuron="relu"),
           "SPSN Table II non-spiking ReLU baseline (69.40 % with aug.), same architecture; " + _SPSN_SRC),
    *(Preset(f"fastsnn-{ds}", dict(_FAST, neuron="single-spike", **cfg), _FAST_SRC.format(txt))
      for ds, (cfg, txt) in _FAST_DATA.items()),
    *(Preset(f"fastsnn-{ds}-lif", dict(_FAST, neuron="lif", neuron_kwargs=_FAST_LIF, **cfg),
             "FastSNN's 'standard SNN' baseline (multi-spike LIF, same parameters, Table 1 note; reset by "
             "subtracting the threshold at the spike's step, as the authors' code does); " + _FAST_SRC.format(txt))
      for ds, (cfg, txt) in _FAST_DATA.items()),
    Preset("fastsnn-fmnist-code", dict(_FAST, neuron="single-spike", **_FAST_CODE,
                                       neuron_kwargs=dict(_FAST["neuron_kwargs"], input_scale=1.0)),
           "FastSNN F-MNIST single spike on " + _FAST_CODE_SRC),
    Preset("fastsnn-fmnist-code-kernel", _fast_kernel(_FAST_CODE),
           "FastSNN F-MNIST single spike " + _FAST_KERNEL_SRC + ", on " + _FAST_CODE_DATA + _FAST_CODE_REST),
    Preset("fastsnn-nmnist-kernel", _fast_kernel(_FAST_DATA["nmnist"][0]),
           "FastSNN N-MNIST single spike " + _FAST_KERNEL_SRC + ", no input factor; otherwise " + _FAST_TABLE +
           ": " + _FAST_DATA["nmnist"][1] + "; surrogate at V - 1; no LR schedule"),
    Preset("fastsnn-fmnist-code-lif", dict(_FAST, neuron="lif", neuron_kwargs=_FAST_LIF, **_FAST_CODE),
           "FastSNN's 'standard SNN' baseline (reset by subtraction) on " + _FAST_CODE_SRC),
    *(Preset(f"{kind}-shd", dict(_PSU_SHD, neuron=kind), f"{kind.upper()}: " + _PSU_SHD_SRC)
      for kind in ("psu", "ipsu", "rpsu")),
    Preset("psu-dvs-cifar10", _psu(dataset="dvs-cifar10", num_steps=10, dt=1e-3, hidden=[1024, 1024],
                                   neuron_kwargs={"threshold": 0.5}),
           _PSU_FF_SRC.format("DVS-CIFAR10, T 10 frames at 48x48, Vth 0.5", "2x1024")),
    Preset("psu-scifar10", _psu(dataset="scifar10", encoding="row", num_steps=32, dt=1e-3, hidden=[512, 512]),
           _PSU_FF_SRC.format("sequential CIFAR-10, T 32 (one pixel row per step)", "2x512") + ", Vth 1"),
    Preset("psu-cifar10", _psu(dataset="cifar10", num_steps=4, dt=1e-3, hidden=[1024, 1024]),
           _PSU_FF_SRC.format("static CIFAR-10, T 4", "2x1024") + ", Vth 1"),
    Preset("psu-cifar100", _psu(dataset="cifar100", num_steps=4, dt=1e-3, hidden=[1024, 1024]),
           _PSU_FF_SRC.format("static CIFAR-100, T 4", "2x1024") + ", Vth 1"),
)}


#: test accuracy (%) each paper reports for a preset's experiment (SPSN Table II, FastSNN §3.2)
PAPER_ACCURACY: dict[str, float] = {
    "spsn-shd-sb": 86.89, "spsn-shd-sb-reg": 89.23, "spsn-shd-gs": 86.10, "spsn-shd-gs-reg": 89.73,
    "spsn-shd-lif": 85.09, "spsn-shd-relu": 69.40,
    "fastsnn-fmnist": 81.23, "fastsnn-fmnist-lif": 85.37, "fastsnn-nmnist": 83.50, "fastsnn-nmnist-lif": 93.28,
    "fastsnn-shd": 22.49, "fastsnn-shd-lif": 51.53,
    # the -code / -kernel presets: the paper's experiments as its authors' code runs them
    "fastsnn-fmnist-code": 81.23, "fastsnn-fmnist-code-kernel": 81.23, "fastsnn-fmnist-code-lif": 85.37,
    "fastsnn-nmnist-kernel": 83.50,
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]


def preset_config(name: str | None, overrides: dict[str, Any] | None = None):
    """``TrainConfig()`` updated by preset ``name`` (if any), then by ``overrides`` (the explicit flags)."""
    import dataclasses

    from .loop import TrainConfig

    d = dataclasses.asdict(TrainConfig())
    if name is not None:
        p = get_preset(name)
        d.update({k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                  for k, v in p.config.items()})
        d["preset"] = name
    d.update(overrides or {})
    return TrainConfig.from_dict(d)


def describe(p: Preset) -> str:
    """Key settings of a preset on one line."""
    c = p.config
    keys = [f"{c['neuron']} {'x'.join(map(str, c.get('hidden', [])))}"]
    if c.get("num_steps"):
        keys.append(f"T {c['num_steps']}")
    if c.get("dt"):
        keys.append(f"dt {c['dt'] * 1e3:.3g} ms")
    keys.append(f"{c.get('optimizer', 'adam')} {c.get('lr')}")
    keys.append(f"batch {c.get('batch_size')}")
    keys.append(f"{c.get('epochs')} ep")
    if c.get("k_shift") or c.get("k_scale"):
        keys.append(f"aug {c.get('k_shift', 0)}/{c.get('k_scale', 0)}")
    if c.get("theta_reg") is not None:
        keys.append(f"theta_reg {c['theta_reg']}")
    if c.get("readout", "mean") != "mean":
        keys.append(f"readout {c['readout']}")
    for name in ("neuron_kwargs", "readout_kwargs"):
        if c.get(name):
            keys.append(f"{name.split('_')[0]} " + " ".join(f"{k}={v}" for k, v in c[name].items()))
    return ", ".join(keys)
