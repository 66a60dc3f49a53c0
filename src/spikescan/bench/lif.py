"""One exact-LIF layer: time-fused kernel vs PyTorch loops vs snnTorch / SpikingJelly / Norse.

Two tables (temporal-parallelization paper, ``../shared/papers/temporal_parallelization_lif_cuda_jax.txt``):

(a) ``forward`` — the paper's Table 1: forward (inference, no autograd) of one LIF layer of
    ``--neurons`` (default 1 000 000) neurons, T in {8, 16, 32, 64, 128}, with its constants
    ``k_tau = 0.2``, ``V_th = 0.3``, ``V_rest = 0`` (hard reset to 0, i.e. ``reset="zero"``).
(b) ``train`` — one training step (forward + backward of ``sum(spikes)`` w.r.t. the input
    currents ``[T, B, N]``), B = 32, N in {128, 256, 512, 1024}, T in {100, 1000}, with decay 0.9,
    threshold 1, hard reset, surrogate FastSigmoid(25) (snnTorch's default).

Implementations (``--impls``):

* ``fused`` — ``spikescan.ops.lif.lif_fused``: one kernel pass over T (numba on CPU, Triton on
  CUDA); in (a) it writes only the spikes; in (b) its backward recomputes the membranes from
  the input and a state checkpoint every 32 steps (CPU) or reads the pre-reset membrane that
  the forward kept (CUDA, 4 B per (t, neuron));
* ``reference`` — ``spikescan.ops.lif.lif(backend="sequential")``, the project's reference loop;
* ``torch-loop`` — the same equations as a plain PyTorch loop over ``x.unbind(0)`` (what a user
  would write; autograd through the loop);
* ``snntorch`` — ``snntorch.Leaky(beta, threshold, reset_mechanism="zero")`` stepped over
  ``x[t]`` (its documented usage);
* ``spikingjelly`` — ``LIFNode(tau = 1/(1-k), decay_input=False, v_reset=0, step_mode="m")``
  (same dynamics; SpikingJelly picks its torch reference on CPU and its CUDA kernels on GPU);
* ``norse`` — ``norse.torch.LIF`` with ``dt * tau_mem_inv = 1 - k`` (Norse's LIF also integrates
  a synaptic current, so its dynamics are comparable, not identical; it is timed as shipped).

Peers that are not installed (optional extra ``spikescan[peers]``) are skipped and reported so.

Roofline rows: the bytes that must move at the copy bandwidth measured in the same run
(:func:`spikescan.bench._common.measure_copy_bandwidth`, read + write bytes per second).
(a) read x, write spikes: ``2 T N e``.  (b) read x, write spikes; backward: read x again (the
least a backward can read to know the membranes: keeping them instead costs a write and a
read), read the spike gradient, write the input gradient: ``5 T B N e``.

Peak memory (``--memory``): one training step of every implementation at the headline case
(``--memory-case``, default B=32, N=256, T=1000), each in a fresh process (spawned, after a
warm-up on T=4) so that no heap or buffer reuse hides an allocation; CPU: the rise of the peak
resident set during the step (high-water mark reset through ``/proc/self/clear_refs``), CUDA:
``torch.cuda.max_memory_allocated``.

A case whose time, extrapolated linearly in T from the previous T, exceeds ``--budget-s`` is
skipped and marked as such; a case stops repeating once it has used the budget.

CPU tip: run with ``OMP_WAIT_POLICY=PASSIVE``.  PyTorch's OpenMP threads otherwise spin for a
while after every parallel torch op, and on a 2-core machine that steals the second core from
the fused kernel's worker thread (B=32, N=256, T=1000 training step: about 17 ms instead of
11 ms).  The environment variables that matter are recorded in the JSON (``config.env``).

Run: ``spikescan bench lif`` or ``python -m spikescan.bench.lif``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import os
import time
from typing import Any, Callable

import torch

from . import _common as C

IMPLS = ("fused", "reference", "torch-loop", "snntorch", "spikingjelly", "norse")
PEERS = {"snntorch": "snntorch", "spikingjelly": "spikingjelly.activation_based.neuron", "norse": "norse.torch"}
DEFAULT_T_FWD = (8, 16, 32, 64, 128)
DEFAULT_T_TRAIN = (100, 1000)
DEFAULT_HIDDEN = (128, 256, 512, 1024)
PAPER = dict(decay=0.2, threshold=0.3)  # k_tau, V_th of Table 1 (V_rest = 0)
TRAIN = dict(decay=0.9, threshold=1.0)
FWD_BYTES_PASSES = 2  # read x, write spikes
TRAIN_BYTES_PASSES = 5  # read x, write s; backward: read x, read grad s, write grad x
# What the fused kernels themselves move, per (t, neuron), stated beside the roofline so that the
# accounting can be checked: the roofline is a bound for a general training step (the spike
# gradient is a full tensor); in this step it is the broadcast gradient of sum(), which the
# backward kernel reads as one cached row, while sum() itself reads the spikes once more.
FUSED_TRAFFIC = ("fused (CPU) moves per (t, neuron): forward reads x, writes s (and a state checkpoint every "
                 "32 steps, 0.125 B); sum() reads s; backward reads x (recomputing the membranes per 32-step "
                 "segment; the spike gradient of sum() is one broadcast row, read from cache) and writes grad x "
                 "-- 5 passes of 4 B with the sum, 4 without it, against the roofline's 5 (which has no sum but "
                 "reads a full spike gradient)")
_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "SPIKESCAN_CPU_POOL", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_",
        "THP_MEM_ALLOC_ENABLE")


# --------------------------------------------------------------------------------------------
# implementations: each builds  x [T, ...] -> spikes [T, ...]
# --------------------------------------------------------------------------------------------


def peer_status(impl: str) -> str | None:
    """``None`` when ``impl`` can run, else why not (e.g. the peer package is not installed)."""
    if impl not in PEERS:
        return None
    module = PEERS[impl]
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return f"not installed (pip install {module.split('.')[0]}, or spikescan[peers])"
    try:
        importlib.import_module(module)
    except Exception as exc:  # installed but broken (missing dependency, ...)
        return f"import failed: {type(exc).__name__}: {exc}"
    return None


def make_neuron(impl: str, decay: float, threshold: float, device: torch.device,
                train: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The LIF layer of ``impl`` with decay ``k`` and threshold, hard reset to 0."""
    if impl == "fused":
        from spikescan.ops.lif import lif_fused

        return lambda x: lif_fused(x, decay, threshold, reset="zero", surrogate="fast_sigmoid")
    if impl == "reference":
        from spikescan.ops.lif import lif

        return lambda x: lif(x, decay, threshold, reset="zero", surrogate="fast_sigmoid", backend="sequential")
    if impl == "torch-loop":
        from spikescan.ops.firing import heaviside
        from spikescan.surrogate import FastSigmoid

        sg = FastSigmoid(25.0)

        def loop(x: torch.Tensor) -> torch.Tensor:
            v_post = x.new_zeros(())
            spikes = []
            for xt in x.unbind(0):
                v = decay * v_post + xt
                s = heaviside(v - threshold, sg)
                v_post = v * (1.0 - s)
                spikes.append(s)
            return torch.stack(spikes)

        return loop
    if impl == "snntorch":
        import snntorch
        from snntorch import surrogate

        layer = snntorch.Leaky(beta=decay, threshold=threshold, reset_mechanism="zero",
                               spike_grad=surrogate.fast_sigmoid(slope=25)).to(device)

        def snn(x: torch.Tensor) -> torch.Tensor:
            mem = layer.init_leaky()
            spikes = []
            for t in range(x.shape[0]):
                spk, mem = layer(x[t], mem)
                spikes.append(spk)
            return torch.stack(spikes)

        return snn
    if impl == "spikingjelly":
        from spikingjelly.activation_based import neuron

        node = neuron.LIFNode(tau=1.0 / (1.0 - decay), decay_input=False, v_threshold=threshold, v_reset=0.0,
                              step_mode="m").to(device)

        def sj(x: torch.Tensor) -> torch.Tensor:
            node.reset()
            return node(x)

        return sj
    if impl == "norse":
        import norse.torch as norse

        dt = 1e-3
        p = norse.LIFParameters(tau_mem_inv=torch.tensor((1.0 - decay) / dt, device=device),
                                tau_syn_inv=torch.tensor(1.0 / dt, device=device),
                                v_th=torch.tensor(threshold, device=device),
                                v_reset=torch.tensor(0.0, device=device), v_leak=torch.tensor(0.0, device=device))
        layer = norse.LIF(p=p, dt=dt).to(device)
        return lambda x: layer(x)[0]
    raise ValueError(f"unknown implementation {impl!r}; expected one of {IMPLS}")


