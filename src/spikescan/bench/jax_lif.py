"""The exact LIF in JAX (spikescan.jax, jit) vs spikescan's fused torch kernel vs the torch loop.

The temporal-parallelization paper's Table 1 row "JAX (ours)" against its CUDA kernel, here on
whatever device JAX and torch see (CPU by default), in one run:

(a) ``forward`` -- one LIF layer of ``--neurons`` (default 1 000 000) neurons, T in
    {8, 16, 32, 64, 128}, ``k_tau = 0.2``, ``V_th = 0.3``, ``V_rest = 0`` (hard reset to 0),
    spikes only, no gradient.
(b) ``train`` -- one training step of one layer: forward + backward of ``sum(spikes)`` w.r.t.
    the input currents ``[T, B, N]`` (B = 32, N = ``--hidden``), decay 0.9, threshold 1, hard
    reset, FastSigmoid(25) surrogate.

Implementations: ``jax`` -- ``jax.jit`` of :func:`spikescan.jax.lif` (its custom-VJP scan,
``backend="fused"``); ``jax-autodiff`` -- the same with ``backend="sequential"`` (JAX
differentiating its own ``lax.scan``; in (a) it is the same program as ``jax``, so (a) times it
once); ``fused`` -- :func:`spikescan.ops.lif.lif` with ``backend="fused"`` (numba on the CPU,
Triton on CUDA); ``torch-loop`` -- the same op with ``backend="sequential"``.  Before timing,
the JAX and fused-torch spikes are compared on a slice of the input (identical wherever the
float64 membrane is farther from the threshold than the float32 rounding bound).

ROOFLINE rows: the bytes a step must move at the copy bandwidth measured in this run
(:func:`spikescan.bench._common.measure_copy_bandwidth`): (a) ``2 T N`` floats (read x, write
spikes); (b) ``5 T B N`` floats (read x, write spikes; backward: read x, read the spike
gradient, write the input gradient).

``profile`` (``--parts ... profile``): why a JAX scan runs where it runs -- the ns per
(step, neuron) of the forward at growing N (state in L1, L2, memory), the time of one jitted
elementwise pass over ``[T, N]`` (``x + 1``: what any XLA op over the whole array costs,
allocation included), and the number of fused kernels XLA launches per loop iteration of the
forward scan (from the compiled HLO).

Run: ``spikescan bench jax`` (needs ``pip install "spikescan[jax]"``).  CPU tip: as for
``spikescan bench lif``, run with ``OMP_WAIT_POLICY=PASSIVE``.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import time
from typing import Any, Callable

import numpy as np
import torch

from . import _common as C

IMPLS = ("jax", "jax-autodiff", "fused", "torch-loop")
PAPER = dict(decay=0.2, threshold=0.3)
TRAIN = dict(decay=0.9, threshold=1.0)
FWD_PASSES, TRAIN_PASSES = 2, 5
DEFAULT_T_FWD = (8, 16, 32, 64, 128)


def _flat(groups) -> list[int]:
    return sorted({int(v) for g in groups for v in (g if isinstance(g, (list, tuple)) else [g])})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``spikescan bench jax``."""
    parser.add_argument("--parts", nargs="+", choices=("forward", "train", "profile"),
                        default=["forward", "train", "profile"])
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--neurons", type=int, default=1_000_000, help="(a) neurons in the layer")
    parser.add_argument("--t-forward", type=C.positive_ints, nargs="+", default=[list(DEFAULT_T_FWD)], metavar="T")
    parser.add_argument("--batch", type=int, default=32, help="(b) batch size B")
    parser.add_argument("--hidden", type=C.positive_ints, nargs="+", default=[[256]], metavar="N", help="(b) neurons N")
    parser.add_argument("--t-train", type=C.positive_ints, nargs="+", default=[[100, 1000]], metavar="T")
    parser.add_argument("--profile-neurons", type=C.positive_ints, default=[1000, 10_000, 100_000, 1_000_000],
                        metavar="N,N,...", help="(profile) layer sizes of the per-step cost")
    parser.add_argument("--check-neurons", type=int, default=20_000,
                        help="neurons of the JAX vs fused-torch spike check (T = 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case, median reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per case (JAX compiles in the first)")
    parser.add_argument("--budget-s", type=float, default=60.0,
                        help="skip a case whose time extrapolated from the previous T exceeds this")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("bench_results", "jax"),
                        help="folder for results.json, table.md and jax.png")


