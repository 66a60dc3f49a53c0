"""Run a function on N local processes joined in a gloo process group (tests, benchmarks, demos).

:func:`spawn` is the in-Python counterpart of ``torchrun --nproc-per-node N``: it starts
``world_size`` processes, each calls ``torch.distributed.init_process_group("gloo", ...)`` on a
:class:`torch.distributed.FileStore` in a fresh temporary folder (no port to pick, so no port
races between concurrent test runs), runs ``fn(rank, world_size, *args)`` and sends back its
return value (or its traceback).

It never hangs:

* the process group gets ``pg_timeout_s``: a collective or ``recv`` waiting longer fails;
* the parent watches the children: when one dies without reporting (killed, ``os._exit``,
  segfault) or raises, the others get ``grace_s`` seconds to fail on their own (gloo notices a
  closed connection at once, or the group timeout fires), then are killed;
* after ``timeout`` seconds in all, every child still running is killed.

Any failure raises :class:`SpawnError` with one line per rank (its exception, its exit code,
or "killed"), the first traceback, and ``.ranks`` holding the per-rank outcome for tests.

Processes start with the ``forkserver`` method by default: a server process imports torch and
spikescan once, and each child is forked from it, so a spawn costs ~10 ms instead of the 2-3 s
of importing torch again (``"spawn"`` is the safe fallback; plain ``fork`` of a process that
already ran OpenMP work is not safe and is not offered).
"""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import inspect
import os
import queue as queue_mod
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

__all__ = ["spawn", "SpawnError", "RankOutcome"]

_START_METHODS = ("forkserver", "spawn")


@dataclass
class RankOutcome:
    """What one rank did: ``status`` is ``"ok"``, ``"error"`` (raised), ``"died"`` or ``"killed"``."""

    rank: int
    status: str
    result: Any = None
    error: Optional[str] = None  # "ExcType: message" for "error"
    traceback: Optional[str] = None
    exitcode: Optional[int] = None
    seconds: Optional[float] = None  # from start until the outcome was known to the parent

    def line(self) -> str:
        if self.status == "ok":
            return f"rank {self.rank}: ok"
        if self.status == "error":
            return f"rank {self.rank}: raised {self.error}"
        if self.status == "died":
            return f"rank {self.rank}: died without reporting (exit code {self.exitcode})"
        return f"rank {self.rank}: killed by spawn() ({self.error})"


class SpawnError(RuntimeError):
    """One or more spawned ranks failed; ``ranks`` holds every rank's :class:`RankOutcome`."""

    def __init__(self, message: str, ranks: list[RankOutcome]):
        super().__init__(message)
        self.ranks = ranks


