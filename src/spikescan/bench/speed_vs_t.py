"""Training-step time vs sequence length T: exact LIF loop vs SPSN (SPSN paper, Fig. 5).

One layer, ``Linear(700 -> 128)`` + neuron, batch 32, random Bernoulli input spikes; one
training step = forward + backward of the sum of the output spikes (Linear weight/bias grads
included). Timed for T in {100, 300, 1000, 3000, 10000} as two figures per T:

* ``neuron`` — the neuron alone: its input currents ``[T, B, 128]`` are given (a leaf with
  ``requires_grad``), so the step is the neuron's forward and backward only;
* ``layer`` — the whole layer, Linear included.

Implementations (alpha = beta = exp(-1/tau), tau = 20 steps):

* ``lif`` — the paper's baseline, sequential: ``i = leaky_integrate(x, alpha, backend="sequential")``
  then the exact LIF loop ``spikescan.ops.lif`` on ``(1 - beta) * i`` (threshold 1, hard reset
  to 0 with the spike detached in the reset, surrogate FastSigmoid(100)) — eq. 5-6 as the
  authors' code runs it;
* ``spsn-<backend>`` — SPSN-SB with each parallel backend of ``leaky_integrate`` (every entry of
  ``spikescan.ops.backends("leaky_integrate")`` but ``"sequential"``): ``i = leaky_integrate(x, alpha)``,
  ``u = leaky_integrate(i, beta, scale=1 - beta)``, ``s = sigmoid_bernoulli(u)`` — eq. 13-19.

Roofline (neuron alone): with N = T*B*128 elements of ``e`` bytes, a training step must at
least read the input currents (N e), write the spikes (N e) and save what backward needs — the
membrane u, written in forward and read back in backward (2 N e) — and in backward read the
spike gradient (N e) and write the input gradient (N e): 6 N e bytes. The roofline time is that
over the copy bandwidth measured in the same run (:func:`spikescan.bench._common.measure_copy_bandwidth`,
read + write bytes per second). (Recomputing u from the input in backward instead of saving it
would make it 5 N e; no implementation here does that.)

A case whose time, extrapolated linearly in T from the previous T, exceeds ``--budget-s`` is
skipped and marked as such; a case that runs stops taking repeats once it has used the budget
(at least one timed step; the JSON lists the times it got). On CPU the process's address space
is capped (``--max-memory-gb``, default 75 % of RAM) so that a case that would exhaust memory is
recorded as an error instead of triggering the OOM killer. ``--profile`` prints ``torch.profiler`` tables of one step of each
implementation at the largest T.

Run: ``spikescan bench speed-vs-t`` or ``python -m spikescan.bench.speed_vs_t``.
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

DEFAULT_T = (100, 300, 1000, 3000, 10000)
PARTS = ("neuron", "layer")
LIF = "lif"
FUSED_STEP = "spsn-fused-step"
ROOFLINE_PASSES = 6  # read x, write s, write u (saved), read u, read grad s, write grad x
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def spsn_backends() -> list[str]:
    """The parallel backends of ``leaky_integrate`` this benchmark times (all but the reference)."""
    from spikescan.ops import backends

    return [b for b in backends("leaky_integrate") if b != "sequential"]


def make_neuron(impl: str, *, tau: float, generator: torch.Generator | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x [T, B, F] -> spikes [T, B, F]`` for ``impl`` (``"lif"`` or ``"spsn-<backend>"``)."""
    from spikescan.ops.firing import sigmoid_bernoulli
    from spikescan.ops.lif import lif
    from spikescan.ops.leaky import leaky_integrate
    from spikescan.surrogate import FastSigmoid

    alpha = beta = math.exp(-1.0 / tau)
    if impl == LIF:
        surrogate = FastSigmoid(100.0)

        def neuron(x: torch.Tensor) -> torch.Tensor:
            i = leaky_integrate(x, alpha, backend="sequential")
            return lif((1.0 - beta) * i, beta, threshold=1.0, reset="zero", detach_reset=True,
                       surrogate=surrogate, backend="sequential")

        return neuron
    if impl == FUSED_STEP:
        from spikescan.ops.spsn import fused_spsn

        def fused_neuron(x: torch.Tensor) -> torch.Tensor:
            seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
            return fused_spsn(x, alpha, beta, seed=seed)

        return fused_neuron
    if not impl.startswith("spsn-"):
        raise ValueError(f"impl must be 'lif', {FUSED_STEP!r} or 'spsn-<backend>', got {impl!r}")
    backend = impl[len("spsn-"):]

    def neuron(x: torch.Tensor) -> torch.Tensor:
        i = leaky_integrate(x, alpha, backend=backend)
        u = leaky_integrate(i, beta, scale=1.0 - beta, backend=backend)
        return sigmoid_bernoulli(u, generator=generator)

    return neuron