def _validate(args) -> None:
    C.check_run_options(args, ("neurons", "batch", "repeats", "check_neurons"))


def _jax():
    try:
        import jax
    except ImportError as exc:
        raise ImportError('spikescan bench jax needs jax: pip install "spikescan[jax]"') from exc
    return jax


def _torch_lif():
    from ..ops.lif import lif

    return lif


def make_forward(impl: str, decay: float, threshold: float) -> Callable[[Any], Any]:
    """``x -> spikes`` of ``impl`` (``x`` a JAX array for the JAX implementations, a tensor otherwise)."""
    if impl in ("jax", "jax-autodiff"):
        jax = _jax()
        from ..jax import lif

        backend = "fused" if impl == "jax" else "sequential"
        f = jax.jit(lambda x: lif(x, decay, threshold, reset="zero", backend=backend))
        return lambda x: f(x).block_until_ready()
    lif = _torch_lif()
    backend = "fused" if impl == "fused" else "sequential"

    def fwd(x):
        with torch.no_grad():
            return lif(x, decay, threshold, reset="zero", surrogate="fast_sigmoid", backend=backend)

    return fwd


def make_train_step(impl: str, decay: float, threshold: float) -> Callable[[Any], Any]:
    """``x -> d sum(spikes) / dx`` of ``impl``."""
    if impl in ("jax", "jax-autodiff"):
        jax = _jax()
        import jax.numpy as jnp

        from ..jax import lif

        backend = "fused" if impl == "jax" else "sequential"
        g = jax.jit(jax.grad(lambda x: jnp.sum(lif(x, decay, threshold, reset="zero", surrogate="fast_sigmoid",
                                                    backend=backend))))
        return lambda x: g(x).block_until_ready()
    lif = _torch_lif()
    backend = "fused" if impl == "fused" else "sequential"

    def step(x):
        x.grad = None
        lif(x, decay, threshold, reset="zero", surrogate="fast_sigmoid", backend=backend).sum().backward()
        return x.grad

    return step


def _inputs(impl: str, x: np.ndarray, grad: bool):
    if impl.startswith("jax"):
        import jax.numpy as jnp

        return jnp.asarray(x)
    t = torch.from_numpy(x)
    return t.requires_grad_() if grad else t


def check_spikes(neurons: int = 20_000, T: int = 64, seed: int = 0) -> dict[str, Any]:
    """The JAX and fused-torch forward of (a) on a slice: spikes equal on every determined step."""
    x = np.random.default_rng(seed).uniform(0, 0.5, (T, neurons)).astype(np.float32)
    sj = np.asarray(make_forward("jax", **PAPER)(_inputs("jax", x, False)))
    st = make_forward("fused", **PAPER)(_inputs("fused", x, False)).numpy()
    # float64 membrane of the same float32 inputs; 3 roundings a step, <= 4 (t + 1) eps32 max|v| in all
    d, th = np.float64(np.float32(PAPER["decay"])), np.float64(np.float32(PAPER["threshold"]))
    p, v_all = np.zeros(neurons), np.empty((T, neurons))
    for t in range(T):
        v = d * p + x[t]
        v_all[t] = v
        p = np.where(v >= th, 0.0, v)
    tol = 4 * np.arange(1, T + 1)[:, None] * np.finfo(np.float32).eps * max(np.abs(v_all).max(), th)
    determined = np.cumsum(np.abs(v_all - th) <= tol, axis=0) == 0
    differ = int(((sj != st) & determined).sum())
    return {"neurons": neurons, "T": T, "determined_fraction": float(determined.mean()),
            "spikes_differ_on_determined_steps": differ, "spikes_differ_anywhere": int((sj != st).sum()),
            "ok": differ == 0}


