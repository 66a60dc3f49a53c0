"""Committed results of real experiments: archive a run folder's small files, tabulate them.

``spikescan results archive RUN_DIR NAME`` copies a finished (or interrupted) run's small files
-- ``config.json``, ``metrics.json``, ``metrics.csv``, ``final.json``, ``curves.png``,
``raster.png``, ``command.txt`` -- into ``results/NAME/`` and writes ``meta.json`` beside them:
the spikescan commit (and whether the working tree had changes), the host CPU, torch version,
date.  Checkpoints and data never go there.  ``spikescan results table`` reads every
``results/*/`` and prints (or writes into the README between ``<!-- results-table -->`` and
``<!-- /results-table -->``) one Markdown table: test accuracy with the paper's number beside
it (:data:`~spikescan.train.presets.PAPER_ACCURACY`), spikes per hidden neuron per sample,
seconds per epoch and wall time; runs of one experiment over several seeds (``NAME-s<seed>``)
are reported as mean ± std.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import statistics
import time
from pathlib import Path

from .._host import cpu_model, git as _git
from .checkpoint import write_json, write_text

__all__ = ["archive_run", "results_table", "update_readme", "RUN_FILES"]

RUN_FILES = ("config.json", "metrics.json", "metrics.csv", "final.json", "eval.json", "curves.png", "raster.png",
             "command.txt")
TABLE_BEGIN, TABLE_END = "<!-- results-table -->", "<!-- /results-table -->"


#: what :func:`spikescan._host.code_commit` wrote at the end of each ``command.txt`` line
_RUN_COMMIT = re.compile(r"# spikescan (\S+)\s*$")


def run_commits(command_txt: str) -> list[str]:
    """The commits that ran a run's starts and resumes, in order, each once."""
    seen: list[str] = []
    for line in command_txt.splitlines():
        m = _RUN_COMMIT.search(line)
        if m and m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def archive_run(run_dir, dest, *, note: str | None = None) -> Path:
    """Copy ``run_dir``'s small files into ``dest`` (created) and write ``dest/meta.json``."""
    run_dir, dest = Path(run_dir), Path(dest)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir / 'config.json'} not found: {run_dir} is not a run folder")
    if not (run_dir / "metrics.json").is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.json: it never finished an epoch")
    dest.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
        elif name in ("final.json", "eval.json") and (dest / name).is_file():
            (dest / name).unlink()  # an older archive's results must not survive a re-archive
    if not (run_dir / "curves.png").is_file():  # an unfinished run: draw its curves so far
        from .plots import plot_training_curves

        cfg = json.loads((run_dir / "config.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        history = metrics["history"] if isinstance(metrics, dict) else metrics
        plot_training_curves(history, dest / "curves.png",
                             title=f"{cfg.get('neuron')} on {cfg.get('dataset')} (epoch {len(history)}, unfinished)")
    import torch

    status = _git("status", "--porcelain", "--untracked-files=no")
    meta = {"run_dir": str(run_dir), "commit": _git("rev-parse", "HEAD"),
            "working_tree_changed": None if status is None else bool(status),
            "cpu": cpu_model(), "machine": platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "archived": time.strftime("%Y-%m-%d %H:%M:%S"),
            "finished": (run_dir / "final.json").is_file()}
    command_txt = run_dir / "command.txt"
    if command_txt.is_file():  # the code that trained it (commit above: the code that archived it)
        meta["run_commits"] = run_commits(command_txt.read_text())
    if note:
        meta["note"] = note
    write_json(dest / "meta.json", meta)
    return dest


def _load(folder: Path) -> dict | None:
    if not (folder / "config.json").is_file() or not (folder / "metrics.json").is_file():
        return None
    cfg = json.loads((folder / "config.json").read_text())
    history = json.loads((folder / "metrics.json").read_text())
    final = json.loads((folder / "final.json").read_text()) if (folder / "final.json").is_file() else None
    meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").is_file() else {}
    return {"name": folder.name, "cfg": cfg, "history": history, "final": final, "meta": meta}


def _spikes_per_neuron(run: dict) -> float | None:
    """Spikes per hidden neuron per test sample: the finished run's NeuroBench measurement, else
    (an unfinished run) its last epoch's test rate per neuron per step times the steps."""
    nb = (run["final"] or {}).get("neurobench") or {}
    per = nb.get("spikes_per_neuron_per_sample")
    if per:
        return statistics.fmean(per.values())
    rate = run["history"][-1].get("test_spike_rate") if run["history"] else None
    steps = run["cfg"].get("num_steps")
    return None if rate is None or not steps else rate * steps


def _fmt(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def results_table(root="results") -> str:
    """A Markdown table of every run under ``root`` (one row per experiment; seeds pooled)."""
    from .presets import PAPER_ACCURACY

    runs = [r for r in (_load(p) for p in sorted(Path(root).iterdir()) if p.is_dir()) if r is not None] \
        if Path(root).is_dir() else []
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(re.sub(r"-s\d+$", "", r["name"]), []).append(r)
    lines = ["| experiment | data | neuron | epochs | seeds | test acc. % | paper % | spikes / hidden neuron / sample "
             "| s / epoch | wall |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, rs in groups.items():
        cfg = rs[0]["cfg"]
        last = [r["history"][-1] for r in rs]
        epochs = sorted({row["epoch"] for row in last})
        done = all(r["final"] is not None for r in rs)
        epoch_s = [statistics.fmean(h["epoch_seconds"] for h in r["history"]) for r in rs]
        wall = [r["final"]["wall_seconds"] for r in rs if r["final"]]
        paper = PAPER_ACCURACY.get(cfg.get("preset") or "")
        lines.append(
            f"| {name} | {cfg['dataset']} | {cfg['neuron']} {'x'.join(map(str, cfg['hidden']))} "
            f"| {'/'.join(map(str, epochs))} of {cfg['epochs']}{'' if done else ' (unfinished)'} | {len(rs)} "
            f"| {_fmt([row['test_acc'] for row in last], 100)} | {'–' if paper is None else f'{paper:.2f}'} "
            f"| {_fmt([_spikes_per_neuron(r) for r in rs])} | {_fmt(epoch_s, digits=1)} "
            f"| {_fmt([w / 3600 for w in wall], digits=2) + ' h' if wall else '–'} |")
    return "\n".join(lines) + "\n"


def update_readme(readme, table: str) -> None:
    """Replace the text between the results-table markers of ``readme`` with ``table``."""
    readme = Path(readme)
    text = readme.read_text()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise ValueError(f"{readme} has no {TABLE_BEGIN} ... {TABLE_END} block to fill")
    head, rest = text.split(TABLE_BEGIN, 1)
    _old, tail = rest.split(TABLE_END, 1)
    write_text(readme, f"{head}{TABLE_BEGIN}\n{table}{TABLE_END}{tail}")
