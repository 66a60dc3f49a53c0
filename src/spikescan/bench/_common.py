"""Utilities shared by the speed benchmarks: timing, memory bandwidth and rooflines, time
budgets, atomic JSON output, text tables and matplotlib (Agg) figures.

Nothing here knows about spiking neurons; a benchmark module builds the step functions and
uses these helpers to time them and to report.

Timing convention: :func:`time_fn` runs ``warmup`` untimed calls, then ``repeats`` timed calls,
and reports the median with the interquartile range (IQR). On CUDA every timed call is
bracketed by CUDA events and the device is synchronised, so the time is the device time of
that call; on CPU it is wall-clock ``time.perf_counter``.

Bandwidth convention: :func:`measure_copy_bandwidth` counts the bytes a copy moves — the
source read *and* the destination written (``2 * nbytes`` per copy) — divided by the time. A
roofline time is then ``bytes that must move / bandwidth`` (:func:`roofline_seconds`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

from .._io import atomic_write
from .._host import cpu_model  # noqa: F401  (re-exported: the benchmarks' machine info)

# --------------------------------------------------------------------------------------------
# devices and timing
# --------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``torch.device`` for ``name`` ("cpu", "cuda", "cuda:1"), with a clear error without CUDA."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for, but CUDA is not available in this torch build/machine")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Timings of one case in seconds: every repeat, and their median and quartiles."""

    times_s: list[float]
    median_s: float
    q1_s: float
    q3_s: float
    min_s: float

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["iqr_s"] = self.iqr_s
        return out


def summarize(times_s: Sequence[float]) -> Timing:
    """Median, quartiles (inclusive method; both equal the value for one sample) and minimum."""
    times = [float(t) for t in times_s]
    if not times:
        raise ValueError("summarize() needs at least one time")
    if len(times) == 1:
        q1 = q3 = times[0]
    else:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return Timing(times_s=times, median_s=statistics.median(times), q1_s=q1, q3_s=q3, min_s=min(times))


def time_fn(fn: Callable[[], Any], device: torch.device, *, warmup: int = 1, repeats: int = 5,
            max_total_s: float | None = None) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed calls (CUDA events on CUDA).

    With ``max_total_s``, no further call starts once that much wall time has passed since the
    start (at least one timed call is always made), so ``len(times_s)`` may be below ``repeats``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    started = time.perf_counter()

    def out_of_time() -> bool:
        return max_total_s is not None and time.perf_counter() - started > max_total_s

    for _ in range(warmup):
        fn()
        if out_of_time():
            break
    synchronize(device)
    times: list[float] = []
    for _ in range(repeats):
        if times and out_of_time():
            break
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return summarize(times)


