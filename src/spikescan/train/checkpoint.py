"""Checkpoints and result files written atomically: a crash never leaves a half-written file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write


def save_checkpoint(path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` to ``path`` through a temp file and ``os.replace``."""
    atomic_write(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code from pickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt, truncated or not a torch file
        raise ValueError(f"checkpoint {path} could not be read ({type(e).__name__}: {e})") from e


def write_json(path, obj) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    atomic_write(Path(path), lambda f: f.write(data))


def write_text(path, text: str) -> None:
    atomic_write(Path(path), lambda f: f.write(text.encode()))
