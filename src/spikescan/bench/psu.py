"""Training-step time vs T of the Parallel Spiking Units (PSU, IPSU, RPSU; Li et al., "Parallel
Spiking Unit for Efficient Training of Spiking Neural Networks", Fig. 4) against the LIF.

One layer: input spikes ``[T, B, n_in]`` (Bernoulli, ``--p-in``) -> ``Linear(n_in, hidden)`` ->
neuron; one training step = forward + backward of ``sum(output spikes)`` with every parameter's
gradient (Linear, and the T×T matrix and bias of IPSU / RPSU).

Implementations (``tau = 2`` steps, the authors' value, where the exact and the code's leak
coincide; threshold ``--threshold``; arctan surrogate, alpha = 2):

* ``lif-<backend>`` -- the exact LIF ``u[t] = (1 - 1/tau) u'[t-1] + x[t]/tau``, hard reset to 0
  (the authors' baseline LIF node), every backend of :func:`spikescan.ops.lif.lif`;
* ``psu-<backend>``, ``ipsu-<backend>``, ``rpsu-<backend>`` -- :mod:`spikescan.nn.psu` with
  ``backend`` in ``matrix`` (dense T×T matmuls) and ``chunked`` (Toeplitz leak/reset as an
  O(T·C) scan, learned matrix dense).

The JSON also lists, per implementation and T, the T×T matrices materialized per layer and
their bytes (``4 T²`` each in float32).  A case whose time, extrapolated linearly in T from the
previous T, exceeds ``--budget-s`` is skipped and marked.  Run: ``spikescan bench psu`` or
``python -m spikescan.bench.psu``.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
from typing import Any, Callable

import torch

from . import _common as C

DEFAULT_T = (8, 16, 32, 64, 128, 256, 512, 1024)
VARIANTS = ("psu", "ipsu", "rpsu")
PSU_BACKENDS = ("matrix", "chunked")
# T×T matrices materialized per layer and call (besides IPSU / RPSU's own parameter)
TT_COUNT = {("psu", "matrix"): 1, ("psu", "chunked"): 0, ("ipsu", "matrix"): 1, ("ipsu", "chunked"): 1,
            ("rpsu", "matrix"): 2, ("rpsu", "chunked"): 1}


def lif_backends() -> list[str]:
    from spikescan.ops import backends

    return ["sequential"] + [b for b in backends("lif") if b != "sequential"]


def make_neuron(impl: str, T: int, *, tau: float, threshold: float, device) -> tuple[Callable, list]:
    """``(x [T, B, F] -> spikes, parameters)`` for ``"lif-<backend>"`` or ``"<variant>-<backend>"``."""
    from spikescan.nn.psu import IPSU, PSU, RPSU
    from spikescan.ops.lif import lif
    from spikescan.surrogate import ATan

    kind, _, backend = impl.partition("-")
    if kind == "lif":
        k = 1.0 / tau
        sur = ATan(2.0)
        return (lambda x: lif(k * x, 1.0 - k, threshold, reset="zero", surrogate=sur, detach_reset=True,
                              backend=backend)), []
    if kind not in VARIANTS or backend not in PSU_BACKENDS:
        raise ValueError(f"impl must be 'lif-<backend>' or one of {VARIANTS} + '-' + one of {PSU_BACKENDS}, got {impl!r}")
    if kind == "psu":
        module = PSU(tau, threshold, backend=backend)
    else:
        module = (IPSU if kind == "ipsu" else RPSU)(T, tau, threshold, backend=backend)
    module = module.to(device)
    return module, list(module.parameters())


def tt_bytes(impl: str, T: int, element_size: int = 4) -> tuple[int, int]:
    """(number of T×T matrices materialized per call, their bytes) for ``impl``."""
    kind, _, backend = impl.partition("-")
    count = 0 if kind == "lif" else TT_COUNT[(kind, backend)]
    return count, count * T * T * element_size


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``spikescan bench psu``."""
    parser.add_argument("--t-values", type=C.positive_ints, nargs="+", default=[list(DEFAULT_T)], metavar="T",
                        help=f"sequence lengths (default {' '.join(map(str, DEFAULT_T))})")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--in-features", type=int, default=700, help="Linear input features (default 700)")
    parser.add_argument("--hidden", type=int, default=256, help="neurons in the layer (default 256)")
    parser.add_argument("--p-in", type=float, default=0.05, help="input spike probability per step (default 0.05)")
    parser.add_argument("--tau", type=float, default=2.0, help="time constant in steps (default 2, the authors')")
    parser.add_argument("--threshold", type=float, default=0.3, help="firing threshold (default 0.3, their SHD value)")
    parser.add_argument("--impls", nargs="+", default=None,
                        help="implementations (default: lif-<every lif backend>, psu/ipsu/rpsu-{matrix,chunked})")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case, median reported (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per case (default 1)")
    parser.add_argument("--budget-s", type=float, default=30.0,
                        help="skip a case whose time, extrapolated from the previous T, exceeds this (default 30)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("bench_results", "psu"),
                        help="output folder for results.json and psu.png (default bench_results/psu)")


def _validate(args) -> None:
    C.check_run_options(args, ("batch", "in_features", "hidden", "repeats"))
    if not 0.0 <= args.p_in <= 1.0:
        raise ValueError(f"--p-in must be in [0, 1], got {args.p_in}")
    if not (math.isfinite(args.tau) and args.tau >= 1.0):
        raise ValueError(f"--tau must be a finite number >= 1 (steps), got {args.tau}")
    if not (math.isfinite(args.threshold) and args.threshold > 0):
        raise ValueError(f"--threshold must be > 0, got {args.threshold}")


def default_impls() -> list[str]:
    return [f"lif-{b}" for b in lif_backends()] + [f"{v}-{b}" for v in VARIANTS for b in PSU_BACKENDS]


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; print tables, write ``results.json`` and ``psu.png``; return the results."""
    _validate(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = C.resolve_device(args.device)
    t_values = sorted({int(t) for g in args.t_values for t in (g if isinstance(g, (list, tuple)) else [g])})
    impls = list(args.impls) if args.impls else default_impls()
    for impl in impls:  # fail early on a bad name
        make_neuron(impl, 2, tau=args.tau, threshold=args.threshold, device=device)
    baseline = next((i for i in impls if i.startswith("lif-")), None)
    print(f"psu bench on {device} ({C.cpu_model() if device.type == 'cpu' else torch.cuda.get_device_name(device)}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; T = {t_values}; implementations: {impls}",
          flush=True)

    torch.manual_seed(args.seed)
    linear = torch.nn.Linear(args.in_features, args.hidden, device=device)
    budget = C.BudgetTracker(args.budget_s, calls_per_case=args.warmup + args.repeats)
    cases: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
    started = time.perf_counter()
    for T in t_values:
        gen = torch.Generator(device=device).manual_seed(args.seed + T)
        spikes_in = (torch.rand(T, args.batch, args.in_features, generator=gen, device=device) < args.p_in).float()
        for impl in impls:
            cases[impl].append(_run_case(impl, T, linear, spikes_in, budget, args, device))
        del spikes_in
        gc.collect()

    results: dict[str, Any] = {
        "benchmark": "psu",
        "config": {
            "t_values": t_values, "batch": args.batch, "in_features": args.in_features, "hidden": args.hidden,
            "p_in": args.p_in, "tau": args.tau, "threshold": args.threshold, "implementations": impls,
            "baseline": baseline, "repeats": args.repeats, "warmup": args.warmup, "budget_s": args.budget_s,
            "device": str(device), "threads": args.threads, "seed": args.seed,
            "step": "forward + backward of sum(spikes), all parameter grads (Linear, A and b of IPSU/RPSU)",
        },
        "machine": C.machine_info(device),
        "cases": cases,
        "speedup_over_baseline": {
            impl: [{"T": a["T"], "ratio": _ratio(a, b)} for a, b in zip(cases[baseline], cases[impl])]
            for impl in impls if baseline is not None and impl != baseline
        },
    }
    results["machine"]["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["total_wall_s"] = time.perf_counter() - started
    out = os.fspath(args.out)
    results["files"] = {"json": os.path.join(out, "results.json"), "png": os.path.join(out, "psu.png")}
    print()
    print(format_report(results))
    _plot(results, results["files"]["png"])
    C.write_json_atomic(results["files"]["json"], results)
    print(f"\nwrote {results['files']['json']} and {results['files']['png']}")
    return results


def _ratio(base: dict, other: dict) -> float | None:
    if base["status"] == "ok" and other["status"] == "ok" and other["median_s"] > 0:
        return base["median_s"] / other["median_s"]
    return None


def _run_case(impl, T, linear, spikes_in, budget, args, device) -> dict[str, Any]:
    count, nbytes = tt_bytes(impl, T)
    entry: dict[str, Any] = {"T": T, "tt_matrices": count, "tt_bytes": nbytes}
    skip, est = budget.should_skip(impl, T)
    label = f"T={T:<6d} {impl:<16s}"
    entry["estimate_s"] = est
    if skip:
        budget.record(impl, T, est / budget.calls_per_case)
        print(f"{label} skipped: estimated {est:.1f}s > budget {args.budget_s:g}s", flush=True)
        return {**entry, "status": "skipped"}
    try:
        neuron, params = make_neuron(impl, T, tau=args.tau, threshold=args.threshold, device=device)
        params = params + list(linear.parameters())

        def step() -> None:
            for p in params:
                p.grad = None
            neuron(linear(spikes_in)).sum().backward()

        timing = C.time_fn(step, device, warmup=args.warmup, repeats=args.repeats, max_total_s=args.budget_s)
    except Exception as exc:  # one failing case must not lose the others
        print(f"{label} ERROR: {type(exc).__name__}: {exc}", flush=True)
        return {**entry, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        linear.zero_grad(set_to_none=True)
    budget.record(impl, T, timing.median_s)
    print(f"{label} {C.fmt_seconds(timing.median_s):>10s}  (IQR {C.fmt_seconds(timing.iqr_s)})", flush=True)
    return {**entry, "status": "ok", **timing.to_dict()}


def format_report(results: dict[str, Any]) -> str:
    cfg = results["config"]
    headers = ["T"] + [str(T) for T in cfg["t_values"]]
    rows = []
    for impl, entries in results["cases"].items():
        rows.append([impl] + [C.fmt_seconds(e["median_s"]) if e["status"] == "ok" else e["status"] for e in entries])
    for impl, ratios in results["speedup_over_baseline"].items():
        rows.append([f"{cfg['baseline']}/{impl}"] + [C.fmt_ratio(r["ratio"]) for r in ratios])
    mem_rows = []
    for impl, entries in results["cases"].items():
        if not impl.startswith("lif-"):
            mem_rows.append([impl] + [f"{e['tt_matrices']}x {e['tt_bytes'] / 1024:.4g}KiB" for e in entries])
    return (f"training step (Linear({cfg['in_features']}->{cfg['hidden']}) + neuron, B={cfg['batch']}), median of "
            f"{cfg['repeats']}, {results['machine']['torch_num_threads']} threads, {cfg['device']}\n"
            + C.format_table(headers, rows)
            + "\n\nT×T matrices materialized per layer and call (float32; IPSU/RPSU also hold their T×T parameter)\n"
            + C.format_table(headers, mem_rows))


def _plot(results: dict[str, Any], path: str) -> None:
    fig, axes = C.new_figure(ncols=2)
    ax_t, ax_s = axes[0]
    for impl, entries in results["cases"].items():
        ok = [e for e in entries if e["status"] == "ok"]
        if ok:
            ax_t.plot([e["T"] for e in ok], [e["median_s"] for e in ok], marker="o", markersize=3, label=impl,
                      linestyle="--" if impl.startswith("lif-") else "-")
    ax_t.set(xscale="log", yscale="log", xlabel="time steps T", ylabel="training step time [s]",
             title="forward + backward, median")
    ax_t.legend(fontsize=7)
    for impl, ratios in results["speedup_over_baseline"].items():
        pts = [(r["T"], r["ratio"]) for r in ratios if r["ratio"] is not None]
        if pts:
            ax_s.plot(*zip(*pts), marker="o", markersize=3, label=impl)
    ax_s.axhline(1.0, color="gray", linewidth=0.8)
    ax_s.set(xscale="log", yscale="log", xlabel="time steps T",
             ylabel=f"speed-up ({results['config']['baseline']} time / time)", title="speed-up over the LIF")
    ax_s.legend(fontsize=7)
    m = results["machine"]
    where = m["cpu_model"] if m["device"] == "cpu" else m.get("cuda_device_name")
    fig.suptitle(f"PSU family vs LIF — {m['device']} ({where}), {m['torch_num_threads']} threads, "
                 f"torch {m['torch']}", fontsize=9)
    C.save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return C.run_main("psu", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
