"""Command line: ``spikescan train | presets | eval | compare | bench | info``."""

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
    "scaling": "scaling",
    "event-linear": "event_linear",
    "train-step": "train_step",
    "compile": "compile_step",
    "step-latency": "step_latency",
    "jax": "jax_lif",
}


def _none_or_float(text: str):
    return None if text.lower() == "none" else float(text)


def _backend_help() -> str:
    """``kind: backends`` of every neuron kind, kinds with the same backends grouped."""
    from .train.models import NEURON_BACKENDS

    groups: dict[tuple, list[str]] = {}
    for kind, names in NEURON_BACKENDS.items():
        groups.setdefault(tuple(names), []).append(kind)
    return "; ".join(f"{'/'.join(kinds)}: {' '.join(names)}" for names, kinds in groups.items())


# (flag, TrainConfig field, argparse keywords); flags not given on the command line are absent
# from the namespace (default SUPPRESS), so only explicit flags override a preset.
def _train_flags():
    from .data.registry import DATASETS
    from .train.losses import READOUTS
    from .train.models import NEURONS

    encodings = sorted({e for s in DATASETS.values() for e in s.encodings})
    return [
        ("--dataset", "dataset", dict(choices=list(DATASETS))),
        ("--data-dir", "data_dir", dict(help="folder holding the data set's files")),
        ("--encoding", "encoding", dict(choices=encodings, help="input code (default: the data set's)")),
        ("--num-steps", "num_steps", dict(type=int, help="time steps T per sample (default: the data set's)")),
        ("--dt", "dt", dict(type=float, help="step in seconds (default: the data set's, 1 ms)")),
        ("--neuron", "neuron", dict(choices=list(NEURONS))),
        ("--hidden", "hidden", dict(type=int, nargs="+", help="hidden layer sizes")),
        ("--tau-syn", "tau_syn", dict(type=_none_or_float, help="synaptic time constant in s ('none': no current stage)")),
        ("--tau-mem", "tau_mem", dict(type=float, help="membrane time constant in s")),
        ("--readout", "readout", dict(choices=list(READOUTS))),
        ("--dropout", "dropout", dict(type=float)),
        ("--epochs", "epochs", dict(type=int)),
        ("--batch-size", "batch_size", dict(type=int)),
        ("--eval-batch-size", "eval_batch_size", dict(type=int)),
        ("--lr", "lr", dict(type=float)),
        ("--weight-decay", "weight_decay", dict(type=float)),
        ("--optimizer", "optimizer", dict(choices=["adam", "adamw", "adamax"])),
        ("--schedule", "schedule", dict(choices=["none", "cosine", "step"])),
        ("--theta-reg", "theta_reg", dict(type=_none_or_float, help="spike-rate regulariser threshold (SPSN eq. 21; 'none': off)")),
        ("--reg-weight", "reg_weight", dict(type=float)),
        ("--k-shift", "k_shift", dict(type=float, help="random channel shift augmentation (SPSN §IV-B; 0: off)")),
        ("--k-scale", "k_scale", dict(type=float, help="random time/channel scale augmentation (SPSN §IV-B; 0: off)")),
        ("--max-batches", "max_batches", dict(type=int, help="stop each epoch after this many batches (smoke runs)")),
        ("--backend", "backend", dict(help="the hidden neurons' backend; each neuron kind runs the names it has ("
                                           + _backend_help() + ") and refuses the others")),
        ("--dtype", "dtype", dict(choices=["float32", "float64"], help="parameter and input float type")),
        ("--bias-init", "bias_init", dict(choices=["uniform", "zero"],
                                          help="Linear biases: PyTorch's uniform init or zero (FastSNN)")),
        ("--event-input", "event_input", dict(choices=["auto", "off"],
                                              help="keep spike data as events and run the first layer "
                                                   "event-driven where the data set allows it")),
        ("--seed", "seed", dict(type=int)),
        ("--device", "device", dict()),
        ("--threads", "threads", dict(type=int, help="torch intra-op threads (0: torch's default)")),
        ("--distributed", "distributed", dict(action="store_true",
                                              help="data-parallel (DDP) over the ranks of a torchrun launch; "
                                                   "--batch-size is the global batch")),
    ]


def _add_config_flags(p, skip=()) -> None:
    from .train.loop import TrainConfig

    d = TrainConfig()
    for flag, name, kw in _train_flags():
        if name in skip:
            continue
        kw = dict(kw)
        default = getattr(d, name)
        kw["help"] = (kw.get("help", "") + f" [default: {default}]").strip()
        p.add_argument(flag, dest=name, default=argparse.SUPPRESS, **kw)


