"""FastSNN speed-up grid (Taylor, King & Harper, "Accelerating spiking neural network training",
Fig. 2 and supplementary C, F): one layer, FastSNN vs the standard LIF, forward / backward /
total time over a grid of units n, steps T and batch sizes b.

Layer: input spikes ``[T, b, n_in]`` -> ``Linear(n_in, n)`` -> neuron -> output spikes; one
training step is the forward pass and the backward of ``sum(output spikes)``.  Two parts are
timed (``--parts``): ``layer`` -- the paper's measurement, Linear included (its weight and bias
gradients too); ``neuron`` -- the neuron alone, its input currents ``[T, b, n]`` given as a leaf
that requires grad.  On a CPU the Linear (``2 T b n_in n`` flops forward, as many backward)
costs more than either neuron, so the ``layer`` speed-up is bounded near 1 there; ``neuron``
shows what the neuron algorithms themselves gain.  Input (their supplementary C): for every sample a rate
``r ~ U(0, 200 Hz)``, every input neuron spikes with probability ``r * dt`` per step
(``dt = 1 ms``); ``n_in = 1000``.  Neurons: ``tau = 10 ms`` (``b = exp(-dt/tau)``), threshold 1,
input ``(1 - b) I`` (paper eq. 2), surrogate ``(100 |V| + 1)^-2``.

Implementations:

* ``fastsnn`` -- :func:`spikescan.ops.first_spike.single_spike_lif`: no-reset membrane by the
  parallel scan, Heaviside, phi / g first-spike extraction (no time loop);
* ``lif-<backend>`` -- the standard LIF (paper eq. 2: subtract reset, reset spike detached as
  in the surrogate-gradient tutorial code the paper builds on) with every backend of
  :func:`spikescan.ops.lif.lif`: ``lif-sequential`` is our reference loop; a fused kernel, when
  registered in ``spikescan.ops.backends("lif")``, is timed as well.

Speed-up = baseline time / FastSNN time, for forward, backward and total.  The implementations
of one grid cell are timed interleaved (every repeat runs each once), and the speed-up is the
median over repeats of the per-repeat ratio, so that background load on a shared machine hits
both sides of a ratio alike.  Paper (V100, b = 128): peak total x9.32 at n = 100, T = 64; peak forward x14.6 at
n = 100, T = 128.  The grid defaults to a reduced size that a 2-core CPU finishes in minutes;
``--full`` is the paper's grid (n = 100..1000 step 100, T = 2^3..2^11, b in {32, 64, 128}),
meant for a GPU.  A case whose time, extrapolated linearly in T from the previous T of the same
(implementation, n, b), exceeds ``--budget-s`` is skipped and marked.

Writes ``results.json`` and one PNG of heatmaps (forward / backward / total speed-up) per batch
size and baseline into ``--out``.  Run: ``spikescan bench fastsnn-grid`` or
``python -m spikescan.bench.fastsnn_grid``.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import time
from typing import Any, Callable

import torch

from . import _common as C

REDUCED = dict(units=(100, 200, 500), t_values=(8, 16, 32, 64, 128, 256), batches=(128,))
FULL = dict(units=tuple(range(100, 1001, 100)), t_values=tuple(2**k for k in range(3, 12)), batches=(32, 64, 128))
FASTSNN = "fastsnn"
PAPER = {
    "device": "NVIDIA Tesla V100",
    "total_peak": {"n": 100, "T": 64, "batch": 128, "speedup": 9.32},
    "forward_peak": {"n": 100, "T": 128, "batch": 128, "speedup": 14.6},
    "n200_T128": {"b32_total": 16.94, "b128_total": 5.67, "b32_forward": 26.71, "b128_forward": 8.01},
}
PHASES = ("forward", "backward", "total")
PARTS = ("layer", "neuron")


def lif_backends() -> list[str]:
    """Backends of :func:`spikescan.ops.lif.lif` available in this build (the reference loop first)."""
    from spikescan.ops import backends

    return ["sequential"] + [b for b in backends("lif") if b != "sequential"]


def make_neuron(impl: str, decay: float, scan_backend: str = "auto") -> Callable[[torch.Tensor], torch.Tensor]:
    """``I [T, b, n] -> spikes`` for ``"fastsnn"`` or ``"lif-<backend>"``."""
    from spikescan.ops.first_spike import single_spike_lif
    from spikescan.ops.lif import lif
    from spikescan.surrogate import FastSigmoid

    surrogate = FastSigmoid(100.0)
    if impl == FASTSNN:
        return lambda i: single_spike_lif(i, decay, 1.0, surrogate=surrogate, backend=scan_backend)
    if not impl.startswith("lif-"):
        raise ValueError(f"impl must be 'fastsnn' or 'lif-<backend>', got {impl!r}")
    backend = impl[len("lif-"):]
    return lambda i: lif((1.0 - decay) * i, decay, 1.0, reset="subtract", surrogate=surrogate,
                         detach_reset=True, backend=backend)


def make_input(T: int, batch: int, n_in: int, rate_max_hz: float, dt: float, generator: torch.Generator,
               device, dtype) -> torch.Tensor:
    """Supplementary C: per sample a rate ``r ~ U(0, rate_max)``; Bernoulli(r dt) spikes ``[T, b, n_in]``."""
    rates = torch.rand(batch, generator=generator, device=device) * rate_max_hz
    p = (rates * dt).clamp(max=1.0)
    u = torch.rand(T, batch, n_in, generator=generator, device=device)
    return (u < p[None, :, None]).to(dtype)


def time_interleaved(forwards: dict[str, Callable[[], torch.Tensor]], params, device, *, warmup: int,
                     repeats: int, max_total_s: float | None) -> dict[str, dict[str, list[float]]]:
    """Forward and backward (of ``sum(out)``) times per repeat of every implementation, interleaved.

    Each repeat runs every implementation once, one after the other, so that on a shared machine
    a slow phase of background load hits all of them alike; speed-ups are then taken per repeat
    (paired).  No further repeat starts after ``max_total_s`` (at least one always runs).
    """
    started = time.perf_counter()

    def one(forward) -> tuple[float, float]:
        for p in params:
            p.grad = None
        C.synchronize(device)
        t0 = time.perf_counter()
        out = forward()
        C.synchronize(device)
        t1 = time.perf_counter()
        out.sum().backward()
        C.synchronize(device)
        return t1 - t0, time.perf_counter() - t1

    for _ in range(warmup):
        for forward in forwards.values():
            one(forward)
    times = {impl: {"forward": [], "backward": []} for impl in forwards}
    for r in range(repeats):
        if r and max_total_s is not None and time.perf_counter() - started > max_total_s:
            break
        for impl, forward in forwards.items():
            f, b = one(forward)
            times[impl]["forward"].append(f)
            times[impl]["backward"].append(b)
    for p in params:
        p.grad = None
    return times


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _flat(groups) -> list[int] | None:
    if groups is None:
        return None
    return sorted({int(v) for g in groups for v in (g if isinstance(g, (list, tuple)) else [g])})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``spikescan bench fastsnn-grid``."""
    parser.add_argument("--full", action="store_true",
                        help="the paper's grid: n = 100..1000 step 100, T = 8..2048 (powers of 2), b in {32, 64, 128}")
    parser.add_argument("--units", type=C.positive_ints, nargs="+", default=None, metavar="N",
                        help=f"layer sizes n (default {list(REDUCED['units'])}; overrides --full)")
    parser.add_argument("--t-values", type=C.positive_ints, nargs="+", default=None, metavar="T",
                        help=f"steps T (default {list(REDUCED['t_values'])}; overrides --full)")
    parser.add_argument("--batch-sizes", type=C.positive_ints, nargs="+", default=None, metavar="B",
                        help=f"batch sizes (default {list(REDUCED['batches'])}; overrides --full)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="whole layer (Linear + neuron, as the paper) and/or the neuron alone (default: both)")
    parser.add_argument("--n-in", type=int, default=1000, help="input neurons (default 1000, as the paper)")
    parser.add_argument("--rate-max", type=float, default=200.0, help="max per-sample input rate in Hz (default 200)")
    parser.add_argument("--dt", type=float, default=1e-3, help="step in seconds (default 1e-3)")
    parser.add_argument("--tau", type=float, default=1e-2, help="membrane time constant in seconds (default 0.01)")
    parser.add_argument("--baselines", nargs="+", default=None,
                        help="lif backends to compare against (default: all of spikescan.ops.backends('lif'))")
    parser.add_argument("--scan-backend", default="auto", help="leaky_integrate backend of FastSNN (default auto)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per case, medians reported (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per case (default 1)")
    parser.add_argument("--budget-s", type=float, default=30.0,
                        help="skip a case whose time, extrapolated from the previous T, exceeds this (default 30)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("bench_results", "fastsnn_grid"),
                        help="output folder (default bench_results/fastsnn_grid)")
    parser.add_argument("--max-memory-gb", type=float, default=None,
                        help="CPU only: cap the address space so a runaway case fails as an error "
                             "(default 75%% of RAM; 0 = no cap)")


def _grid(args) -> tuple[list[int], list[int], list[int]]:
    base = FULL if args.full else REDUCED
    units = _flat(args.units) or list(base["units"])
    t_values = _flat(args.t_values) or list(base["t_values"])
    batches = _flat(args.batch_sizes) or list(base["batches"])
    return units, t_values, batches


def _validate(args) -> None:
    for name in ("n_in", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    for name in ("rate_max", "dt", "tau", "budget_s"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number > 0, got {value}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.baselines is not None:
        unknown = set(args.baselines) - set(lif_backends())
        if unknown:
            raise ValueError(f"--baselines: unknown lif backends {sorted(unknown)}; available {lif_backends()}")


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the grid described by ``args``; print tables, write JSON + PNG heatmaps; return the results."""
    _validate(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = C.resolve_device(args.device)
    results = C.run_with_memory_limit(args, device, _run)
    print(f"\nwrote {results['files']['json']} and {len(results['files']['png'])} PNG heatmaps")
    return results


def _run(args, device: torch.device) -> dict[str, Any]:
    units, t_values, batches = _grid(args)
    baselines = [f"lif-{b}" for b in (args.baselines or lif_backends())]
    impls = [FASTSNN] + baselines
    decay = math.exp(-args.dt / args.tau)
    print(f"fastsnn-grid on {device} ({C.cpu_model() if device.type == 'cpu' else torch.cuda.get_device_name(device)}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; n = {units}, T = {t_values}, "
          f"b = {batches}; implementations: {impls}", flush=True)
    neurons = {impl: make_neuron(impl, decay, args.scan_backend) for impl in impls}
    budget = C.BudgetTracker(args.budget_s, calls_per_case=args.warmup + args.repeats)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    parts = [p for p in PARTS if p in args.parts]
    cases: list[dict[str, Any]] = []
    started = time.perf_counter()
    for batch in batches:
        for n in units:
            torch.manual_seed(args.seed + n)
            linear = torch.nn.Linear(args.n_in, n, device=device)
            for T in t_values:
                spikes_in = make_input(T, batch, args.n_in, args.rate_max, args.dt, gen, device, torch.float32)
                for part in parts:
                    if part == "layer":
                        forward_of = lambda neuron: (lambda: neuron(linear(spikes_in)))  # noqa: E731
                        params = list(linear.parameters())
                    else:
                        with torch.no_grad():
                            currents = linear(spikes_in).requires_grad_(True)
                        forward_of = lambda neuron: (lambda: neuron(currents))  # noqa: E731
                        params = [currents]
                    forwards = {impl: forward_of(neurons[impl]) for impl in impls}
                    cases.extend(_run_cell(part, n, T, batch, forwards, params, budget, args, device))
                currents = spikes_in = None
                gc.collect()

    results: dict[str, Any] = {
        "benchmark": "fastsnn_grid",
        "config": {
            "units": units, "t_values": t_values, "batch_sizes": batches, "full": bool(args.full), "parts": parts,
            "n_in": args.n_in, "rate_max_hz": args.rate_max, "dt": args.dt, "tau": args.tau, "decay": decay,
            "implementations": impls, "repeats": args.repeats, "warmup": args.warmup,
            "budget_s": args.budget_s, "device": str(device), "threads": args.threads, "seed": args.seed,
            "scan_backend": args.scan_backend,
            "step": "forward and backward of sum(output spikes); layer: Linear + neuron (Linear grads "
                    "included); neuron: the neuron on given input currents (grad to the currents)",
            "fastsnn": "single_spike_lif(I, decay, 1, surrogate=FastSigmoid(100)): scan, heaviside, phi/g",
            "lif": "lif((1-decay) I, decay, 1, reset='subtract', detach_reset=True, FastSigmoid(100))",
        },
        "machine": C.machine_info(device),
        "paper": PAPER,
        "cases": cases,
        "speedups": _speedups(cases, baselines),
    }
    results["machine"]["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["total_wall_s"] = time.perf_counter() - started
    out = os.fspath(args.out)
    results["files"] = {"json": os.path.join(out, "results.json"), "png": []}
    print()
    print(format_report(results))
    for part in parts:
        for batch in batches:
            for base in baselines:
                path = os.path.join(out, f"fastsnn_grid_{part}_{base}_b{batch}.png")
                _plot(results, part, base, batch, path)
                results["files"]["png"].append(path)
    return results


def _run_cell(part, n, T, batch, forwards, params, budget, args, device) -> list[dict[str, Any]]:
    """Time every implementation of one grid cell, interleaved; skip those over the budget."""
    entries, run = {}, {}
    for impl, forward in forwards.items():
        key = f"{part}/{impl}/n{n}/b{batch}"
        skip, est = budget.should_skip(key, T)
        entries[impl] = {"part": part, "impl": impl, "n": n, "T": T, "batch": batch, "estimate_s": est}
        if skip:
            budget.record(key, T, est / budget.calls_per_case)
            entries[impl].update(status="skipped", reason=f"estimated {est:.1f}s > budget {args.budget_s:g}s")
        else:
            run[impl] = forward
    label = f"b={batch:<4d} n={n:<5d} T={T:<5d} {part:<6s}"
    try:
        times = time_interleaved(run, params, device, warmup=args.warmup, repeats=args.repeats,
                                 max_total_s=args.budget_s * max(1, len(run)))
    except Exception as exc:  # one failing cell (e.g. out of memory) must not lose the others
        times = {}
        for impl in run:
            entries[impl].update(status="error", error=f"{type(exc).__name__}: {exc}")
    for impl, tm in times.items():
        total = [f + b for f, b in zip(tm["forward"], tm["backward"])]
        entries[impl].update(status="ok", forward=C.summarize(tm["forward"]).to_dict(),
                             backward=C.summarize(tm["backward"]).to_dict(), total=C.summarize(total).to_dict())
        budget.record(f"{part}/{impl}/n{n}/b{batch}", T, entries[impl]["total"]["median_s"])
    for impl, e in entries.items():
        if e["status"] == "ok":
            print(f"{label} {impl:<16s} fwd {C.fmt_seconds(e['forward']['median_s']):>9s}  "
                  f"bwd {C.fmt_seconds(e['backward']['median_s']):>9s}", flush=True)
        else:
            print(f"{label} {impl:<16s} {e['status']}: {e.get('reason') or e.get('error')}", flush=True)
    return list(entries.values())


def _speedups(cases: list[dict], baselines: list[str]) -> list[dict[str, Any]]:
    by_key = {(c["part"], c["impl"], c["n"], c["T"], c["batch"]): c for c in cases}
    out = []
    for (part, impl, n, T, batch), fast in by_key.items():
        if impl != FASTSNN:
            continue
        for base in baselines:
            ref = by_key.get((part, base, n, T, batch))
            row = {"part": part, "baseline": base, "n": n, "T": T, "batch": batch}
            ok = fast["status"] == "ok" and ref is not None and ref["status"] == "ok"
            for phase in PHASES:
                # paired: the ratio within each repeat (same background load), then the median
                row[phase] = statistics.median(
                    r / f for r, f in zip(ref[phase]["times_s"], fast[phase]["times_s"])) if ok else None
            out.append(row)
    return out


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _lookup(results, part, base, batch):
    return {(r["n"], r["T"]): r for r in results["speedups"]
            if r["part"] == part and r["baseline"] == base and r["batch"] == batch}


def format_report(results: dict[str, Any]) -> str:
    """Per batch size and baseline: a table of total (forward / backward) speed-ups, n by T."""
    cfg = results["config"]
    blocks = []
    titles = {"layer": "LAYER (Linear + neuron, as the paper)", "neuron": "NEURON ALONE (input currents given)"}
    for part, batch, base in [(p, b, i) for p in cfg["parts"] for b in cfg["batch_sizes"]
                              for i in cfg["implementations"][1:]]:
        table = _lookup(results, part, base, batch)
        rows = []
        for n in cfg["units"]:
            row = [f"n={n}"]
            for T in cfg["t_values"]:
                r = table.get((n, T))
                row.append("-" if r is None or r["total"] is None else
                           f"{C.fmt_ratio(r['total'])} ({C.fmt_ratio(r['forward'])}/{C.fmt_ratio(r['backward'])})")
            rows.append(row)
        blocks.append(f"{titles[part]}: speed-up of FastSNN over {base}, b={batch}: total (forward/backward), "
                      f"median of {cfg['repeats']}, {results['machine']['torch_num_threads']} threads, "
                      f"{cfg['device']}\n" + C.format_table(["n \\ T"] + [str(T) for T in cfg["t_values"]], rows))
    for part in cfg["parts"]:
        for base in cfg["implementations"][1:]:
            ref = _lookup(results, part, base, 128).get((100, 64))
            if ref is not None and ref["total"] is not None:
                blocks.append(f"{part}, n=100, T=64, b=128 vs {base}: total x{ref['total']:.2f}, forward "
                              f"x{ref['forward']:.2f}, backward x{ref['backward']:.2f}  (paper, layer on a V100: "
                              f"total x9.32 here; forward peak x14.6 at T=128)")
    bad = [f"{c['part']} {c['impl']} n={c['n']} T={c['T']} b={c['batch']}: {c['status']}"
           for c in results["cases"] if c["status"] != "ok"]
    if bad:
        blocks.append("not timed (budget or error):\n  " + "\n  ".join(bad))
    return "\n\n".join(blocks)


def _plot(results: dict[str, Any], part: str, base: str, batch: int, path: str) -> None:
    from matplotlib.colors import LogNorm

    cfg = results["config"]
    units, t_values = cfg["units"], cfg["t_values"]
    table = _lookup(results, part, base, batch)
    fig, axes = C.new_figure(ncols=3, size=(5.0 * 3, 0.45 * len(units) + 2.5))
    grids = {}
    for phase in PHASES:
        grids[phase] = [[(table.get((n, T)) or {}).get(phase) for T in t_values] for n in units]
    vals = [v for g in grids.values() for row in g for v in row if v is not None and v > 0]
    lo, hi = (min(vals), max(vals)) if vals else (0.5, 2.0)
    span = max(hi, 1.0 / lo, 1.01)
    norm = LogNorm(vmin=1.0 / span, vmax=span)  # 1 (no speed-up) in the middle of the colour map
    for ax, phase in zip(axes[0], PHASES):
        data = [[float("nan") if v is None else v for v in row] for row in grids[phase]]
        im = ax.imshow(data, origin="lower", aspect="auto", cmap="RdBu", norm=norm)
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(t_values)), [str(T) for T in t_values])
        ax.set_yticks(range(len(units)), [str(n) for n in units])
        ax.set(xlabel="simulation steps T", ylabel="units n", title=f"{phase} speed-up")
        fig.colorbar(im, ax=ax)
    m = results["machine"]
    where = m["cpu_model"] if m["device"] == "cpu" else m.get("cuda_device_name")
    fig.suptitle(f"FastSNN over {base} ({part}), b={batch}, n_in={cfg['n_in']} — {m['device']} ({where}), "
                 f"{m['torch_num_threads']} threads", fontsize=9)
    C.save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return C.run_main("fastsnn-grid", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