def _time_case(key, size, label, fn, arg, args, budget) -> dict[str, Any]:
    skip, est = budget.should_skip(key, size)
    if skip:
        budget.record(key, size, est / budget.calls_per_case)
        print(f"{label} skipped: estimated {est:.1f}s > budget {args.budget_s:g}s", flush=True)
        return {"status": "skipped", "estimate_s": est}
    try:
        t0 = time.perf_counter()
        fn(arg)  # JAX compiles here; timed apart so that the warm-up repeats measure the steady state
        first = time.perf_counter() - t0
        timing = C.time_fn(lambda: fn(arg), torch.device("cpu"), warmup=args.warmup, repeats=args.repeats,
                           max_total_s=args.budget_s)
    except Exception as exc:  # one failing implementation must not lose the others
        print(f"{label} ERROR: {type(exc).__name__}: {exc}", flush=True)
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    budget.record(key, size, timing.median_s)
    print(f"{label} {C.fmt_seconds(timing.median_s):>10s}  (IQR {C.fmt_seconds(timing.iqr_s)}, first call "
          f"{C.fmt_seconds(first)})", flush=True)
    return {"status": "ok", "first_call_s": first, **timing.to_dict()}


def _forward_table(args, impls, budget, bandwidth) -> dict[str, Any]:
    impls = [i for i in impls if i != "jax-autodiff"]  # same forward program as "jax"
    fns = {i: make_forward(i, **PAPER) for i in impls}
    rng = np.random.default_rng(args.seed)
    cases = {i: [] for i in impls}
    roof = []
    for T in _flat(args.t_forward):
        x = (rng.random((T, args.neurons), dtype=np.float32) * 0.5)
        nbytes = FWD_PASSES * T * args.neurons * 4
        roof.append({"T": T, "bytes": nbytes, "seconds": C.roofline_seconds(nbytes, bandwidth)})
        for impl in impls:
            arg = _inputs(impl, x, False)
            cases[impl].append({"T": T, **_time_case(f"fwd/{impl}", T, f"forward N={args.neurons} T={T:<4d} "
                                                     f"{impl:<13s}", fns[impl], arg, args, budget)})
            del arg
            gc.collect()
    return {"t_values": _flat(args.t_forward), "cases": cases, "roofline": roof,
            "roofline_formula": f"{FWD_PASSES} * T * N * 4 bytes (read x, write spikes)"}


def _train_table(args, impls, budget, bandwidth) -> dict[str, Any]:
    fns = {i: make_train_step(i, **TRAIN) for i in impls}
    rng = np.random.default_rng(args.seed + 1)
    hidden, t_values = _flat(args.hidden), _flat(args.t_train)
    cases = {i: {str(n): [] for n in hidden} for i in impls}
    roof = {str(n): [] for n in hidden}
    for T in t_values:
        for n in hidden:
            x = (rng.standard_normal((T, args.batch, n)) * 0.5 + 0.15).astype(np.float32)
            nbytes = TRAIN_PASSES * T * args.batch * n * 4
            roof[str(n)].append({"T": T, "bytes": nbytes, "seconds": C.roofline_seconds(nbytes, bandwidth)})
            for impl in impls:
                arg = _inputs(impl, x, True)
                cases[impl][str(n)].append({"T": T, **_time_case(
                    f"train/{impl}/{n}", T, f"train B={args.batch} N={n:<5d} T={T:<5d} {impl:<13s}", fns[impl], arg,
                    args, budget)})
                del arg
                gc.collect()
    return {"hidden": hidden, "t_values": t_values, "cases": cases, "roofline": roof,
            "roofline_formula": f"{TRAIN_PASSES} * T * B * N * 4 bytes (read x, write s; backward: read x, "
                                "read grad s, write grad x)"}