def _overrides(args, skip=()) -> dict:
    out = {name: getattr(args, name) for _flag, name, _kw in _train_flags()
           if name not in skip and hasattr(args, name)}
    if "hidden" in out:
        out["hidden"] = list(out["hidden"])
    if out.get("threads") == 0:
        out["threads"] = None
    return out


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a network (default: SPSN-SB on the embedded digits)",
                       description="Train a feed-forward SNN.  With --preset, start from a paper's setup "
                                   "(see `spikescan presets`); explicit flags override the preset.")
    p.add_argument("--preset", default=None, help="a paper's experiment by name (spikescan presets)")
    _add_config_flags(p)
    p.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<neuron>-s<seed>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint; --epochs N trains it longer, --data-dir, "
                        "--device, --threads, --eval-batch-size may change, any other changed flag is refused")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--framework", choices=["torch", "jax"], default="torch",
                   help="jax: the digits main job with the Flax modules of spikescan.jax (spikescan[jax]); takes "
                        "--neuron spsn-sb|spsn-gs|lif|plif, --hidden, --epochs, --batch-size, --lr, --seed, ...")


def _run_train(args) -> int:
    overrides = _overrides(args)
    if args.framework == "jax":
        from .jax.train import run_from_cli

        return run_from_cli(overrides, out=args.out, preset=args.preset, resume=args.resume)

    from .train.loop import resume_run, train
    from .train.presets import get_preset, preset_config

    if args.resume:
        # the run's own config.json, changed only by what the command line says (checked by train)
        changes = dict(get_preset(args.preset).config) if args.preset else {}
        changes.update(overrides)
        if args.preset:
            changes["preset"] = args.preset
        resume_run(args.out, progress=not args.no_progress, command=_command_line(), **changes)
        return 0
    overrides["out_dir"] = args.out
    train(preset_config(args.preset, overrides), progress=not args.no_progress, command=_command_line())
    return 0


def _command_line() -> str:
    import shlex

    return "spikescan " + " ".join(shlex.quote(a) for a in _ARGV)


def _add_presets(sub) -> None:
    p = sub.add_parser("presets", help="list the papers' experiments available as --preset NAME")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")


def _run_presets(args) -> int:
    from .train.presets import PRESETS, describe

    if args.markdown:
        print("| preset | dataset | key settings | source |")
        print("|---|---|---|---|")
        for p in PRESETS.values():
            print(f"| `{p.name}` | {p.config['dataset']} | {describe(p)} | {p.source} |")
        return 0
    for p in PRESETS.values():
        print(f"{p.name:18s} {p.config['dataset']:12s} {describe(p)}")
        print(f"{'':18s} source: {p.source}")
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run's checkpoint on the test split (K trials for stochastic neurons)")
    p.add_argument("run_dir", help="a run folder holding config.json and checkpoint.pt")
    p.add_argument("--data-dir", default=None, help="where the data set is now (default: the run's)")
    p.add_argument("--trials", type=int, default=1, help="repeat the evaluation K times (SPSN §V-C)")
    p.add_argument("--seed", type=int, default=0, help="trial k draws its randomness from seed + k")
    p.add_argument("--batch-size", type=int, default=None, help="test batch size (default: the run's)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")


def _run_eval(args) -> int:
    from .train.evaluate import evaluate

    evaluate(args.run_dir, data_dir=args.data_dir, trials=args.trials, seed=args.seed,
             batch_size=args.batch_size, threads=args.threads or None)
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="train neuron kinds x seeds on one network, print a Markdown table",
                       description="Train every --neurons x --seeds on the same network (the main job's by "
                                   "default) into OUT/<neuron>-s<seed>/ and write OUT/table.md and "
                                   "OUT/results.json.  Finished runs in OUT are reused, unfinished ones resumed.")
    p.add_argument("--neurons", nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", required=True, help="folder for the runs and the table")
    p.add_argument("--preset", default=None, help="shared configuration from a preset (default: the main job)")
    _add_config_flags(p, skip=("neuron", "seed"))


def _run_compare(args) -> int:
    from .train.compare import compare
    from .train.models import NEURONS
    from .train.presets import preset_config

    bad = [n for n in args.neurons if n not in NEURONS]
    if bad:
        raise ValueError(f"unknown neurons {bad}; choose from {list(NEURONS)}")
    base = preset_config(args.preset, _overrides(args, skip=("neuron", "seed")))
    compare(args.neurons, args.seeds, args.out, base=base)
    return 0


class _DefaultsOnceFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already states its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS, False) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="speed benchmarks reproducing the papers' figures")
    bsub = p.add_subparsers(dest="bench", required=True)
    for name, module in BENCHMARKS.items():
        mod = importlib.import_module(f"spikescan.bench.{module}")
        bp = bsub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0],
                             formatter_class=_DefaultsOnceFormatter)
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


