"""Training-step time of a time-split layer vs the number of ranks, measured and modelled
(temporal-parallelization paper ``temporal_parallelization_lif_cuda_jax``, §3.2, eq. 6-7).

One layer, ``Linear(n_in, F) -> neuron``, run by :class:`spikescan.distributed.TimeSplit` on k
gloo processes of this machine (k in ``--ranks``), each holding T/k steps; one training step =
forward + backward of ``sum(out * w)`` plus the parameter-gradient all_reduce.  Neurons:

* ``spsn`` -- SPSN-SB: both leaky integrations by the exact split scan (one ``all_gather``
  forward and one backward per integration), firing local;
* ``lif`` -- exact LIF with reset by the ``lif_split`` pipeline with ``--micro-batches`` M.

Measured in the same run, per k and T (median over ``--repeats``; every time is the maximum
over the ranks, each repeat starting at a barrier):

* ``step``: the whole time-split training step, ``T_m(k)``;
* ``t(k)``: compute of one segment alone -- the same Linear + neuron forward + backward on the
  rank's T/k steps with no communication (all ranks at once, so CPU contention is included);
* ``C(k)``: communication alone -- the step's collectives (``spsn``: 4 ``all_gather`` of the
  boundary state and the gradient all_reduce) or point-to-point hand-offs (``lif``: one state
  per micro-batch forward and one state gradient backward per neighbour, then the all_reduce)
  replayed on the same tensor sizes without compute.

Model (paper eq. 6-7): with k devices each needing ``t(k)`` for its segment and ``T_c`` per
hand-off, ``T_s = k t(k)`` (one device does all k segments) and
``T_m(k) = (k - 1) T_c + t(k)``, so the speed-up is

    mu = T_s / T_m(k) = k / ((k - 1) T_c / t(k) + 1).

Here ``(k - 1) T_c`` is the measured ``C(k)``.  The exact scan has no serial dependency between
segments, so eq. 7 applies as is.  The LIF pipeline also has a fill: rank j starts part m only
after rank j-1 finished it, so with M micro-batches ``T_m(k) = t(k) (1 + (k - 1)/M) + C(k)``
(``model_pipe``; M -> infinity gives eq. 7).  The measured speed-up is
``step(1 rank) / step(k ranks)``; ``vs plain`` divides the plain (unsplit) network's step
``t(1)`` instead, which also charges the split ops' own overhead (extra passes over memory in
the split scan's backward, the pipeline's per-part graphs).

Expectations on a small CPU: k processes share the cores; once k exceeds the free cores,
t(k) stops falling (``t(k) * k`` grows), and gloo's collectives cost ~0.1-1 ms each, so
splitting pays only when one segment's compute is long against that (large T * B * F) and
the cores are free.  Run: ``spikescan bench scaling`` or ``python -m spikescan.bench.scaling``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

from . import _common as C

DEFAULT_T = (256, 1024, 4096)
DEFAULT_RANKS = (1, 2, 4)
LAYERS = ("spsn", "lif")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``spikescan bench scaling``."""
    parser.add_argument("--ranks", type=C.positive_ints, default=list(DEFAULT_RANKS),
                        help="numbers of processes, comma-separated (default 1,2,4)")
    parser.add_argument("--t-values", type=C.positive_ints, default=list(DEFAULT_T),
                        help="sequence lengths, comma-separated (default 256,1024,4096)")
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=LAYERS, help="neurons (default both)")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--in-features", type=int, default=64, help="Linear input features (default 64)")
    parser.add_argument("--hidden", type=int, default=128, help="neurons in the layer (default 128)")
    parser.add_argument("--micro-batches", type=int, default=4, help="LIF pipeline micro-batches (default 4)")
    parser.add_argument("--backend", default="auto", help="local backend of the scans and the LIF (default auto)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case, median reported (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank (default 1)")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="limit for each k-rank run (default 600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("bench_results", "scaling"),
                        help="output folder for results.json and scaling.png (default bench_results/scaling)")


