"""Online inference: microseconds per ``module.step(x_t, state)`` for every streaming neuron module.

One step = one call of ``step`` on a ``[B, N]`` input (default N = 1000 neurons, B = 1 and 32)
under ``torch.no_grad()``, the state of the previous step passed in -- what a real-time loop
does.  ``sequence-T1`` times the sequence call on a one-step chunk (``module(x_t[None], state,
return_state=True)``, the route every module's step would take without its own step code) for
comparison.  Each figure is the median over ``--repeats`` runs of ``--steps`` consecutive steps
(per-step mean inside a run), with torch and the kernels on ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ._common import format_table, load_warning, machine_info, positive_ints, run_main, write_json_atomic

MODULES = ("LIF", "PLIF", "RLIF", "LI", "SPSN", "PSU", "SingleSpikeLIF", "MaxMembraneReadout")


def _build(name: str, n: int):
    from .. import nn as snn

    return {"LIF": lambda: snn.LIF(n), "PLIF": lambda: snn.PLIF(n), "RLIF": lambda: snn.RLIF(n),
            "LI": lambda: snn.LI(n), "SPSN": lambda: snn.SPSN(n), "PSU": lambda: snn.PSU(),
            "SingleSpikeLIF": lambda: snn.SingleSpikeLIF(n),
            "MaxMembraneReadout": lambda: snn.MaxMembraneReadout(n)}[name]()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modules", nargs="+", choices=MODULES, default=list(MODULES), help="modules to time")
    parser.add_argument("--neurons", type=int, default=1000, help="neurons per layer N")
    parser.add_argument("--batch-sizes", type=positive_ints, default=[1, 32], help="batch sizes B, e.g. 1,32")
    parser.add_argument("--steps", type=int, default=500, help="consecutive steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (the kernels follow)")
    parser.add_argument("--out", default="bench_results/step_latency", help="output folder for results.json")


def _time_steps(fn, xs, repeats: int) -> float:
    """Median over ``repeats`` runs of the mean seconds per call of ``fn`` over the steps ``xs``."""
    state = None
    for x_t in xs[:20]:  # warm-up: compilation, caches, allocator
        _, state = fn(x_t, state)
    runs = []
    for _ in range(repeats):
        state = None
        start = time.perf_counter()
        for x_t in xs:
            _, state = fn(x_t, state)
        runs.append((time.perf_counter() - start) / len(xs))
    return statistics.median(runs)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    info = machine_info(torch.device("cpu"))
    warning = load_warning(info)
    rows, results = [], []
    with torch.no_grad():
        for name in args.modules:
            m = _build(name, args.neurons)

            def sequence(x_t, state, m=m):
                out, state = m(x_t.unsqueeze(0), state, return_state=True)
                return out, state

            for B in args.batch_sizes:
                xs = list(torch.rand(args.steps, B, args.neurons, generator=torch.Generator().manual_seed(0)).unbind(0))
                us_step = 1e6 * _time_steps(m.step, xs, args.repeats)
                us_seq = 1e6 * _time_steps(sequence, xs, args.repeats)
                rows.append([name, B, f"{us_step:.1f}", f"{us_seq:.1f}", f"{us_step / (B * args.neurons) * 1e3:.2f}"])
                results.append({"module": name, "batch": B, "neurons": args.neurons, "us_per_step": us_step,
                                "us_per_sequence_call_T1": us_seq})
    print(f"step latency, N = {args.neurons} neurons, {args.threads} thread(s), torch.no_grad(), median of "
          f"{args.repeats} runs of {args.steps} steps")
    print(format_table(["module", "B", "step (us)", "sequence-T1 (us)", "ns / neuron-step"], rows))
    if warning:
        print(warning)
    out = {"machine": info, "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
           "results": results}
    import os

    os.makedirs(args.out, exist_ok=True)
    write_json_atomic(os.path.join(args.out, "results.json"), out)
    return out


def main(argv=None):
    return run_main("step-latency", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
