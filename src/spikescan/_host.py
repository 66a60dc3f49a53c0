"""What machine and what code this is, for result files: the CPU model, the spikescan commit."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path


def cpu_model() -> str:
    """The CPU's ``model name`` from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git(*args: str) -> str | None:
    """``git ARGS`` run in this package's folder: its stdout, or None (no git, not a checkout)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_commit() -> str:
    """The commit of the spikescan source that is running (``+changes`` when its tracked files
    differ from it; ``unknown`` outside a git checkout, e.g. an installed wheel)."""
    commit = git("rev-parse", "--short=12", "HEAD")
    if commit is None:
        return "unknown"
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit + ("+changes" if status else "")