@dataclass
class _FnRef:
    """A picklable reference to a module-level function that also works for scripts and for
    pytest modules imported with ``--import-mode=importlib`` (not importable by name)."""

    module: str
    qualname: str
    path: Optional[str]
    fn: Any = field(default=None)

    @classmethod
    def of(cls, fn: Callable) -> "_FnRef":
        if not callable(fn) or "<locals>" in getattr(fn, "__qualname__", "<locals>") or \
                getattr(fn, "__name__", "") == "<lambda>":
            raise ValueError(f"fn must be a module-level function (picklable by reference), got {fn!r}")
        try:
            path = inspect.getfile(fn)
        except TypeError:
            path = None
        module = fn.__module__
        if module == "__main__":  # run with ``python -m pkg.mod``: the child can import it by name
            spec = getattr(sys.modules.get("__main__"), "__spec__", None)
            if spec is not None and spec.name:
                module = spec.name
        return cls(module, fn.__qualname__, path)

    def resolve(self) -> Callable:
        if self.module != "__main__":
            try:
                obj = importlib.import_module(self.module)
                return _getattr_path(obj, self.qualname)
            except (ImportError, AttributeError):
                pass
        if self.path is None:
            raise ImportError(f"cannot import {self.module}.{self.qualname} in the child process")
        spec = importlib.util.spec_from_file_location(f"_spikescan_spawned_{abs(hash(self.path))}", self.path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return _getattr_path(mod, self.qualname)


def _getattr_path(obj, qualname: str):
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _child(ref: _FnRef, rank: int, world_size: int, store_path: str, pg_timeout_s: float, threads: Optional[int],
           args: tuple, kwargs: dict, results) -> None:
    import torch
    import torch.distributed as dist

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        fn = ref.resolve()
        store = dist.FileStore(store_path, world_size)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=pg_timeout_s))
        try:
            out = fn(rank, world_size, *args, **kwargs)
        finally:
            # destroy even after an error: a later spawn in a forked sibling must not inherit it
            dist.destroy_process_group()
        results.put((rank, "ok", out, None, None))
    except BaseException as exc:  # report everything, KeyboardInterrupt included
        results.put((rank, "error", None, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        raise SystemExit(1)


_CONTEXTS: dict[str, Any] = {}


def _context(method: str):
    import torch.multiprocessing as mp

    if method not in _CONTEXTS:
        ctx = mp.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(["torch", "torch.distributed", "spikescan"])
        _CONTEXTS[method] = ctx
    return _CONTEXTS[method]


def spawn(fn: Callable, world_size: int, *args, timeout: float = 120.0, pg_timeout_s: float = 30.0,
          grace_s: Optional[float] = None, threads: Optional[int] = 1, start_method: str = "forkserver",
          **kwargs) -> list[Any]:
    """Run ``fn(rank, world_size, *args, **kwargs)`` on ``world_size`` gloo processes; return the results.

    Args:
        fn: a module-level function (it is imported by reference in the children); its return
            value must be picklable (tensors are fine).
        world_size: number of processes (>= 1).
        timeout: seconds for the whole run; children still running after it are killed and
            :class:`SpawnError` is raised.
        pg_timeout_s: ``timeout`` of the process group: a collective or ``recv`` waiting longer
            fails in the child.
        grace_s: after a rank fails, seconds the others get to fail or finish on their own
            before they are killed (default ``pg_timeout_s + 10``).
        threads: ``torch.set_num_threads`` in every child (default 1: N ranks on a small CPU
            must not oversubscribe it); ``None`` leaves torch's default.
        start_method: ``"forkserver"`` (default, fast) or ``"spawn"``.

    Returns:
        ``[result of rank 0, result of rank 1, ...]``.

    Raises:
        SpawnError: a rank raised, died, or the run exceeded ``timeout``.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    for name, value in (("timeout", timeout), ("pg_timeout_s", pg_timeout_s)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    if start_method not in _START_METHODS:
        raise ValueError(f"start_method must be one of {_START_METHODS}, got {start_method!r}")
    grace = float(pg_timeout_s) + 10.0 if grace_s is None else float(grace_s)
    ref = _FnRef.of(fn)
    ctx = _context(start_method)
    folder = tempfile.mkdtemp(prefix="spikescan-spawn-")
    results = ctx.Queue()
    procs = []
    outcomes: dict[int, RankOutcome] = {}
    started = time.monotonic()
    try:
        for rank in range(world_size):
            p = ctx.Process(target=_child, name=f"spikescan-rank{rank}",
                            args=(ref, rank, world_size, os.path.join(folder, "store"), float(pg_timeout_s),
                                  threads, args, kwargs, results), daemon=True)
            p.start()
            procs.append(p)
        deadline = started + float(timeout)
        first_failure: Optional[float] = None
        while len(outcomes) < world_size:
            now = time.monotonic()
            if now > deadline:
                why = f"the run exceeded timeout={timeout:g}s"
                break
            if first_failure is not None and now > first_failure + grace:
                why = f"still running {grace:g}s after another rank failed"
                break
            try:
                rank, status, out, err, tb = results.get(timeout=0.05)
                outcomes[rank] = RankOutcome(rank, status, out, err, tb, seconds=now - started)
                if status != "ok" and first_failure is None:
                    first_failure = now
                continue
            except queue_mod.Empty:
                pass
            for rank, p in enumerate(procs):
                if rank not in outcomes and p.exitcode is not None:
                    # exited; its report may still be in the pipe, so look once more before calling it dead
                    try:
                        r, status, out, err, tb = results.get(timeout=0.5)
                        outcomes[r] = RankOutcome(r, status, out, err, tb, seconds=time.monotonic() - started)
                        if status != "ok" and first_failure is None:
                            first_failure = time.monotonic()
                        break
                    except queue_mod.Empty:
                        outcomes[rank] = RankOutcome(rank, "died", exitcode=p.exitcode,
                                                     seconds=time.monotonic() - started)
                        if first_failure is None:
                            first_failure = time.monotonic()
        else:
            why = None
        for rank, p in enumerate(procs):
            if rank not in outcomes:
                outcomes[rank] = RankOutcome(rank, "killed", error=why, seconds=time.monotonic() - started)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(timeout=5)
            if outcomes.get(procs.index(p)) is not None and outcomes[procs.index(p)].exitcode is None:
                outcomes[procs.index(p)].exitcode = p.exitcode
        results.close()
        shutil.rmtree(folder, ignore_errors=True)
    ranked = [outcomes[r] for r in range(world_size)]
    if all(o.status == "ok" for o in ranked):
        return [o.result for o in ranked]
    first_tb = next((o.traceback for o in ranked if o.traceback), None)
    message = (f"{sum(o.status != 'ok' for o in ranked)} of {world_size} spawned ranks failed "
               f"({getattr(fn, '__qualname__', fn)}):\n" + "\n".join(o.line() for o in ranked))
    if first_tb:
        message += "\n\nfirst traceback:\n" + first_tb
    raise SpawnError(message, ranked)