# --------------------------------------------------------------------------------------------
# peak memory
# --------------------------------------------------------------------------------------------


def _vm_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Rise of the peak memory during one call of ``fn``, or ``None`` where it can't be measured.

    CUDA: ``max_memory_allocated`` over the allocated memory before.  CPU: the rise of the peak
    resident set (VmHWM, after resetting it through ``/proc/self/clear_refs``) over the resident
    set before -- which sees only memory that was not resident yet, so call it in a process
    whose heap has not served the same sizes before (:func:`step_peak_memory` does).
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
    except OSError:
        return None
    base = _vm_kib("VmRSS")
    fn()
    peak = _vm_kib("VmHWM")
    if base is None or peak is None:
        return None
    return max(0, peak - base) * 1024


def _memory_child(impl: str, B: int, N: int, T: int, seed: int, threads: int, device: str, queue) -> None:
    """In a fresh process: warm ``impl`` up on a short sequence (JIT, parameters), then measure one
    full training step on ``[T, B, N]``."""
    try:
        torch.set_num_threads(threads)
        dev = torch.device(device)
        neuron = make_neuron(impl, TRAIN["decay"], TRAIN["threshold"], dev, train=True)
        gen = torch.Generator(device=dev).manual_seed(seed)
        warm = torch.randn(4, B, N, generator=gen, device=dev).requires_grad_()
        _train_step(neuron, warm)()
        x = (torch.randn(T, B, N, generator=gen, device=dev) * 0.5 + 0.15).requires_grad_()
        queue.put(peak_memory_bytes(_train_step(neuron, x), dev))
    except Exception as exc:  # reported by the parent
        queue.put(f"{type(exc).__name__}: {exc}")