def _validate(args) -> None:
    for name in ("batch", "in_features", "hidden", "repeats", "micro_batches", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if args.micro_batches > args.batch:
        raise ValueError(f"--micro-batches ({args.micro_batches}) cannot exceed --batch ({args.batch})")
    too_short = [(T, k) for T in args.t_values for k in args.ranks if k > T]
    if too_short:
        raise ValueError(f"every rank needs at least one step: T={too_short[0][0]} < ranks={too_short[0][1]}")
    if not args.timeout_s > 0:
        raise ValueError(f"--timeout-s must be > 0, got {args.timeout_s}")


# --------------------------------------------------------------------------------------------
# the worker (runs on every rank)
# --------------------------------------------------------------------------------------------


def _build(layer: str, cfg: dict):
    from torch import nn

    from spikescan.nn import LIF, SPSN

    torch.manual_seed(cfg["seed"])
    if layer == "spsn":
        neuron = SPSN(cfg["hidden"], backend=cfg["backend"])
    else:
        # the settings of the recorded runs (a synaptic stage split over ranks too), not the library defaults
        neuron = LIF(cfg["hidden"], tau_syn=0.02, threshold=0.5, input_scale="one_minus_decay", detach_reset=True,
                     surrogate="fast_sigmoid(100)", backend=cfg["backend"])
    return nn.Sequential(nn.Linear(cfg["in_features"], cfg["hidden"]), neuron)


def _max_over_ranks(seconds: float) -> float:
    import torch.distributed as dist

    t = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def _timed(fn, warmup: int, repeats: int) -> list[float]:
    import torch.distributed as dist

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        times.append(_max_over_ranks(time.perf_counter() - t0))
    return times


def _comm_replay(layer: str, rank: int, world: int, cfg: dict, n_params: int):
    """The step's communication alone, on the same tensor sizes (see the module docstring)."""
    import torch.distributed as dist

    B, F, M = cfg["batch"], cfg["hidden"], cfg["micro_batches"]
    grads = torch.zeros(n_params)
    if layer == "spsn":
        boundary = torch.zeros(2, B, F)
        out = [torch.empty_like(boundary) for _ in range(world)]

        def comm():
            for _ in range(4):  # 2 integrations x (forward, backward)
                dist.all_gather(out, boundary)
            dist.all_reduce(grads)
        return comm

    sizes = [len(c) for c in torch.arange(B).tensor_split(M) if len(c)]
    states = [torch.zeros(n, F) for n in sizes]

    def comm():
        for direction, (src, dst) in enumerate(((rank - 1, rank + 1), (rank + 1, rank - 1))):
            works = []
            for m, st in enumerate(states):
                if 0 <= src < world:
                    dist.recv(st, src=src, tag=100 * direction + m)
                if 0 <= dst < world:
                    works.append(dist.isend(st, dst=dst, tag=100 * direction + m))
            for w in works:
                w.wait()
        dist.all_reduce(grads)
    return comm


def _worker(rank: int, world: int, cfg: dict) -> dict:
    from spikescan.distributed import TimeSplit, local_segment

    results: dict[str, list[dict[str, Any]]] = {layer: [] for layer in cfg["layers"]}
    for layer in cfg["layers"]:
        for T in cfg["t_values"]:
            gen = torch.Generator().manual_seed(cfg["seed"] + T)
            x = (torch.rand(T, cfg["batch"], cfg["in_features"], generator=gen) < 0.2).float()
            w = torch.randn(T, cfg["batch"], cfg["hidden"], generator=gen)
            x_l, w_l = local_segment(x), local_segment(w)
            net = _build(layer, cfg)
            split = TimeSplit(net, micro_batches=cfg["micro_batches"] if layer == "lif" else 1)
            params = list(net.parameters())

            def step():
                for p in params:
                    p.grad = None
                (split(x_l) * w_l).sum().backward()

            def compute():  # the same local work without any exchange
                for p in params:
                    p.grad = None
                (net(x_l) * w_l).sum().backward()

            comm = _comm_replay(layer, rank, world, cfg, sum(p.numel() for p in params))
            times = {"step": _timed(step, cfg["warmup"], cfg["repeats"]),
                     "compute": _timed(compute, cfg["warmup"], cfg["repeats"]),
                     "comm": _timed(comm, cfg["warmup"], cfg["repeats"])}
            results[layer].append({"T": T, "segment": int(x_l.shape[0]),
                                   **{f"{k}_s": statistics.median(v) for k, v in times.items()},
                                   "times_s": times})
    return results


# --------------------------------------------------------------------------------------------
# running and reporting
# --------------------------------------------------------------------------------------------


def model_speedup(k: int, t_k: float, comm: float, micro_batches: int | None = None) -> float:
    """Paper eq. 7, ``k t(k) / (t(k) + (k-1) T_c)`` with ``(k-1) T_c = comm``; with ``micro_batches``
    the pipeline fill ``t(k) (k-1)/M`` is added to the denominator."""
    fill = 0.0 if micro_batches is None else t_k * (k - 1) / micro_batches
    return k * t_k / (t_k + fill + comm)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; print the table, write ``results.json`` and ``scaling.png``; return the results."""
    from spikescan.distributed import spawn

    _validate(args)
    cfg = {"t_values": sorted(set(args.t_values)), "layers": list(dict.fromkeys(args.layers)),
           "batch": args.batch, "in_features": args.in_features, "hidden": args.hidden,
           "micro_batches": args.micro_batches, "backend": args.backend, "repeats": args.repeats,
           "warmup": args.warmup, "seed": args.seed}
    ranks = sorted(set(args.ranks))
    info = C.machine_info(torch.device("cpu"))
    print(f"scaling bench: {C.cpu_model()}, {info.get('cpus_usable', info['cpu_count'])} usable CPUs, "
          f"{args.threads} thread(s) per rank; ranks {ranks}; T = {cfg['t_values']}; layers {cfg['layers']}",
          flush=True)
    warning = C.load_warning(info)
    if warning:
        print(warning, flush=True)
    started = time.perf_counter()
    per_k: dict[int, dict] = {}
    for k in ranks:
        t0 = time.perf_counter()
        per_k[k] = spawn(_worker, k, cfg, timeout=args.timeout_s, pg_timeout_s=max(60.0, args.timeout_s / 4),
                         threads=args.threads)[0]
        print(f"  {k} rank(s) done in {time.perf_counter() - t0:.1f}s", flush=True)

    rows = []
    for layer in cfg["layers"]:
        for i, T in enumerate(cfg["t_values"]):
            base = per_k[ranks[0]][layer][i]["step_s"] if ranks[0] == 1 else None
            plain = per_k[ranks[0]][layer][i]["compute_s"] if ranks[0] == 1 else None
            for k in ranks:
                e = per_k[k][layer][i]
                M = cfg["micro_batches"] if layer == "lif" else None
                row = {"layer": layer, "T": T, "ranks": k, "segment": e["segment"], "step_s": e["step_s"],
                       "compute_s": e["compute_s"], "comm_s": e["comm_s"],
                       "tc_s": e["comm_s"] / (k - 1) if k > 1 else None,
                       "measured_speedup": base / e["step_s"] if base else None,
                       "speedup_vs_plain": plain / e["step_s"] if plain else None,
                       "model_eq7": model_speedup(k, e["compute_s"], e["comm_s"] if k > 1 else 0.0),
                       "model_pipe": model_speedup(k, e["compute_s"], e["comm_s"] if k > 1 else 0.0, M)
                       if M else None,
                       "k_times_t_k_s": k * e["compute_s"], "times_s": e["times_s"]}
                rows.append(row)
    results = {
        "benchmark": "scaling",
        "config": {**cfg, "ranks": ranks, "threads_per_rank": args.threads,
                   "step": "TimeSplit(Linear -> neuron) forward + backward of sum(out * w) + gradient all_reduce",
                   "model": "paper eq. 7: mu = k t(k) / (t(k) + (k-1) Tc), (k-1) Tc = measured comm; "
                            "LIF pipeline adds the fill t(k)(k-1)/M"},
        "machine": info,
        "rows": rows,
    }
    results["machine"]["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["total_wall_s"] = time.perf_counter() - started
    out = os.fspath(args.out)
    results["files"] = {"json": os.path.join(out, "results.json"), "png": os.path.join(out, "scaling.png")}
    print()
    print(format_report(results))
    _plot(results, results["files"]["png"])
    C.write_json_atomic(results["files"]["json"], results)
    print(f"\nwrote {results['files']['json']} and {results['files']['png']}")
    return results


def format_report(results: dict[str, Any]) -> str:
    cfg = results["config"]
    headers = ["layer", "T", "ranks", "T/rank", "step", "t(k)", "C(k)", "k*t(k)", "measured", "vs plain", "eq.7",
               "eq.7+fill"]
    rows = [[r["layer"], r["T"], r["ranks"], r["segment"], C.fmt_seconds(r["step_s"]), C.fmt_seconds(r["compute_s"]),
             C.fmt_seconds(r["comm_s"]) if r["ranks"] > 1 else "-", C.fmt_seconds(r["k_times_t_k_s"]),
             C.fmt_ratio(r["measured_speedup"]), C.fmt_ratio(r["speedup_vs_plain"]), C.fmt_ratio(r["model_eq7"]),
             C.fmt_ratio(r["model_pipe"]) if r["model_pipe"] is not None else "-"] for r in results["rows"]]
    return (f"time-split training step, Linear({cfg['in_features']}->{cfg['hidden']}) + neuron, B={cfg['batch']}, "
            f"LIF micro-batches {cfg['micro_batches']}, {cfg['threads_per_rank']} thread(s)/rank, median of "
            f"{cfg['repeats']} (max over ranks)\n"
            "step = T_m(k); t(k) = one segment's compute alone; C(k) = the step's communication alone; "
            "measured = step(1 rank) / step(k); vs plain = the plain network's step t(1) / step(k)\n"
            + C.format_table(headers, rows))


def _plot(results: dict[str, Any], path: str) -> None:
    from matplotlib.ticker import NullFormatter

    cfg = results["config"]
    layers = cfg["layers"]
    fig, axes = C.new_figure(ncols=len(layers), nrows=2)
    colors = ["C0", "C1", "C2", "C3", "C4", "C5"]
    for j, layer in enumerate(layers):
        ax_t, ax_s = axes[0][j], axes[1][j]
        for i, T in enumerate(cfg["t_values"]):
            rs = [r for r in results["rows"] if r["layer"] == layer and r["T"] == T]
            ks = [r["ranks"] for r in rs]
            c = colors[i % len(colors)]
            ax_t.plot(ks, [r["step_s"] for r in rs], marker="o", color=c, label=f"T={T} step")
            ax_t.plot(ks, [r["compute_s"] for r in rs], marker="x", linestyle=":", color=c, label=f"T={T} t(k)")
            if any(r["measured_speedup"] is not None for r in rs):
                ax_s.plot(ks, [r["measured_speedup"] for r in rs], marker="o", color=c, label=f"T={T} measured")
            model_key = "model_pipe" if layer == "lif" else "model_eq7"
            ax_s.plot(ks, [r[model_key] for r in rs], marker="s", linestyle="--", color=c,
                      label=f"T={T} model" + (" (eq.7+fill)" if layer == "lif" else " (eq.7)"))
        ax_t.set(xscale="log", yscale="log", xlabel="ranks k", ylabel="seconds", title=f"{layer}: step and t(k)")
        ax_t.set_xticks(cfg["ranks"], [str(k) for k in cfg["ranks"]])
        ax_s.plot(cfg["ranks"], cfg["ranks"], color="gray", linewidth=0.8, label="ideal k")
        ax_s.axhline(1.0, color="gray", linewidth=0.5)
        ax_s.set(xscale="log", yscale="log", xlabel="ranks k", ylabel="speed-up over 1 rank",
                 title=f"{layer}: measured vs modelled")
        ax_s.set_xticks(cfg["ranks"], [str(k) for k in cfg["ranks"]])
        for ax in (ax_t, ax_s):
            ax.xaxis.set_minor_formatter(NullFormatter())  # only the rank counts label the log axis
            ax.legend(fontsize=6)
    m = results["machine"]
    fig.suptitle(f"time-split scaling (paper eq. 6-7) — {m['cpu_model']}, {m.get('cpus_usable', m['cpu_count'])} CPUs, "
                 f"torch {m['torch']}", fontsize=9)
    C.save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return C.run_main("scaling", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