def total_memory_bytes() -> int | None:
    """Physical memory (``MemTotal`` of /proc/meminfo), or ``None`` where unknown."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@contextlib.contextmanager
def address_space_limit(max_bytes: int | None) -> Iterator[None]:
    """Lower the soft ``RLIMIT_AS`` of this process to ``max_bytes`` inside the block.

    An allocation beyond it then fails with an exception (which a benchmark can record as an
    error for that case) instead of waking the kernel's OOM killer on a shared machine. Never
    raises an existing limit; no-op for ``None``/0 or where ``resource`` is missing. Don't use
    it around CUDA work: the CUDA runtime reserves far more address space than it uses.
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        resource = None
    if not max_bytes or resource is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    new = int(max_bytes)
    if hard != resource.RLIM_INFINITY:
        new = min(new, hard)
    if soft != resource.RLIM_INFINITY:
        new = min(new, soft)
    resource.setrlimit(resource.RLIMIT_AS, (new, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# --------------------------------------------------------------------------------------------
# bandwidth and roofline
# --------------------------------------------------------------------------------------------


def measure_copy_bandwidth(
    device: str | torch.device = "cpu", *, nbytes: int = 256 * 2**20, repeats: int = 5, warmup: int = 2
) -> float:
    """Memory bandwidth in bytes/s of ``dst.copy_(src)`` for two float32 tensors of ``nbytes``.

    Bytes moved per copy = ``2 * nbytes`` (source read + destination written); the result is
    that over the median time of ``repeats`` copies (CUDA events on CUDA). Pick ``nbytes``
    well above the last-level cache (default 256 MiB) to measure DRAM/HBM, not cache.
    """
    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    numel = max(1, int(nbytes) // 4)
    src = torch.rand(numel, device=device)
    dst = torch.empty_like(src)
    timing = time_fn(lambda: dst.copy_(src), device, warmup=warmup, repeats=repeats)
    return 2.0 * numel * 4 / timing.median_s


def roofline_seconds(nbytes: float, bandwidth_bytes_per_s: float) -> float:
    """Lower bound on the time of a memory-bound step: the bytes it must move / bandwidth."""
    if not (bandwidth_bytes_per_s > 0 and math.isfinite(bandwidth_bytes_per_s)):
        raise ValueError(f"bandwidth must be a positive finite number of bytes/s, got {bandwidth_bytes_per_s}")
    return float(nbytes) / float(bandwidth_bytes_per_s)


# --------------------------------------------------------------------------------------------
# time budget
# --------------------------------------------------------------------------------------------


@dataclass
class BudgetTracker:
    """Skip a case whose estimated time exceeds ``budget_s``.

    The estimate for size ``n`` scales the last measured (or estimated) seconds per call of the
    same case linearly with size, times the number of calls (warm-up + repeats). The first size
    of a case has no estimate and always runs. Once a case was skipped, every larger size of it
    is estimated from the skipped estimate, so it is skipped as well.
    """

    budget_s: float
    calls_per_case: int
    _last: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (size, s/call)

    def estimate(self, key: str, size: float) -> float | None:
        """Estimated seconds for the whole case (all calls), or ``None`` without a previous size."""
        if key not in self._last:
            return None
        prev_size, per_call = self._last[key]
        return per_call * (size / prev_size) * self.calls_per_case

    def should_skip(self, key: str, size: float) -> tuple[bool, float | None]:
        est = self.estimate(key, size)
        return (est is not None and est > self.budget_s), est

    def record(self, key: str, size: float, seconds_per_call: float) -> None:
        self._last[key] = (float(size), float(seconds_per_call))


# --------------------------------------------------------------------------------------------
# machine info, JSON, tables
# --------------------------------------------------------------------------------------------


def machine_info(device: torch.device) -> dict[str, Any]:
    """What a reader needs to interpret the timings: versions, threads, CPU, device, load."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = list(os.getloadavg())
    # settings that change the timings: allocator (glibc MALLOC_*), OpenMP/MKL threads
    info["env"] = {k: v for k, v in sorted(os.environ.items())
                   if k.startswith(("MALLOC_", "OMP_", "MKL_", "KMP_", "GOMP_", "LD_PRELOAD"))}
    if device.type == "cuda":
        info["cuda_device_name"] = torch.cuda.get_device_name(device)
        info["cuda_version"] = torch.version.cuda
    return info


def load_warning(info: dict[str, Any]) -> str | None:
    """A warning line when the 1-minute load average at start exceeds the usable CPUs."""
    load = info.get("loadavg_at_start")
    cpus = info.get("cpus_usable") or info.get("cpu_count")
    if load and cpus and load[0] > cpus:
        return (f"warning: load average {load[0]:.1f} on {cpus} CPUs - other processes compete for the CPU "
                f"and memory bandwidth, so timings will be noisy (large ops suffer most)")
    return None


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` via a temp file in the same folder + ``os.replace``."""
    data = (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def fmt_seconds(s: float | None) -> str:
    """Seconds with an adaptive unit: 12.3us, 4.56ms, 1.234s."""
    if s is None or not math.isfinite(s):
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f}us"
    if s < 1.0:
        return f"{s * 1e3:.2f}ms"
    return f"{s:.3f}s"


def fmt_ratio(r: float | None) -> str:
    if r is None or not math.isfinite(r):
        return "-"
    return f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


# --------------------------------------------------------------------------------------------
# figures (Agg canvas, no pyplot global state)
# --------------------------------------------------------------------------------------------


def new_figure(ncols: int = 1, nrows: int = 1, *, size: tuple[float, float] | None = None):
    """A matplotlib ``Figure`` on an Agg canvas and its axes array (never touches pyplot's backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size or (5.5 * ncols, 4.2 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 120) -> None:
    """Save ``fig`` as PNG atomically (temp file + ``os.replace``)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=folder)
    os.close(fd)
    try:
        fig.tight_layout()
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# profiling
# --------------------------------------------------------------------------------------------


def profile_table(fn: Callable[[], Any], device: torch.device, *, row_limit: int = 15, warmup: int = 1) -> str:
    """``torch.profiler`` table of one call of ``fn`` (after ``warmup`` calls), top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    synchronize(device)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)


def run_main(name: str, doc: str | None, add_arguments: Callable, run: Callable, argv=None):
    """``python -m spikescan.bench.<module>``: parse ``argv`` with the module's ``add_arguments`` and ``run`` it."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"spikescan bench {name}", description=(doc or "").split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def check_run_options(args, positive: Sequence[str] = ()) -> None:
    """The options every timing bench shares: ``positive`` ones >= 1, ``--warmup`` >= 0,
    ``--budget-s`` > 0 and ``--threads`` >= 1 where the bench has them; a ValueError names the flag."""
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if getattr(args, "warmup", 0) < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if hasattr(args, "budget_s") and not args.budget_s > 0:
        raise ValueError(f"--budget-s must be > 0, got {args.budget_s}")
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")


def positive_ints(text: str) -> list[int]:
    """argparse type: integers >= 1 separated by commas (``"8,16,32"``; with ``nargs="+"`` also spaces)."""
    import argparse

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"values must be integers >= 1, got {text!r}")
    return values


def memory_limit(max_memory_gb: float | None, device: torch.device) -> int | None:
    """The address-space limit of a CPU benchmark: ``max_memory_gb`` GiB, or 3/4 of the machine's
    memory when ``None``; no limit for ``<= 0`` and on other devices."""
    if device.type != "cpu":
        return None
    if max_memory_gb is None:
        total = total_memory_bytes()
        return int(0.75 * total) if total else None
    return int(max_memory_gb * 2**30) if max_memory_gb > 0 else None


def run_with_memory_limit(args, device: torch.device, run_cases: Callable[[Any, torch.device], dict]) -> dict:
    """``run_cases(args, device)`` under :func:`memory_limit` (``args.max_memory_gb``), recording
    the limit in ``results["config"]`` and writing ``results["files"]["json"]``."""
    limit = memory_limit(args.max_memory_gb, device)
    with address_space_limit(limit):
        results = run_cases(args, device)
    results["config"]["address_space_limit_bytes"] = limit
    write_json_atomic(results["files"]["json"], results)
    return results


def machine_title(m: dict[str, Any]) -> str:
    """``device (CPU model or GPU name), N threads``: the part of a figure title naming the machine."""
    where = m["cpu_model"] if m["device"] == "cpu" else m.get("cuda_device_name")
    return f"{m['device']} ({where}), {m['torch_num_threads']} threads"