def _profile(args, bandwidth) -> dict[str, Any]:
    jax = _jax()
    import jax.numpy as jnp

    from ..jax import lif

    T = 128
    f = jax.jit(lambda x: lif(x, PAPER["decay"], PAPER["threshold"], reset="zero"))
    per_step = []
    for n in args.profile_neurons:
        x = jnp.asarray(np.random.default_rng(0).random((T, n), dtype=np.float32) * 0.5)
        f(x).block_until_ready()
        t = C.time_fn(lambda: f(x).block_until_ready(), torch.device("cpu"), warmup=1, repeats=args.repeats).median_s
        per_step.append({"N": n, "ns_per_step_neuron": t / (T * n) * 1e9, "seconds": t})
        print(f"profile: JAX forward T={T} N={n:<8d} {t / (T * n) * 1e9:6.2f} ns per (step, neuron)", flush=True)
    n = max(args.profile_neurons)
    x = jnp.asarray(np.random.default_rng(0).random((T, n), dtype=np.float32))
    g = jax.jit(lambda x: x + 1.0)
    g(x).block_until_ready()
    t_pass = C.time_fn(lambda: g(x).block_until_ready(), torch.device("cpu"), warmup=1,
                       repeats=args.repeats).median_s
    hlo = f.lower(x).compile().as_text()
    kernels = _kernels_per_iteration(_while_body(hlo))
    out = {"T": T, "per_step": per_step,
           "elementwise_pass": {"N": n, "seconds": t_pass, "bytes": 2 * T * n * 4,
                                "bandwidth_bytes_per_s": 2 * T * n * 4 / t_pass},
           "fusions_per_scan_iteration": kernels, "copy_bandwidth_bytes_per_s": bandwidth}
    print(f"profile: jitted x + 1 over [{T}, {n}]: {C.fmt_seconds(t_pass)} = "
          f"{out['elementwise_pass']['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s (torch copy into a kept buffer: "
          f"{bandwidth / 1e9:.2f} GB/s); kernels over the state per scan iteration: {kernels}", flush=True)
    return out


def _kernels_per_iteration(body: str | None) -> dict[str, int] | None:
    """The array-sized (non-scalar) fusions and copies in one loop iteration's HLO."""
    if body is None:
        return None
    counts = {"fusions": 0, "copies": 0}
    for line in body.splitlines():
        m = re.match(r"\s*(?:ROOT )?%[\w.\-]+ = (\w+)\[([^\]]*)\]\S* (fusion|copy)\(", line)
        if m and m.group(2):  # a shape with dimensions, not a scalar
            counts["fusions" if m.group(3) == "fusion" else "copies"] += 1
    return counts


def _while_body(hlo: str) -> str | None:
    """The HLO text of the computation that is the body of the (first) while loop."""
    m = re.search(r"while\([^)]*\).*?body=%?([\w.\-]+)", hlo)
    if not m:
        return None
    name = re.escape(m.group(1))
    b = re.search(rf"^%?{name} .*?^}}", hlo, flags=re.S | re.M)
    return b.group(0) if b else None