def step_peak_memory(impl: str, B: int, N: int, T: int, device: torch.device, seed: int = 0,
                     timeout_s: float = 900.0) -> int | None:
    """Peak memory (bytes beyond the input) of one training step of ``impl``, measured in a fresh
    process (spawned, so no heap or buffer pool of this process hides allocations)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(impl, B, N, T, seed, torch.get_num_threads(), str(device), queue))
    proc.start()
    try:
        result = queue.get(timeout=timeout_s)
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    if isinstance(result, str):
        raise RuntimeError(result)
    return result


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _flat(groups) -> list[int]:
    return sorted({int(v) for g in groups for v in (g if isinstance(g, (list, tuple)) else [g])})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``spikescan bench lif``."""
    parser.add_argument("--parts", nargs="+", choices=("forward", "train"), default=["forward", "train"],
                        help="(a) the 1M-neuron forward table and/or (b) the training step (default: both)")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS),
                        help="implementations to time (default: all; peers that are not installed are skipped)")
    parser.add_argument("--neurons", type=int, default=1_000_000, help="(a) neurons in the layer (default 1e6)")
    parser.add_argument("--t-forward", type=C.positive_ints, nargs="+", default=[list(DEFAULT_T_FWD)], metavar="T",
                        help="(a) sequence lengths (default 8 16 32 64 128)")
    parser.add_argument("--batch", type=int, default=32, help="(b) batch size B (default 32)")
    parser.add_argument("--hidden", type=C.positive_ints, nargs="+", default=[list(DEFAULT_HIDDEN)], metavar="N",
                        help="(b) neurons per sample (default 128 256 512 1024)")
    parser.add_argument("--t-train", type=C.positive_ints, nargs="+", default=[list(DEFAULT_T_TRAIN)], metavar="T",
                        help="(b) sequence lengths (default 100 1000)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the peak memory of one training step at --memory-case (default on)")
    parser.add_argument("--memory-case", type=C.positive_ints, default=[32, 256, 1000], metavar="B,N,T",
                        help="training case of the peak-memory row (default 32,256,1000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case, median reported (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per case before timing (default 1)")
    parser.add_argument("--budget-s", type=float, default=60.0,
                        help="skip a case whose time, extrapolated from the previous T, exceeds this; stop "
                             "repeating once a case used it (default 60)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("bench_results", "lif"),
                        help="output folder for results.json and lif.png (default bench_results/lif)")