def _add_results(sub) -> None:
    p = sub.add_parser("results", help="archive a run's small files into results/, tabulate results/")
    rsub = p.add_subparsers(dest="results_command", required=True)
    a = rsub.add_parser("archive", help="copy RUN_DIR's metrics, config, plots and command into results/NAME")
    a.add_argument("run_dir")
    a.add_argument("name", help="experiment name (NAME-s<seed> groups seeds of one experiment)")
    a.add_argument("--root", default="results")
    a.add_argument("--note", default=None, help="a sentence kept in meta.json")
    t = rsub.add_parser("table", help="print the Markdown table of results/ (or write it into the README)")
    t.add_argument("--root", default="results")
    t.add_argument("--readme", default=None, help="replace the <!-- results-table --> block of this file")


def _run_results(args) -> int:
    from pathlib import Path

    from .train.results import archive_run, results_table, update_readme

    if args.results_command == "archive":
        print(f"archived -> {archive_run(args.run_dir, Path(args.root) / args.name, note=args.note)}")
        return 0
    table = results_table(args.root)
    if args.readme:
        update_readme(args.readme, table)
        print(f"wrote the results table into {args.readme}")
    else:
        print(table, end="")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a trained run's network as a NIR graph (neuromorphic hardware)")
    p.add_argument("run_dir", help="a run folder holding config.json and checkpoint.pt")
    p.add_argument("--out", default=None, help="the .nir file to write (default RUN_DIR/network.nir)")
    p.add_argument("--spsn", default="error", choices=["error", "threshold"],
                   help="SPSN layers: refuse (error) or export their deterministic firing H(u) (threshold)")


def _run_export(args) -> int:
    from pathlib import Path

    from .export import write
    from .train.evaluate import load_run_model

    model, _cfg = load_run_model(args.run_dir)
    out = Path(args.out) if args.out else Path(args.run_dir) / "network.nir"
    write(out, model, spsn=args.spsn)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikescan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_presets(sub)
    _add_eval(sub)
    _add_compare(sub)
    _add_bench(sub)
    _add_export(sub)
    _add_results(sub)
    sub.add_parser("info", help="versions and optional extras found")
    return parser


_COMMANDS = {"train": _run_train, "presets": _run_presets, "eval": _run_eval, "compare": _run_compare,
             "export": _run_export, "results": _run_results, "info": _run_info}
_ARGV: list[str] = []  # the arguments of the running command, for command.txt


def _run_bench(args) -> int:
    args._bench_module.run(args)
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that describe a problem with the user's request or files: one ``error:`` line, no traceback."""
    from .distributed import PeerFailure, SpawnError
    from .train.loop import TrainingDivergedError

    return (ValueError, TypeError, OSError, ImportError, TrainingDivergedError, PeerFailure, SpawnError)


def main(argv=None) -> int:
    """Run one command; a user error prints ``error: ...`` on stderr and returns 1 (``SPIKESCAN_TRACEBACK=1``
    re-raises it with its traceback)."""
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    _ARGV[:] = argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and args.resume and not args.out:
        parser.error("--resume needs --out RUN_DIR")
    run = _run_bench if args.command == "bench" else _COMMANDS[args.command]
    try:
        return run(args)
    except _user_errors() as e:
        if os.environ.get("SPIKESCAN_TRACEBACK", "0") not in ("", "0"):
            raise
        print(f"error: {_with_flag_names(str(e), args)}", file=sys.stderr)
        return 1


def _with_flag_names(message: str, args) -> str:
    """A config field that starts an error message is named by its command-line flag
    (``tau_mem must be ...`` -> ``--tau-mem must be ...``) when the user gave that flag."""
    if getattr(args, "command", None) not in ("train", "compare"):
        return message
    for flag, field, _ in _train_flags():
        if message.startswith(f"{field} ") and field in vars(args):
            return flag + message[len(field):]
    return message


if __name__ == "__main__":
    raise SystemExit(main())
