"""Event-driven vs dense input layer (``W s[t] + b``, forward + weight gradient) over spike density.

For each density the same random 0/1 input ``[T, B, C]`` runs through ``nn.Linear`` (dense
matmul forward, matmul weight gradient) and :func:`spikescan.ops.events.event_linear` with
each backend, twice: from ready :class:`~spikescan.ops.events.SpikeEvents` (what an event data
set delivers) and from the dense tensor (the conversion is timed too: what
:class:`~spikescan.nn.EventLinear` does with a dense input).  The ratio dense / events is what
:data:`spikescan.nn.linear.EVENT_DENSITY_THRESHOLD` is read from.  Defaults: the FastSNN
F-MNIST input layer (T = 784, B = 128, C = 784, O = 200).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

from ..ops.events import SpikeEvents, event_linear
from . import _common as C

DEFAULT_DENSITIES = (0.001, 0.01, 0.1, 0.5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--densities", type=float, nargs="+", default=list(DEFAULT_DENSITIES),
                        help="fractions of nonzero input entries (default 0.001 0.01 0.1 0.5)")
    parser.add_argument("--steps", type=int, default=784, help="T (default 784)")
    parser.add_argument("--batch", type=int, default=128, help="B (default 128)")
    parser.add_argument("--in-features", type=int, default=784, help="C (default 784)")
    parser.add_argument("--out-features", type=int, default=200, help="O (default 200)")
    parser.add_argument("--backends", nargs="+", default=["numba", "sparse"], choices=["numba", "sparse"])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case, median reported (default 5)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("bench_results", "event_linear"),
                        help="folder for results.json and event_linear.png")


def _step_dense(x: torch.Tensor, lin: torch.nn.Linear):
    def step():
        lin.weight.grad = lin.bias.grad = None
        lin(x).sum().backward()
    return step


def _step_events(make, lin: torch.nn.Linear, backend: str):
    def step():
        lin.weight.grad = lin.bias.grad = None
        event_linear(make(), lin.weight, lin.bias, backend=backend).sum().backward()
    return step


def run(args: argparse.Namespace) -> dict[str, Any]:
    for name in ("steps", "batch", "in_features", "out_features", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if any(not 0 < d <= 1 for d in args.densities):
        raise ValueError("--densities must lie in (0, 1]")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    info = C.machine_info(device)
    print(f"event-linear bench on {info['cpu_model']}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"T={args.steps} B={args.batch} C={args.in_features} O={args.out_features}", flush=True)
    if (warn := C.load_warning(info)):
        print(warn)
    torch.manual_seed(args.seed)
    lin = torch.nn.Linear(args.in_features, args.out_features)
    shape = (args.steps, args.batch, args.in_features)
    rows, started = [], time.perf_counter()
    for density in sorted(args.densities):
        g = torch.Generator().manual_seed(args.seed)
        x = (torch.rand(shape, generator=g) < density).float()
        events = SpikeEvents.from_dense(x)
        case: dict[str, Any] = {"density": density, "events": events.num_events}
        case["dense_s"] = C.time_fn(_step_dense(x, lin), device, warmup=args.warmup, repeats=args.repeats).median_s
        for backend in args.backends:
            case[f"{backend}_s"] = C.time_fn(_step_events(lambda: events, lin, backend), device,
                                             warmup=args.warmup, repeats=args.repeats).median_s
            case[f"{backend}_from_dense_s"] = C.time_fn(
                _step_events(lambda: SpikeEvents.from_dense(x), lin, backend), device,
                warmup=args.warmup, repeats=args.repeats).median_s
        rows.append(case)
        del x, events
    headers = ["density", "events", "dense"] + [f"{b}{s}" for b in args.backends for s in ("", " (from dense)")] + \
        [f"dense/{b}" for b in args.backends]
    table = []
    for r in rows:
        line = [f"{100 * r['density']:g} %", r["events"], C.fmt_seconds(r["dense_s"])]
        line += [C.fmt_seconds(r[f"{b}{s}"]) for b in args.backends for s in ("_s", "_from_dense_s")]
        line += [C.fmt_ratio(r["dense_s"] / r[f"{b}_s"]) for b in args.backends]
        table.append(line)
    print(C.format_table(headers, table))
    result = {"benchmark": "event-linear", "machine": info, "shape": {"T": args.steps, "B": args.batch,
              "C": args.in_features, "O": args.out_features}, "cases": rows,
              "seconds": time.perf_counter() - started,
              "what": "one step: forward + weight/bias gradient of W s[t] + b (sum loss)"}
    os.makedirs(args.out, exist_ok=True)
    C.write_json_atomic(os.path.join(args.out, "results.json"), result)
    fig, axes = C.new_figure()
    ax = axes[0][0]
    dens = [100 * r["density"] for r in rows]
    ax.loglog(dens, [r["dense_s"] * 1e3 for r in rows], "o-", label="nn.Linear (dense)")
    for b in args.backends:
        ax.loglog(dens, [r[f"{b}_s"] * 1e3 for r in rows], "s-", label=f"event_linear {b}")
        ax.loglog(dens, [r[f"{b}_from_dense_s"] * 1e3 for r in rows], "^--", label=f"event_linear {b} from dense")
    ax.set_xlabel("input density (% nonzero)")
    ax.set_ylabel("ms per step (fwd + weight grad)")
    ax.set_title(f"input layer T={args.steps} B={args.batch} {args.in_features}->{args.out_features}")
    ax.legend(fontsize=8)
    C.save_figure(fig, os.path.join(args.out, "event_linear.png"))
    print(f"-> {os.path.join(args.out, 'results.json')}, event_linear.png")
    return result


if __name__ == "__main__":  # pragma: no cover
    C.run_main("event-linear", __doc__, add_arguments, run)
