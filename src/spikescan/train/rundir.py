"""Exclusive use of a run folder by one training process, and no half-made folder after a failed start.

:class:`RunFolder` takes an advisory lock (``fcntl.flock``; ``msvcrt.locking`` on Windows) on
``RUN_DIR/.lock`` for as long as a run trains there.  The kernel drops the lock when the process
ends, however it ends (SIGKILL included), so a killed run never leaves a stale lock behind and
``--resume`` can take the folder at once; a second process asking for a folder in use fails at
once with the holder's pid.  Because every check of the folder's contents happens under the
lock, two runs started into one ``--out`` at the same moment cannot both proceed.

:meth:`RunFolder.discard_unless_started` undoes a start that failed before its first checkpoint:
the files this process wrote go, and the folder too when this process created it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

__all__ = ["RunFolder"]

LOCK_NAME = ".lock"


def _try_lock(fd: int) -> bool:
    """Take an exclusive, non-blocking lock on the open file ``fd``; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class RunFolder:
    """One process's claim on ``path``: :meth:`claim` locks it, :meth:`release` lets it go."""

    def __init__(self, path):
        self.path = Path(path)
        self._fd: int | None = None
        self._created = False
        self._lock_created = False
        self._written: list[Path] = []

    def claim(self) -> None:
        """Create ``path`` if needed and lock it; ``FileExistsError`` when another process trains there."""
        if not self.path.exists():
            self.path.mkdir(parents=True)
            self._created = True
        elif not self.path.is_dir():
            raise FileExistsError(f"{self.path} exists and is not a folder: choose another --out")
        lock = self.path / LOCK_NAME
        self._lock_created = not lock.exists()
        for _attempt in range(5):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise FileExistsError(f"{self.path} is in use by another training process (pid {holder}); "
                                      "wait for it to finish or choose another --out")
            # A holder that discarded the folder between our open and our lock leaves us an unlinked file.
            try:
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._fd = fd
                self._remove_stale_temp_files()
                return
            os.close(fd)
            self.path.mkdir(parents=True, exist_ok=True)
        raise OSError(f"could not lock {lock}: the folder keeps being removed by another process")

    def _remove_stale_temp_files(self) -> None:
        # Atomic writes go through ".NAME.*.tmp"; a process killed mid-write leaves one behind.
        for tmp in self.path.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    def wrote(self, path) -> None:
        """Record that this process created ``path`` (removed again if the start fails)."""
        self._written.append(Path(path))

    def discard_unless_started(self, checkpoint: Path) -> None:
        """After a failure: if no checkpoint exists, remove what this process wrote (and a folder it made)."""
        if checkpoint.exists():
            return
        for p in self._written:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        leftover = [p for p in self.path.iterdir() if p.name != LOCK_NAME]
        if self._created and not leftover:
            shutil.rmtree(self.path, ignore_errors=True)
        elif self._lock_created:
            with contextlib.suppress(FileNotFoundError):
                (self.path / LOCK_NAME).unlink()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None