def make_step(part: str, neuron, linear: torch.nn.Linear, spikes_in: torch.Tensor, currents: torch.Tensor):
    """One training step (forward + backward of the summed output spikes) for ``part``."""
    if part == "neuron":
        x = currents.detach().clone().requires_grad_(True)

        def step() -> None:
            x.grad = None
            neuron(x).sum().backward()

    elif part == "layer":

        def step() -> None:
            linear.zero_grad(set_to_none=True)
            neuron(linear(spikes_in)).sum().backward()

    else:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    return step


def neuron_roofline_bytes(T: int, batch: int, hidden: int, dtype: torch.dtype) -> int:
    """Minimal bytes one neuron-alone training step moves (see module docstring): 6 N e."""
    return ROOFLINE_PASSES * T * batch * hidden * torch.empty((), dtype=dtype).element_size()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``spikescan bench speed-vs-t``."""
    parser.add_argument("--t-values", type=C.positive_ints, nargs="+", default=[list(DEFAULT_T)], metavar="T",
                        help="sequence lengths, space or comma separated (default: 100 300 1000 3000 10000)")
    parser.add_argument("--batch", type=int, default=32, help="batch size B (default 32)")
    parser.add_argument("--in-features", type=int, default=700, help="Linear input features (default 700)")
    parser.add_argument("--hidden", type=int, default=128, help="neurons in the layer (default 128)")
    parser.add_argument("--p-in", type=float, default=0.05, help="input spike probability per step (default 0.05)")
    parser.add_argument("--tau", type=float, default=20.0,
                        help="tau_syn = tau_mem in steps; alpha = beta = exp(-1/tau) (default 20)")
    parser.add_argument("--backends", nargs="+", default=None,
                        help="leaky_integrate backends to time for SPSN (default: all of spikescan.ops.backends('leaky_integrate') but sequential)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="neuron alone and/or the whole layer (default: both)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case, median reported (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per case before timing (default 1)")
    parser.add_argument("--budget-s", type=float, default=60.0,
                        help="skip a case whose time, extrapolated from the previous T, exceeds this (default 60)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("bench_results", "speed_vs_t"),
                        help="output folder for results.json and speed_vs_t.png (default bench_results/speed_vs_t)")
    parser.add_argument("--max-memory-gb", type=float, default=None,
                        help="CPU only: cap the address space (RLIMIT_AS) so a runaway case fails as an error "
                             "(default 75%% of RAM; 0 = no cap)")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler tables (top ops by self CPU time) of one step per "
                             "implementation at --profile-t")
    parser.add_argument("--profile-t", type=int, default=None, help="T for --profile (default: the largest T)")


def _validate(args: argparse.Namespace) -> None:
    C.check_run_options(args, ("batch", "in_features", "hidden", "repeats"))
    if not 0.0 <= args.p_in <= 1.0:
        raise ValueError(f"--p-in must be in [0, 1], got {args.p_in}")
    if not args.tau > 0:
        raise ValueError(f"--tau must be > 0, got {args.tau}")


def _t_values(args: argparse.Namespace) -> list[int]:
    flat = [t for group in args.t_values for t in (group if isinstance(group, (list, tuple)) else [group])]
    return sorted(set(int(t) for t in flat))


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


def _make_inputs(T: int, args, linear: torch.nn.Linear, device, dtype, seed: int):
    gen = torch.Generator(device=device).manual_seed(seed)
    spikes_in = (torch.rand(T, args.batch, args.in_features, generator=gen, device=device) < args.p_in).to(dtype)
    with torch.no_grad():
        currents = linear(spikes_in)
    return spikes_in, currents


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by ``args``; print tables, write JSON + PNG; return the results."""
    _validate(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = C.resolve_device(args.device)
    results = C.run_with_memory_limit(args, device, _run)
    print(f"\nwrote {results['files']['json']} and {results['files']['png']}")
    return results


def _run(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    dtype = _DTYPES[args.dtype]
    t_values = _t_values(args)
    backends = list(args.backends) if args.backends else spsn_backends()
    impls = [LIF] + [f"spsn-{b}" for b in backends]
    from spikescan.ops import backends

    if not args.backends and "fused" in backends("spsn", torch.empty(0, device=device)):
        impls.append(FUSED_STEP)  # the whole SPSN step in one kernel (ops.spsn.fused_spsn)
    parts = [p for p in PARTS if p in args.parts]

    print(f"speed-vs-t on {device} ({C.cpu_model() if device.type == 'cpu' else torch.cuda.get_device_name(device)}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; T = {t_values}; implementations: {impls}")
    machine = C.machine_info(device)
    if C.load_warning(machine):
        print(C.load_warning(machine))
    bandwidth = C.measure_copy_bandwidth(device)
    print(f"copy bandwidth (read + write): {bandwidth / 1e9:.2f} GB/s")

    torch.manual_seed(args.seed)
    linear = torch.nn.Linear(args.in_features, args.hidden, device=device, dtype=dtype)
    sb_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    neurons = {impl: make_neuron(impl, tau=args.tau, generator=sb_gen) for impl in impls}

    budget = C.BudgetTracker(args.budget_s, calls_per_case=args.warmup + args.repeats)
    cases: dict[str, dict[str, list[dict[str, Any]]]] = {p: {i: [] for i in impls} for p in parts}
    started = time.perf_counter()
    for T in t_values:
        spikes_in, currents = _make_inputs(T, args, linear, device, dtype, args.seed + T)
        for part in parts:
            for impl in impls:
                entry = _run_case(part, impl, T, neurons[impl], linear, spikes_in, currents, budget, args, device)
                cases[part][impl].append(entry)
        del spikes_in, currents
        gc.collect()

    results: dict[str, Any] = {
        "benchmark": "speed_vs_t",
        "config": {
            "t_values": t_values, "batch": args.batch, "in_features": args.in_features, "hidden": args.hidden,
            "p_in": args.p_in, "tau": args.tau, "alpha": math.exp(-1.0 / args.tau), "beta": math.exp(-1.0 / args.tau),
            "implementations": impls, "parts": parts, "repeats": args.repeats, "warmup": args.warmup,
            "budget_s": args.budget_s, "device": str(device), "dtype": args.dtype, "threads": args.threads,
            "seed": args.seed, "step": "forward + backward of sum(spikes); layer part includes Linear grads",
            "lif": "leaky_integrate(x, alpha, 'sequential') then ops.lif((1-beta)*i, beta, threshold=1, "
                   "reset='zero', detach_reset=True, surrogate=FastSigmoid(100), backend='sequential')",
            "spsn": "leaky_integrate(x, alpha, backend) -> leaky_integrate(i, beta, scale=1-beta, backend) "
                    "-> sigmoid_bernoulli(u)",
        },
        "machine": machine,
        "copy_bandwidth_bytes_per_s": bandwidth,
        "cases": cases,
    }
    if "neuron" in parts:
        results["roofline"] = _roofline(t_values, args, dtype, bandwidth, cases["neuron"], impls)
    results["speedup_lif_over_spsn"] = {
        part: {impl: _ratios(cases[part][LIF], cases[part][impl]) for impl in impls if impl != LIF} for part in parts
    }
    if args.profile:
        results["profile"] = _profile(args, impls, neurons, linear, device, dtype, t_values, parts, cases)
    results["machine"]["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["total_wall_s"] = time.perf_counter() - started

    out = os.fspath(args.out)
    json_path, png_path = os.path.join(out, "results.json"), os.path.join(out, "speed_vs_t.png")
    results["files"] = {"json": json_path, "png": png_path}
    print()
    print(format_report(results))
    _plot(results, png_path)
    if args.profile:
        prof_path = os.path.join(out, "profile.txt")
        with open(prof_path, "w", encoding="utf-8") as fh:
            fh.write("\n\n".join(f"== {k} ==\n{v}" for k, v in results["profile"].items()))
        results["files"]["profile"] = prof_path
    return results


def _run_case(part, impl, T, neuron, linear, spikes_in, currents, budget, args, device) -> dict[str, Any]:
    key = f"{part}/{impl}"
    skip, est = budget.should_skip(key, T)
    label = f"T={T:<6d} {part:<6s} {impl:<14s}"
    if skip:
        budget.record(key, T, est / budget.calls_per_case)  # larger T of this case stay skipped
        print(f"{label} skipped: estimated {est:.1f}s > budget {args.budget_s:g}s", flush=True)
        return {"T": T, "status": "skipped", "estimate_s": est,
                "reason": f"estimated {est:.1f}s (linear in T from the previous T) > budget {args.budget_s:g}s"}
    try:
        step = make_step(part, neuron, linear, spikes_in, currents)
        timing = C.time_fn(step, device, warmup=args.warmup, repeats=args.repeats, max_total_s=args.budget_s)
    except Exception as exc:  # one broken backend must not lose the other results
        print(f"{label} ERROR: {type(exc).__name__}: {exc}", flush=True)
        return {"T": T, "status": "error", "error": f"{type(exc).__name__}: {exc}", "estimate_s": est}
    finally:
        linear.zero_grad(set_to_none=True)
    budget.record(key, T, timing.median_s)
    entry = {"T": T, "status": "ok", "estimate_s": est, **timing.to_dict()}
    note = ""
    if len(timing.times_s) < args.repeats:
        entry["note"] = f"stopped after {len(timing.times_s)} of {args.repeats} repeats: budget {args.budget_s:g}s used"
        note = "  " + entry["note"]
    print(f"{label} {C.fmt_seconds(timing.median_s):>10s}  (IQR {C.fmt_seconds(timing.iqr_s)}){note}", flush=True)
    return entry


def _median(entry: dict[str, Any]) -> float | None:
    return entry["median_s"] if entry.get("status") == "ok" else None


def _ratios(num: list[dict], den: list[dict]) -> list[dict[str, Any]]:
    out = []
    for a, b in zip(num, den):
        ma, mb = _median(a), _median(b)
        out.append({"T": a["T"], "ratio": (ma / mb) if (ma is not None and mb is not None and mb > 0) else None})
    return out


def _roofline(t_values, args, dtype, bandwidth, neuron_cases, impls) -> dict[str, Any]:
    entries = []
    for k, T in enumerate(t_values):
        nbytes = neuron_roofline_bytes(T, args.batch, args.hidden, dtype)
        secs = C.roofline_seconds(nbytes, bandwidth)
        distance = {}
        for impl in impls:
            m = _median(neuron_cases[impl][k])
            distance[impl] = m / secs if m is not None else None
        entries.append({"T": T, "bytes": nbytes, "seconds": secs, "time_over_roofline": distance})
    return {
        "bytes_formula": f"{ROOFLINE_PASSES} * T * B * hidden * element_size: read x, write spikes, write u "
                         "(saved for backward), read u, read grad spikes, write grad x",
        "fused_step_traffic": f"{FUSED_STEP} on the CPU moves per (t, neuron): forward reads x and writes s; "
                              "backward reads x again (it recomputes i, u per 32-step segment from 0.25 B of "
                              "checkpoints and regenerates the noise) and writes grad x; the spike gradient of "
                              "sum() is one broadcast row; sum() reads s -- 5 passes with the sum, 4 without it, against "
                              "the roofline's 6",
        "bandwidth_bytes_per_s": bandwidth,
        "entries": entries,
    }


def _profile(args, impls, neurons, linear, device, dtype, t_values, parts, cases) -> dict[str, str]:
    """Profiler tables of one step per (part, impl) at the profile T; cases the budget skipped at
    that T are not profiled (one step could take far longer than the budget)."""
    T = args.profile_t or max(t_values)
    spikes_in, currents = _make_inputs(T, args, linear, device, dtype, args.seed + T)
    tables = {}
    for part in parts:
        for impl in impls:
            key = f"T={T} {part} {impl}"
            timed = [e for e in cases[part][impl] if e["T"] == T]
            if timed and timed[0]["status"] == "skipped":
                tables[key] = "not profiled: this case was skipped (over the time budget)"
                print(f"\n--- profile: {key}: {tables[key]}", flush=True)
                continue
            step = make_step(part, neurons[impl], linear, spikes_in, currents)
            try:
                tables[key] = C.profile_table(step, device, row_limit=12)
            except Exception as exc:
                tables[key] = f"ERROR: {type(exc).__name__}: {exc}"
            linear.zero_grad(set_to_none=True)
            print(f"\n--- profile: {key} (one training step, top ops by self CPU time) ---\n{tables[key]}", flush=True)
    return tables


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _cell(entry: dict[str, Any]) -> str:
    if entry["status"] == "ok":
        return C.fmt_seconds(entry["median_s"])
    if entry["status"] == "skipped":
        return f"skip(~{entry['estimate_s']:.0f}s)"
    return "error"


def format_report(results: dict[str, Any]) -> str:
    """The text tables: per part, one row per implementation and per ratio, one column per T."""
    cfg = results["config"]
    t_values = cfg["t_values"]
    headers = ["T"] + [str(T) for T in t_values]
    blocks = []
    titles = {
        "neuron": f"NEURON ALONE: input currents [T,{cfg['batch']},{cfg['hidden']}] given (requires_grad)",
        "layer": f"LAYER: Linear({cfg['in_features']}->{cfg['hidden']}) + neuron, input spikes "
                 f"[T,{cfg['batch']},{cfg['in_features']}] p={cfg['p_in']}",
    }
    for part, by_impl in results["cases"].items():
        impls = list(by_impl)
        rows = [[impl] + [_cell(e) for e in by_impl[impl]] for impl in impls]
        if part == "neuron" and "roofline" in results:
            roof = results["roofline"]
            rows.append(["ROOFLINE"] + [C.fmt_seconds(e["seconds"]) for e in roof["entries"]])
        for impl in impls:
            if impl != LIF:
                ratios = results["speedup_lif_over_spsn"][part][impl]
                rows.append([f"LIF/{impl}"] + [C.fmt_ratio(r["ratio"]) for r in ratios])
        if part == "neuron" and "roofline" in results:
            for impl in impls:
                rows.append([f"{impl}/ROOFLINE"] + [C.fmt_ratio(e["time_over_roofline"][impl])
                                                   for e in results["roofline"]["entries"]])
        title = (f"{titles[part]}\ntraining step (forward + backward), median of {cfg['repeats']} "
                 f"after {cfg['warmup']} warm-up, {results['machine']['torch_num_threads']} threads, {cfg['device']}")
        blocks.append(title + "\n" + C.format_table(headers, rows))
    if "roofline" in results:
        bw = results["copy_bandwidth_bytes_per_s"]
        blocks.append(f"ROOFLINE = {results['roofline']['bytes_formula']}, at the copy bandwidth measured in this "
                      f"run ({bw / 1e9:.2f} GB/s read+write); X/ROOFLINE = how far X is from that limit.  "
                      f"{results['roofline'].get('fused_step_traffic', '')}")
    skipped = [f"{p}/{i} T={e['T']}" for p, d in results["cases"].items() for i, es in d.items()
               for e in es if e["status"] == "skipped"]
    short = [f"{p}/{i} T={e['T']} ({len(e['times_s'])} repeats)" for p, d in results["cases"].items()
             for i, es in d.items() for e in es if "note" in e]
    if short:
        blocks.append("fewer repeats (budget used up): " + ", ".join(short))
    if skipped:
        blocks.append(f"skipped (over the {cfg['budget_s']:g}s budget per case): " + ", ".join(skipped))
    errors = [f"{p}/{i} T={e['T']}: {e['error']}" for p, d in results["cases"].items() for i, es in d.items()
              for e in es if e["status"] == "error"]
    if errors:
        blocks.append("errors:\n  " + "\n  ".join(errors))
    return "\n\n".join(blocks)


def _plot(results: dict[str, Any], path: str) -> None:
    fig, axes = C.new_figure(ncols=2)
    ax_t, ax_s = axes[0]
    styles = {"neuron": dict(linestyle="-", marker="o"), "layer": dict(linestyle="--", marker="s")}
    colors = {}
    for part, by_impl in results["cases"].items():
        for impl, entries in by_impl.items():
            ok = [e for e in entries if e["status"] == "ok"]
            if not ok:
                continue
            T = [e["T"] for e in ok]
            med = [e["median_s"] for e in ok]
            err = [[m - e["q1_s"] for m, e in zip(med, ok)], [e["q3_s"] - m for m, e in zip(med, ok)]]
            line = ax_t.errorbar(T, med, yerr=err, label=f"{impl} ({part})", capsize=2,
                                 color=colors.get(impl), markersize=4, **styles[part])
            colors.setdefault(impl, line[0].get_color())
    if "roofline" in results:
        roof = results["roofline"]["entries"]
        ax_t.plot([e["T"] for e in roof], [e["seconds"] for e in roof], ":", color="k", label="roofline (neuron)")
    ax_t.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="training step time [s]",
             title="forward + backward, median (IQR bars)")
    ax_t.legend(fontsize=7)
    for part, by_impl in results["speedup_lif_over_spsn"].items():
        for impl, ratios in by_impl.items():
            pts = [(r["T"], r["ratio"]) for r in ratios if r["ratio"] is not None]
            if pts:
                ax_s.plot(*zip(*pts), label=f"LIF / {impl} ({part})", color=colors.get(impl), markersize=4,
                          **styles[part])
    ax_s.axhline(1.0, color="gray", linewidth=0.8)
    ax_s.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="speed-up (LIF time / SPSN time)",
             title="speed-up of SPSN over the LIF loop")
    ax_s.legend(fontsize=7)
    m = results["machine"]
    fig.suptitle(f"speed vs T — {C.machine_title(m)}, "
                 f"torch {m['torch']}", fontsize=9)
    C.save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return C.run_main("speed-vs-t", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
