"""Training step eager vs torch.compile(fullgraph=True): the digits network and FastSNN's F-MNIST networks.

One step = forward, cross-entropy on the network's readout, backward, Adam step, on one batch of
random input spikes with the data set's shape and a typical density (the data loaders are not
part of the step).  Networks: ``digits`` (the main job: SPSN-SB, 3 x 128 hidden, LI readout,
T = 64 over the 64 digit pixels), ``digits-lif`` (the same with LIF neurons), and the FastSNN
F-MNIST presets ``fastsnn-fmnist-lif`` (LIF + max-membrane readout) and ``fastsnn-fmnist``
(single-spike LIF), T = 784, 784 -> 200 -> 10, batch 128.  Each compiled model is first
compiled with ``fullgraph=True``; where that fails (an op the compiler cannot trace) it is
compiled with graph breaks and the table says so.  The compile time is reported apart from the
step times.  Compiled and eager steps start from the same weights; the first step's losses are
printed as a check (equal up to the float rounding of the reordered Linear layers).
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from typing import Any

import torch

from ._common import (check_run_options, format_table, fmt_ratio, fmt_seconds, machine_info, resolve_device,
                      run_main, time_fn, write_json_atomic)

# name -> (preset or None for the default config, config overrides, n_in, n_out, input density)
NETWORKS = {
    "digits": (None, {}, 64, 10, 0.2),
    "digits-lif": (None, {"neuron": "lif"}, 64, 10, 0.2),
    "fastsnn-fmnist-lif": ("fastsnn-fmnist-lif", {}, 784, 10, 0.6 / 784),
    "fastsnn-fmnist": ("fastsnn-fmnist", {}, 784, 10, 0.6 / 784),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS),
                        help="networks to time")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's)")
    parser.add_argument("--steps", type=int, default=None, help="time steps T (default: the data set's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps, median reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_results/compile", help="output folder for results.json")


def _setup(name: str, args, device):
    from ..train.loop import build_model
    from ..train.presets import preset_config

    preset, overrides, n_in, n_out, density = NETWORKS[name]
    cfg = preset_config(preset, overrides).resolved()
    T = args.steps or cfg.num_steps
    B = args.batch or cfg.batch_size
    torch.manual_seed(args.seed)
    model = build_model(cfg, n_in, n_out).to(device)
    g = torch.Generator().manual_seed(args.seed)
    x = (torch.rand(T, B, n_in, generator=g) < density).float().to(device)
    y = torch.randint(0, n_out, (B,), generator=g).to(device)
    return cfg, model, x, y


def _step_fn(model, cfg, x, y, lr):
    from ..train.losses import readout_cross_entropy

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        loss = readout_cross_entropy(model(x), y, cfg.readout)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))

    return step, losses


def run(args: argparse.Namespace) -> dict[str, Any]:
    check_run_options(args, ("repeats",))
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, results = [], []
    for name in args.networks:
        cfg, model, x, y = _setup(name, args, device)
        initial = copy.deepcopy(model.state_dict())
        eager_model = copy.deepcopy(model)
        step, eager_losses = _step_fn(eager_model, cfg, x, y, cfg.lr)
        eager = time_fn(step, device, warmup=args.warmup, repeats=args.repeats)
        torch._dynamo.reset()
        fullgraph = True
        compiled = torch.compile(model, fullgraph=True)
        cstep, compiled_losses = _step_fn(compiled, cfg, x, y, cfg.lr)
        t0 = time.perf_counter()
        try:
            cstep()
        except Exception as e:  # noqa: BLE001 - any tracing failure means "not fullgraph"
            fullgraph = False
            note = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            torch._dynamo.reset()
            model.load_state_dict(initial)
            compiled = torch.compile(model)
            cstep, compiled_losses = _step_fn(compiled, cfg, x, y, cfg.lr)
            cstep()
        else:
            note = ""
        compile_s = time.perf_counter() - t0
        comp = time_fn(cstep, device, warmup=args.warmup, repeats=args.repeats)
        ratio = comp.median_s / eager.median_s
        rows.append([name, f"{x.shape[0]}x{x.shape[1]}", fmt_seconds(eager.median_s), fmt_seconds(comp.median_s),
                     fmt_ratio(ratio), "yes" if fullgraph else "no", f"{compile_s:.1f} s",
                     f"{eager_losses[0]:.6f} / {compiled_losses[0]:.6f}"])
        results.append(dict(network=name, T=x.shape[0], batch=x.shape[1], eager_s=eager.median_s,
                            compiled_s=comp.median_s, compiled_over_eager=ratio, fullgraph=fullgraph,
                            compile_s=compile_s, first_loss_eager=eager_losses[0],
                            first_loss_compiled=compiled_losses[0], note=note,
                            eager_times_s=eager.times_s, compiled_times_s=comp.times_s))
    print(format_table(["network", "T x B", "eager step", "compiled step", "compiled/eager", "fullgraph",
                        "compile", "first loss eager / compiled"], rows))
    for r in results:
        if r["note"]:
            print(f"{r['network']}: fullgraph=True failed ({r['note']}); timed with graph breaks")
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")} | {"device": str(device)}
    out = dict(benchmark="compile-step", config=config, machine=machine_info(device),
               results=results)
    os.makedirs(args.out, exist_ok=True)
    write_json_atomic(os.path.join(args.out, "results.json"), out)
    print(f"wrote {os.path.join(args.out, 'results.json')}")
    return out


if __name__ == "__main__":
    run_main("compile", __doc__, add_arguments, run)