def run(args) -> dict[str, Any]:
    """Run the benchmark; print the tables, write results.json, table.md and jax.png; return the results."""
    _validate(args)
    jax = _jax()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    impls = [i for i in IMPLS if i in args.impls]
    device = torch.device("cpu")
    machine = C.machine_info(device)
    machine["jax"] = jax.__version__
    machine["jax_device"] = str(jax.devices()[0])
    print(f"bench jax on {machine['cpu_model']} ({os.cpu_count()} CPUs), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), jax {jax.__version__} on {jax.devices()[0]}; {impls}", flush=True)
    warning = C.load_warning(machine)
    if warning:
        print(warning)
    bandwidth = C.measure_copy_bandwidth(device)
    print(f"copy bandwidth (read + write): {bandwidth / 1e9:.2f} GB/s", flush=True)
    check = check_spikes(args.check_neurons)
    print(f"check: JAX and fused torch spikes agree on every determined step ({check['determined_fraction']:.4%} "
          f"of {check['T']} x {check['neurons']}): {'yes' if check['ok'] else 'NO'}", flush=True)
    budget = C.BudgetTracker(args.budget_s, calls_per_case=args.warmup + args.repeats + 1)
    results: dict[str, Any] = {
        "benchmark": "jax",
        "config": {"parts": list(args.parts), "implementations": impls, "neurons": args.neurons,
                   "t_forward": _flat(args.t_forward), "batch": args.batch, "hidden": _flat(args.hidden),
                   "t_train": _flat(args.t_train), "repeats": args.repeats, "warmup": args.warmup,
                   "budget_s": args.budget_s, "threads": args.threads, "seed": args.seed, "dtype": "float32",
                   "forward_constants": PAPER, "train_constants": TRAIN, "reset": "zero (hard reset to 0)",
                   "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "XLA_FLAGS", "OMP_NUM_THREADS")}},
        "machine": machine, "copy_bandwidth_bytes_per_s": bandwidth, "spike_check": check,
    }
    if "forward" in args.parts:
        results["forward"] = _forward_table(args, impls, budget, bandwidth)
    if "train" in args.parts:
        results["train"] = _train_table(args, impls, budget, bandwidth)
    if "profile" in args.parts:
        results["profile"] = _profile(args, bandwidth)
    results["machine"]["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["total_wall_s"] = time.perf_counter() - started
    out = os.fspath(args.out)
    os.makedirs(out, exist_ok=True)
    files = {"json": os.path.join(out, "results.json"), "md": os.path.join(out, "table.md"),
             "png": os.path.join(out, "jax.png")}
    results["files"] = files
    report = format_report(results)
    print()
    print(report)
    with open(files["md"], "w", encoding="utf-8") as fh:
        fh.write(report + "\n")
    _plot(results, files["png"])
    C.write_json_atomic(files["json"], results)
    print(f"\nwrote {files['json']}, {files['md']} and {files['png']}")
    return results


def _median(e):
    return e["median_s"] if e.get("status") == "ok" else None


def _cell(e) -> str:
    if e["status"] == "ok":
        return C.fmt_seconds(e["median_s"])
    return f"skip(~{e['estimate_s']:.0f}s)" if e["status"] == "skipped" else "error"


def _ratio(a, b):
    return a / b if a is not None and b is not None and b > 0 else None


def _md_table(headers, rows) -> str:
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def _rows(cases, roof, impls):
    rows = [[impl] + [_cell(e) for e in cases[impl]] for impl in impls]
    rows.append(["ROOFLINE"] + [C.fmt_seconds(r["seconds"]) for r in roof])
    if "fused" in cases:
        fused = [_median(e) for e in cases["fused"]]
        for impl in impls:
            if impl != "fused":
                rows.append([f"{impl} / fused"] + [C.fmt_ratio(_ratio(_median(e), f)) for e, f in zip(cases[impl], fused)])
        rows.append(["fused / ROOFLINE"] + [C.fmt_ratio(_ratio(f, r["seconds"])) for f, r in zip(fused, roof)])
    if "jax" in cases:
        rows.append(["jax / ROOFLINE"] + [C.fmt_ratio(_ratio(_median(e), r["seconds"]))
                                          for e, r in zip(cases["jax"], roof)])
    return rows


def format_report(results: dict[str, Any]) -> str:
    """Markdown tables: (a) forward, (b) training step, the profile, the check and the machine."""
    cfg, m = results["config"], results["machine"]
    where = (f"{m['cpu_model']}, {m.get('cpus_usable', m['cpu_count'])} CPUs; torch {m['torch']} "
             f"({m['torch_num_threads']} threads), jax {m['jax']}; float32, median of {cfg['repeats']}")
    blocks = []
    if "forward" in results:
        fw = results["forward"]
        impls = list(fw["cases"])
        blocks.append(f"(a) FORWARD, one LIF layer of {cfg['neurons']:,} neurons, k={PAPER['decay']}, "
                      f"V_th={PAPER['threshold']}, V_rest=0 (seconds per call); {where}\n\n"
                      + _md_table(["T"] + fw["t_values"], _rows(fw["cases"], fw["roofline"], impls)))
    if "train" in results:
        tr = results["train"]
        impls = list(tr["cases"])
        for n in tr["hidden"]:
            cases = {i: tr["cases"][i][str(n)] for i in impls}
            blocks.append(f"(b) TRAINING STEP (forward + backward of sum(spikes) w.r.t. x), B={cfg['batch']}, "
                          f"N={n}, decay={TRAIN['decay']}, threshold={TRAIN['threshold']}; {where}\n\n"
                          + _md_table(["T"] + tr["t_values"], _rows(cases, tr["roofline"][str(n)], impls)))
    if "profile" in results:
        p = results["profile"]
        rows = [[e["N"], f"{e['ns_per_step_neuron']:.2f}"] for e in p["per_step"]]
        ew = p["elementwise_pass"]
        blocks.append(f"PROFILE of the JAX forward (T={p['T']}): ns per (step, neuron) vs layer size\n\n"
                      + _md_table(["N", "ns / (step, neuron)"], rows)
                      + f"\n\none jitted elementwise pass x + 1 over [{p['T']}, {ew['N']}]: "
                        f"{C.fmt_seconds(ew['seconds'])} ({ew['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s; torch copy "
                        f"into a kept buffer {p['copy_bandwidth_bytes_per_s'] / 1e9:.2f} GB/s); kernels over the [N] state "
                        f"in one iteration of the forward scan: {p['fusions_per_scan_iteration']}")
    c = results["spike_check"]
    blocks.append(f"CHECK: JAX vs fused torch spikes on {c['T']} x {c['neurons']}: "
                  f"{c['spikes_differ_on_determined_steps']} differ on the {c['determined_fraction']:.4%} determined "
                  f"steps ({c['spikes_differ_anywhere']} anywhere).  ROOFLINE = bytes that must move / copy bandwidth "
                  f"measured in this run ({results['copy_bandwidth_bytes_per_s'] / 1e9:.2f} GB/s read+write).")
    return "\n\n".join(blocks)


def _plot(results, path) -> None:
    parts = [p for p in ("forward", "train") if p in results]
    fig, axes = C.new_figure(ncols=max(1, len(parts)))
    for ax, part in zip(axes[0], parts):
        res = results[part]
        if part == "forward":
            series = {i: res["cases"][i] for i in res["cases"]}
            roof = res["roofline"]
            ax.set(title=f"(a) forward, {results['config']['neurons']:,} neurons", xlabel="T")
        else:
            n = str(res["hidden"][0])
            series = {i: res["cases"][i][n] for i in res["cases"]}
            roof = res["roofline"][n]
            ax.set(title=f"(b) training step, B={results['config']['batch']}, N={n}", xlabel="T")
        for impl, entries in series.items():
            ok = [e for e in entries if e["status"] == "ok"]
            if ok:
                ax.plot([e["T"] for e in ok], [e["median_s"] for e in ok], "-o", markersize=4, label=impl,
                        color=f"C{IMPLS.index(impl)}")  # one colour per implementation in both panels
        ax.plot([r["T"] for r in roof], [r["seconds"] for r in roof], ":", color="k", label="roofline")
        ax.set(xscale="log", yscale="log", ylabel="time [s] (median)")
        ax.legend(fontsize=7)
    m = results["machine"]
    fig.suptitle(f"bench jax — {m['cpu_model']}, torch {m['torch']}, jax {m['jax']}", fontsize=9)
    C.save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return C.run_main("jax", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
