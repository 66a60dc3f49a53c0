"""Train several neuron kinds x seeds on one network and data set, and tabulate the results.

``spikescan compare --neurons spsn-sb spsn-gs lif relu --seeds 0 1 2 --out DIR`` trains each
``(neuron, seed)`` into ``DIR/<neuron>-s<seed>/`` with the same :class:`TrainConfig` (the main
job's by default: 3 x 128 on the embedded digits, 30 epochs) and writes ``DIR/table.md`` and
``DIR/results.json``.  A run whose folder already holds ``final.json`` with the same
configuration is reused, an unfinished one is resumed from its checkpoint, so an interrupted
comparison loses at most one epoch.

Some neuron kinds do not learn at all with the main job's settings; :data:`NEURON_SETTINGS`
gives them the settings of their own paper, and the table lists every such difference.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any, Sequence

from .checkpoint import write_json, write_text
from .loop import TrainConfig, config_differences, train

__all__ = ["NEURON_SETTINGS", "compare", "format_table"]

#: Per-neuron departures from the shared configuration, each from the neuron's own paper.
NEURON_SETTINGS: dict[str, dict[str, Any]] = {
    # FastSNN (supplementary E): its own network, 1 x 200 hidden single-spike LIF with tau 10 ms and
    # no synaptic stage, readout = max over time of an infinite-threshold membrane; input currents
    # without the (1 - b) factor, as the authors' code (with it, or through 3 x 128 single-spike
    # layers, the digits stay near chance: 10-22 % after 6 epochs in our probes).
    "single-spike": {"readout": "max-membrane", "tau_syn": None, "tau_mem": 0.01, "hidden": [200],
                     "neuron_kwargs": {"input_scale": 1.0}, "readout_kwargs": {"input_scale": 1.0}},
    # PSU (authors' scripts): tau = 2 steps; with the main job's 5-step leak the estimated reset
    # sigma(H) summed over the window silences every PSU neuron.
    "psu": {"neuron_kwargs": {"tau": 2.0}},
    "ipsu": {"neuron_kwargs": {"tau": 2.0}},
    "rpsu": {"neuron_kwargs": {"tau": 2.0}},
}


#: neuron kinds built by one constructor family: a preset's ``neuron_kwargs`` for one apply to the others
_KWARG_FAMILIES = ({"lif", "plif", "rlif"},)


def _config(base: dict, neuron: str, seed: int, run_dir: Path, settings: dict) -> TrainConfig:
    d = dict(base)
    if neuron != d.get("neuron") and not any({neuron, d.get("neuron")} <= f for f in _KWARG_FAMILIES):
        # the base's neuron_kwargs are arguments of another constructor (e.g. the LIF baseline's
        # reset for an SPSN): the neuron starts from its own defaults; the table lists the change
        d["neuron_kwargs"] = {}
    d.update(settings.get(neuron, {}))
    d.update(neuron=neuron, seed=seed, out_dir=str(run_dir))
    cfg = TrainConfig.from_dict(d)
    cfg.validate()
    return cfg.resolved()


def _run_one(cfg: TrainConfig, log) -> dict:
    run_dir = Path(cfg.out_dir)
    cfg_path, final_path = run_dir / "config.json", run_dir / "final.json"
    if cfg_path.is_file():
        diff = sorted(config_differences(json.loads(cfg_path.read_text()), cfg))
        if diff:
            raise ValueError(f"{run_dir} holds a run with other settings ({', '.join(diff)}); "
                             "use another --out or delete it")
        if final_path.is_file():
            log(f"reusing finished run {run_dir}")
            return json.loads(final_path.read_text())
        log(f"resuming unfinished run {run_dir}")
        return train(cfg, resume=True, progress=False, log=log)
    return train(cfg, progress=False, log=log)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def compare(neurons: Sequence[str], seeds: Sequence[int], out_dir, *, base: TrainConfig | None = None,
            settings: dict[str, dict] | None = None, log=print) -> dict:
    """Train (or reuse) every ``(neuron, seed)`` and return ``{"rows": [...], "runs": [...], ...}``.

    ``base`` is the shared configuration (default ``TrainConfig()``, the main job); ``settings``
    the per-neuron departures (default :data:`NEURON_SETTINGS`).  Writes ``table.md`` and
    ``results.json`` into ``out_dir`` and returns what ``results.json`` holds.
    """
    if not neurons or not seeds:
        raise ValueError("compare needs at least one neuron and one seed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_d = dataclasses.asdict(base if base is not None else TrainConfig())
    settings = NEURON_SETTINGS if settings is None else settings
    runs, rows = [], []
    for neuron in neurons:
        per = []
        for seed in seeds:
            cfg = _config(base_d, neuron, int(seed), out / f"{neuron}-s{seed}", settings)
            final = _run_one(cfg, log)
            history = json.loads((Path(cfg.out_dir) / "metrics.json").read_text())
            spiking = neuron != "relu"
            run = {
                "neuron": neuron, "seed": int(seed), "run_dir": cfg.out_dir,
                "test_acc": final["test_acc"],
                # the first epoch also pays one-off costs (kernel compilation, allocator warm-up); the
                # median resists the other jobs of a shared machine
                "epoch_seconds": statistics.median(h["epoch_seconds"] for h in (history[1:] or history)),
                "fastest_epoch_seconds": min(h["epoch_seconds"] for h in history),
                "spikes_per_ms": final["test_spikes_per_ms"] if spiking else None,
                "spikes_per_neuron_step": final["test_spike_rate"] if spiking else None,
                "spikes_per_neuron_sample": final["test_spike_rate"] * cfg.num_steps if spiking else None,
            }
            runs.append(run)
            per.append(run)
        row: dict[str, Any] = {"neuron": neuron, "runs": len(per), "settings": settings.get(neuron, {})}
        for key in ("test_acc", "epoch_seconds", "fastest_epoch_seconds", "spikes_per_ms", "spikes_per_neuron_step",
                    "spikes_per_neuron_sample"):
            vals = [r[key] for r in per if r[key] is not None]
            row[key] = _mean_std(vals) if vals else None
        rows.append(row)
    resolved = dataclasses.asdict(TrainConfig.from_dict(base_d).resolved())
    shared = {k: v for k, v in resolved.items() if k not in ("out_dir", "seed", "neuron", "preset")}
    result = {"shared_config": shared, "seeds": [int(s) for s in seeds], "rows": rows, "runs": runs}
    table = format_table(result)
    write_json(out / "results.json", result)
    write_text(out / "table.md", table)
    log(table)
    return result


def _pm(ms, scale: float = 1.0, digits: int = 2) -> str:
    if ms is None:
        return "—"
    m, s = ms
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def format_table(result: dict) -> str:
    """The Markdown table of :func:`compare`'s result (mean ± std over seeds)."""
    c = result["shared_config"]
    T = c.get("num_steps") or "default"
    lines = [
        f"{c['dataset']}, {'x'.join(map(str, c['hidden']))} hidden, T = {T}, {c['epochs']} epochs, "
        f"{c['optimizer']} lr {c['lr']}, batch {c['batch_size']}, seeds {result['seeds']} "
        f"(mean ± std over seeds; epoch time = one training epoch, median of epochs 2..N; fastest = the quickest epoch, "
        f"{c.get('threads')} torch thread(s)).",
        "",
        "| neuron | test accuracy (%) | epoch time (s) | fastest epoch (s) | spikes/ms | spikes/neuron/step "
        "| spikes/neuron/sample |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in result["rows"]:
        name = r["neuron"]
        if r["settings"]:
            notes.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in r["settings"].items()))
            name += " *"
        lines.append(f"| {name} | {_pm(r['test_acc'], 100)} | {_pm(r['epoch_seconds'])} | "
                     f"{_pm(r['fastest_epoch_seconds'])} | "
                     f"{_pm(r['spikes_per_ms'], digits=1)} | {_pm(r['spikes_per_neuron_step'], digits=3)} | "
                     f"{_pm(r['spikes_per_neuron_sample'], digits=2)} |")
    if notes:
        lines += ["", "\\* settings that differ from the shared ones (from the neuron's paper): " + "; ".join(notes)]
    return "\n".join(lines) + "\n"