def _validate(args: argparse.Namespace) -> None:
    C.check_run_options(args, ("neurons", "batch", "repeats"))
    if len(args.memory_case) != 3:
        raise ValueError(f"--memory-case must be B,N,T, got {args.memory_case}")


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by ``args``; print the tables, write JSON + PNG; return the results."""
    _validate(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = C.resolve_device(args.device)
    started = time.perf_counter()
    impls = [i for i in IMPLS if i in args.impls]
    unavailable = {i: why for i in impls if (why := peer_status(i)) is not None}
    runnable = [i for i in impls if i not in unavailable]
    name = C.cpu_model() if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"bench lif on {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"implementations: {runnable}")
    for impl, why in unavailable.items():
        print(f"  {impl}: skipped, {why}")
    env = {k: os.environ.get(k) for k in _ENV}
    if device.type == "cpu" and (env["OMP_WAIT_POLICY"] or "").upper() != "PASSIVE":
        print("  note: OMP_WAIT_POLICY is not PASSIVE; spinning OpenMP threads may slow the fused CPU kernels "
              "(see the module docstring)")
    machine = C.machine_info(device)
    bandwidth = C.measure_copy_bandwidth(device)
    print(f"copy bandwidth (read + write): {bandwidth / 1e9:.2f} GB/s", flush=True)
    budget = C.BudgetTracker(args.budget_s, calls_per_case=args.warmup + args.repeats)
    element = 4  # float32 throughout

    results: dict[str, Any] = {
        "benchmark": "lif",
        "config": {
            "parts": list(args.parts), "implementations": runnable, "unavailable": unavailable,
            "neurons": args.neurons, "t_forward": _flat(args.t_forward), "batch": args.batch,
            "hidden": _flat(args.hidden), "t_train": _flat(args.t_train), "repeats": args.repeats,
            "warmup": args.warmup, "budget_s": args.budget_s, "device": str(device), "dtype": "float32",
            "threads": args.threads, "seed": args.seed, "forward_constants": PAPER, "train_constants": TRAIN,
            "reset": "zero (hard reset to 0)",
            "train_step": "forward + backward of sum(spikes) w.r.t. the input currents", "env": env,
        },
        "machine": machine,
        "copy_bandwidth_bytes_per_s": bandwidth,
    }
    if "forward" in args.parts:
        results["forward"] = _forward_table(args, runnable, device, budget, bandwidth, element)
    if "train" in args.parts:
        results["train"] = _train_table(args, runnable, device, budget, bandwidth, element)
        if args.memory:
            results["memory"] = _memory_row(args, runnable, device, results["train"])
    results["machine"]["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["total_wall_s"] = time.perf_counter() - started

    out = os.fspath(args.out)
    results["files"] = {"json": os.path.join(out, "results.json"), "png": os.path.join(out, "lif.png")}
    print()
    print(format_report(results))
    _plot(results, results["files"]["png"])
    C.write_json_atomic(results["files"]["json"], results)
    print(f"\nwrote {results['files']['json']} and {results['files']['png']}")
    return results


def _time_case(key: str, size: float, label: str, step: Callable[[], Any], args, device, budget) -> dict[str, Any]:
    skip, est = budget.should_skip(key, size)
    if skip:
        budget.record(key, size, est / budget.calls_per_case)
        print(f"{label} skipped: estimated {est:.1f}s > budget {args.budget_s:g}s", flush=True)
        return {"status": "skipped", "estimate_s": est}
    try:
        timing = C.time_fn(step, device, warmup=args.warmup, repeats=args.repeats, max_total_s=args.budget_s)
    except Exception as exc:  # one broken implementation must not lose the other results
        print(f"{label} ERROR: {type(exc).__name__}: {exc}", flush=True)
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    budget.record(key, size, timing.median_s)
    entry = {"status": "ok", **timing.to_dict()}
    print(f"{label} {C.fmt_seconds(timing.median_s):>10s}  (IQR {C.fmt_seconds(timing.iqr_s)}, "
          f"{len(timing.times_s)} repeats)", flush=True)
    return entry


def _forward_table(args, impls, device, budget, bandwidth, element) -> dict[str, Any]:
    t_values = _flat(args.t_forward)
    neurons = {i: make_neuron(i, PAPER["decay"], PAPER["threshold"], device, train=False) for i in impls}
    gen = torch.Generator(device=device).manual_seed(args.seed)
    cases: dict[str, list] = {i: [] for i in impls}
    roof = []
    for T in t_values:
        x = torch.rand(T, args.neurons, generator=gen, device=device) * 0.5  # mean 0.25: fires now and then
        nbytes = FWD_BYTES_PASSES * T * args.neurons * element
        roof.append({"T": T, "bytes": nbytes, "seconds": C.roofline_seconds(nbytes, bandwidth)})
        for impl in impls:
            def step(f=neurons[impl]):
                with torch.no_grad():
                    return f(x)

            entry = _time_case(f"fwd/{impl}", T, f"forward N={args.neurons} T={T:<4d} {impl:<13s}", step, args,
                               device, budget)
            cases[impl].append({"T": T, **entry})
            gc.collect()
        del x
        gc.collect()
    return {"t_values": t_values, "cases": cases, "roofline": roof,
            "roofline_formula": f"{FWD_BYTES_PASSES} * T * N * 4 bytes (read x, write spikes)"}


def _train_step(neuron, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        neuron(x).sum().backward()

    return step


def _train_table(args, impls, device, budget, bandwidth, element) -> dict[str, Any]:
    hidden, t_values = _flat(args.hidden), _flat(args.t_train)
    neurons = {i: make_neuron(i, TRAIN["decay"], TRAIN["threshold"], device, train=True) for i in impls}
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    cases: dict[str, dict[str, list]] = {i: {str(n): [] for n in hidden} for i in impls}
    roof: dict[str, list] = {str(n): [] for n in hidden}
    for T in t_values:
        for n in hidden:
            x = (torch.randn(T, args.batch, n, generator=gen, device=device) * 0.5 + 0.15).requires_grad_()
            nbytes = TRAIN_BYTES_PASSES * T * args.batch * n * element
            roof[str(n)].append({"T": T, "bytes": nbytes, "seconds": C.roofline_seconds(nbytes, bandwidth)})
            for impl in impls:
                entry = _time_case(f"train/{impl}/{n}", T, f"train B={args.batch} N={n:<5d} T={T:<5d} {impl:<13s}",
                                   _train_step(neurons[impl], x), args, device, budget)
                cases[impl][str(n)].append({"T": T, **entry})
                x.grad = None
                gc.collect()
            del x
    return {"hidden": hidden, "t_values": t_values, "cases": cases, "roofline": roof,
            "roofline_formula": f"{TRAIN_BYTES_PASSES} * T * B * N * 4 bytes (read x, write s; backward: read x, "
                                "read grad s, write grad x)"}


def _memory_row(args, impls, device, train: dict[str, Any]) -> dict[str, Any]:
    B, N, T = args.memory_case
    # don't measure what the timing skipped or failed (one call could take minutes)
    timed = {impl: {(e["T"], n): e["status"] for n, es in by_n.items() for e in es}
             for impl, by_n in train["cases"].items()} if B == args.batch else {}
    out: dict[str, Any] = {"case": {"B": B, "N": N, "T": T}, "bytes": {}, "input_bytes": T * B * N * 4,
                           "method": "one training step in a fresh process after a warm-up on T=4; CPU: rise of "
                                     "the peak resident set (VmHWM, reset via /proc/self/clear_refs) over the "
                                     "resident set before the step; CUDA: max_memory_allocated rise"}
    for impl in impls:
        status = timed.get(impl, {}).get((T, str(N)))
        if status is not None and status != "ok":
            out["bytes"][impl] = None
            print(f"memory {impl:<13s} not measured (timing case was {status})", flush=True)
            continue
        try:
            b = step_peak_memory(impl, B, N, T, device, args.seed + 2)
        except Exception as exc:
            b = None
            print(f"memory {impl:<13s} ERROR: {type(exc).__name__}: {exc}", flush=True)
        out["bytes"][impl] = b
        print(f"memory B={B} N={N} T={T} {impl:<13s} peak {'-' if b is None else f'{b / 2**20:.1f} MiB'}",
              flush=True)
    return out


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _median(entry: dict[str, Any]) -> float | None:
    return entry["median_s"] if entry.get("status") == "ok" else None


def _cell(entry: dict[str, Any]) -> str:
    if entry["status"] == "ok":
        return C.fmt_seconds(entry["median_s"])
    if entry["status"] == "skipped":
        return f"skip(~{entry['estimate_s']:.0f}s)"
    return "error"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if (a is not None and b is not None and b > 0) else None


def _rows(cases: dict[str, list], roof: list[dict], impls: list[str]) -> list[list[str]]:
    """Times per implementation, the roofline, fused over the roofline and each impl over fused."""
    rows = [[impl] + [_cell(e) for e in cases[impl]] for impl in impls]
    rows.append(["ROOFLINE"] + [C.fmt_seconds(r["seconds"]) for r in roof])
    if "fused" in cases:
        fused = [_median(e) for e in cases["fused"]]
        rows.append(["fused/ROOFLINE"] + [C.fmt_ratio(_ratio(f, r["seconds"])) for f, r in zip(fused, roof)])
        for impl in impls:
            if impl != "fused":
                rows.append([f"{impl}/fused"] + [C.fmt_ratio(_ratio(_median(e), f))
                                                  for e, f in zip(cases[impl], fused)])
    return rows


def format_report(results: dict[str, Any]) -> str:
    """The text tables of (a) the forward, (b) the training step and the peak-memory row."""
    cfg = results["config"]
    impls = cfg["implementations"]
    where = f"{results['machine']['torch_num_threads']} threads, {cfg['device']}, float32"
    blocks = []
    if "forward" in results:
        fw = results["forward"]
        title = (f"(a) FORWARD (no autograd), one LIF layer of {cfg['neurons']:,} neurons, k={PAPER['decay']}, "
                 f"V_th={PAPER['threshold']}, V_rest=0; median of {cfg['repeats']}; {where}")
        blocks.append(title + "\n" + C.format_table(["T"] + [str(t) for t in fw["t_values"]],
                                                    _rows(fw["cases"], fw["roofline"], impls)))
    if "train" in results:
        tr = results["train"]
        for k, T in enumerate(tr["t_values"]):
            cases = {i: [tr["cases"][i][str(n)][k] for n in tr["hidden"]] for i in impls}
            roof = [tr["roofline"][str(n)][k] for n in tr["hidden"]]
            title = (f"(b) TRAINING STEP (forward + backward of sum(spikes)), B={cfg['batch']}, T={T}, "
                     f"decay={TRAIN['decay']}, threshold={TRAIN['threshold']}; median of {cfg['repeats']}; {where}")
            blocks.append(title + "\n" + C.format_table(["N"] + [str(n) for n in tr["hidden"]],
                                                        _rows(cases, roof, impls)))
    if "memory" in results:
        mem = results["memory"]
        case = mem["case"]
        fused = mem["bytes"].get("fused")
        rows = [[impl, "-" if b is None else f"{b / 2**20:.1f} MiB", C.fmt_ratio(_ratio(b, fused))]
                for impl, b in mem["bytes"].items()]
        blocks.append(f"PEAK MEMORY of one training step beyond its input, B={case['B']}, N={case['N']}, "
                      f"T={case['T']} (input {mem['input_bytes'] / 2**20:.1f} MiB); {mem['method']}\n"
                      + C.format_table(["implementation", "peak", "x fused"], rows))
    bw = results["copy_bandwidth_bytes_per_s"]
    blocks.append(f"ROOFLINE = bytes that must move at the copy bandwidth measured in this run ({bw / 1e9:.2f} GB/s "
                  f"read+write): (a) {results.get('forward', {}).get('roofline_formula', '-')}; "
                  f"(b) {results.get('train', {}).get('roofline_formula', '-')}.  X/fused = how many times "
                  f"slower X is than the fused kernel.  (b) {FUSED_TRAFFIC}.")
    if cfg["unavailable"]:
        blocks.append("not run: " + "; ".join(f"{i}: {why}" for i, why in cfg["unavailable"].items()))
    return "\n\n".join(blocks)


def _plot(results: dict[str, Any], path: str) -> None:
    parts = [p for p in ("forward", "train") if p in results]
    fig, axes = C.new_figure(ncols=max(1, len(parts)))
    colors: dict[str, str] = {}
    for ax, part in zip(axes[0], parts):
        res = results[part]
        if part == "forward":
            series = [(impl, "-", "o", res["cases"][impl]) for impl in res["cases"]]
            roofs = [("-", res["roofline"])]
            ax.set(title=f"(a) forward, {results['config']['neurons']:,} neurons", xlabel="T")
        else:
            n = str(results["memory"]["case"]["N"]) if "memory" in results else str(res["hidden"][0])
            n = n if n in res["roofline"] else str(res["hidden"][0])
            series = [(impl, "-", "o", res["cases"][impl][n]) for impl in res["cases"]]
            roofs = [("-", res["roofline"][n])]
            ax.set(title=f"(b) training step, B={results['config']['batch']}, N={n}", xlabel="T")
        for impl, ls, mk, entries in series:
            ok = [e for e in entries if e["status"] == "ok"]
            if ok:
                line = ax.plot([e["T"] for e in ok], [e["median_s"] for e in ok], linestyle=ls, marker=mk,
                               markersize=4, label=impl, color=colors.get(impl))
                colors.setdefault(impl, line[0].get_color())
        for ls, roof in roofs:
            ax.plot([r["T"] for r in roof], [r["seconds"] for r in roof], ":", color="k", label="roofline")
        ax.set(xscale="log", yscale="log", ylabel="time [s] (median)")
        ax.legend(fontsize=7)
    m = results["machine"]
    fig.suptitle(f"bench lif — {C.machine_title(m)}, "
                 f"torch {m['torch']}", fontsize=9)
    C.save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return C.run_main("lif", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
