"""Command line: ``spikescan train | bench | info``."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module under spikescan.bench exposing add_arguments(parser) and run(args)
BENCHMARKS = {
    "speed-vs-t": "speed_vs_t",
    "fastsnn-grid": "fastsnn_grid",
    "psu": "psu",
    "lif": "lif",
}


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a network (default: SPSN-SB on the embedded digits)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from .train.loop import TrainConfig

    d = TrainConfig()
    p.add_argument("--neuron", default=d.neuron, choices=["spsn-sb", "spsn-gs", "lif", "relu"])
    p.add_argument("--dataset", default=d.dataset, choices=["digits"])
    p.add_argument("--encoding", default=d.encoding, choices=["latency", "rate"])
    p.add_argument("--num-steps", type=int, default=d.num_steps, help="time steps T per sample")
    p.add_argument("--hidden", type=int, nargs="+", default=d.hidden, help="hidden layer sizes")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--optimizer", default=d.optimizer, choices=["adam", "adamw", "adamax"])
    p.add_argument("--schedule", default=d.schedule, choices=["none", "cosine", "step"])
    p.add_argument("--readout", default=d.readout, choices=["mean", "max", "last"])
    p.add_argument("--theta-reg", type=float, default=None, help="spike-rate regulariser threshold (SPSN eq. 21)")
    p.add_argument("--backend", default=d.backend, help="leaky-integration backend")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=d.threads, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<neuron>-s<seed>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _run_train(args) -> int:
    from .train.loop import TrainConfig, train

    cfg = TrainConfig(dataset=args.dataset, encoding=args.encoding, num_steps=args.num_steps,
                      neuron=args.neuron, hidden=list(args.hidden), epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                      schedule=args.schedule, readout=args.readout, theta_reg=args.theta_reg,
                      backend=args.backend, seed=args.seed, device=args.device, out_dir=args.out,
                      threads=args.threads or None)
    if args.resume and not args.out:
        raise SystemExit("--resume needs --out RUN_DIR")
    train(cfg, resume=args.resume, progress=not args.no_progress)
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="speed benchmarks reproducing the papers' figures")
    bsub = p.add_subparsers(dest="bench", required=True)
    for name, module in BENCHMARKS.items():
        mod = importlib.import_module(f"spikescan.bench.{module}")
        bp = bsub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0],
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(bp)
        bp.set_defaults(_bench_module=mod)


def _run_info(_args) -> int:
    import platform

    import torch

    import spikescan

    print(f"spikescan {spikescan.__version__}")
    print(f"python {platform.python_version()}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    print(f"cuda available: {torch.cuda.is_available()}")
    for name in ("numba", "triton", "snntorch", "spikingjelly", "norse", "nir", "tonic"):
        try:
            mod = importlib.import_module(name)
            print(f"{name}: {getattr(mod, '__version__', 'installed')}")
        except Exception:
            print(f"{name}: not installed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikescan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_bench(sub)
    sub.add_parser("info", help="versions and optional extras found")
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        return _run_train(args)
    if args.command == "bench":
        args._bench_module.run(args)
        return 0
    return _run_info(args)


if __name__ == "__main__":
    raise SystemExit(main())
