"""`bidrn bench model`: whole-model latency and peak memory of .pte files, BiDRN against full precision.

Latency: all programs load in one process (ExecuTorch's threadpool is sized before loading, so each thread
count gets a fresh process), run ``warmup`` times each, then ``runs`` interleaved rounds (A, B, A, B, ...) so
that load swings on a shared machine hit every program alike; median and p90 per program. What is timed is
the program's ``execute`` (:func:`load_forward`): the outputs are not copied into new tensors and Python's
garbage collector is off while timing (:func:`timing`), as ``timeit`` does.
Profile (``bidrn bench profile``): one program loaded with ExecuTorch's event tracer (ETDump); per event the
median over the runs, summed by kind: XNNPACK operators by name ("Convolution (NHWC, F32) IGEMM"), portable
kernels ("portable grid_sampler_2d"), and the bidrn:: ops by geometry ("bidrn::binary_conv2d 3x3/1 64->64
64x48 +res"), each with its share of the whole execute.
Memory: each program in its own fresh process: resident set before loading, after loading, and the peak
after running (``ru_maxrss``); ``peak_mb`` is the peak above the before-load baseline (interpreter, torch and
ExecuTorch libraries excluded, the program file, planned activations and delegate workspaces included).
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _setup(threads: int):
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    import torch

    from mobile_export import kernel_library

    _unsafe_reset_threadpool(threads)  # before any program loads: resetting later crashes
    torch.set_num_threads(threads)  # or torch's own threads compete with ExecuTorch's
    kernel_library.load()


def _input_for(method):
    return _input_for_shape(method.metadata.input_tensor_meta(0).sizes())


def load_forward(path: str | Path):
    """``(forward, input_sizes)`` of a .pte for timing: ``forward(x)`` runs the program's forward method on
    one input tensor and drops the outputs where ExecuTorch left them.

    ExecuTorch's pybindings module is used with ``clone_outputs=False``: the ``executorch.runtime`` API copies
    every output into a freshly allocated tensor on every call, which is the harness's time, not the
    program's (0.07 ms, 12 %, of the 0.6 ms binary reference layer with its 0.8 MB output; nothing measurable
    on a whole model). Where the program's input is memory-planned (the exported models), it is copied into
    the planned buffer, as any caller's would be; `bench kernels`' layer programs leave theirs unplanned and
    are read in place (bench_kernels._lower). Needs the kernel library loaded for programs with bidrn:: ops."""
    from executorch.extension.pybindings import portable_lib

    with loading(path):
        module = portable_lib._load_for_executorch(str(path))
        sizes = tuple(module.method_meta("forward").input_tensor_meta(0).sizes())
    return (lambda x: module.forward([x], clone_outputs=False)), sizes


class ProgramLoadError(ValueError):
    """ExecuTorch could not load a program that passed export.check_pte (a truncated or damaged file)."""


_LOAD_FAILED = 3  # a worker's exit status when its program did not load; stderr's last line says why


@contextlib.contextmanager
def loading(path):
    """Loading ``path`` in this block: ExecuTorch's RuntimeError becomes a ProgramLoadError that names the file."""
    try:
        yield
    except RuntimeError as exc:
        raise ProgramLoadError(f"{path}: ExecuTorch could not load its forward method ({exc}); the file may be "
                               f"truncated or damaged: export it again (`bidrn export NAME --out {path}`)") from exc


@contextlib.contextmanager
def timing():
    """Python's garbage collector off for a timed loop (as ``timeit`` does): a collection triggered by the
    loop's own allocations otherwise lands inside whichever run is being timed."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _time_worker(paths: list[str], threads: int, runs: int, warmup: int) -> list[dict]:
    _setup(threads)
    loaded = [load_forward(p) for p in paths]
    forwards = [f for f, _ in loaded]
    inputs = [_input_for_shape(sizes) for _, sizes in loaded]
    for forward, x in zip(forwards, inputs):
        for _ in range(warmup):  # the first executes are 1.3-3x slower
            forward(x)
    from mobile_export import kernel_library

    times: list[list[float]] = [[] for _ in paths]
    probes = []
    with timing():
        for _ in range(runs):
            probes.append(kernel_library.probe())  # the core's state before this round
            for i, (forward, x) in enumerate(zip(forwards, inputs)):
                t0 = time.perf_counter()
                forward(x)
                times[i].append((time.perf_counter() - t0) * 1e3)
        probes.append(kernel_library.probe())  # and after the last
    core = {key: [p[key] for p in probes] for key in probes[0]}
    return [{"median_ms": statistics.median(t), "p90_ms": statistics.quantiles(t, n=10)[-1],
             "min_ms": min(t), "mean_ms": statistics.fmean(t), "times_ms": t, "core": core} for t in times]


def at_speed(core: dict, share: float = 0.75) -> list[bool]:
    """Which rounds ran with the core at the run's best. ``core`` holds the probes taken before each round and
    after the last (one more than the rounds); a probe is at the best where the ALUs' rate (``adds_per_cycle``)
    is at least ``share`` of the run's highest and, where there is a tile unit, the tile rate at least
    ``share`` of the run's fastest; a round is at speed where the probes on both sides of it are. On this
    project's 2-core VMs the slow stretches are another tenant on the same core (SMT), seen as about half
    the adds a cycle at the same clock (docs/export.md). Relative to the run itself, so a run that is slowed
    throughout has all its rounds "at speed": read the adds a cycle beside it."""
    rates, tiles = core["adds_per_cycle"], core["tile_ns"]
    top = max(rates)
    fastest = min((t for t in tiles if t), default=None)
    ok = [r >= share * top and (fastest is None or not t or fastest / t >= share) for r, t in zip(rates, tiles)]
    return [before and after for before, after in zip(ok, ok[1:])]


def core_summary(core: dict) -> str:
    """'clock 2.5-2.7 GHz, 2.0-4.0 adds a cycle (median 3.9), tile unit 5.9-7.5 ns per tdpbssd (median 6.2)'."""
    clocks, rates = core["clock_ghz"], core["adds_per_cycle"]
    text = (f"clock {min(clocks):.1f}-{max(clocks):.1f} GHz, {min(rates):.1f}-{max(rates):.1f} adds a cycle "
            f"(median {statistics.median(rates):.1f})")
    tiles = [t for t in core["tile_ns"] if t]
    if tiles:
        text += f", tile unit {min(tiles):.1f}-{max(tiles):.1f} ns per tdpbssd (median {statistics.median(tiles):.1f})"
    return text


def _memory_worker(path: str, threads: int) -> dict:
    _setup(threads)
    from executorch.runtime import Runtime

    before = _rss_mb()
    with loading(path):
        method = Runtime.get().load_program(path).load_method("forward")
    loaded = _rss_mb()
    method.execute([_input_for(method)])
    return {"rss_before_load_mb": before, "load_mb": loaded - before, "peak_mb": _peak_rss_mb() - before}


_WRAPPERS = {"OPERATOR_CALL", "DELEGATE_CALL", "Method::execute"}


def _event_kind(name: str, delegated: bool) -> tuple[str, str] | None:
    """(kind, group) of an ETDump event, or None for the wrappers that contain other events."""
    if name in _WRAPPERS or (name.startswith("bidrn::") and name.endswith(".out")):
        return None
    if name.startswith("bidrn::"):
        return "bidrn", name
    if delegated:
        return "xnnpack", re.sub(r" #\d+$", "", name)
    if name.startswith("native_call_"):
        return "portable", "portable " + name[len("native_call_"):].split(".")[0]
    return "other", name


def _profile_worker(path: str, threads: int, runs: int, warmup: int) -> dict:
    _setup(threads)
    import tempfile

    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    with loading(path):
        module = portable_lib._load_for_executorch(path, enable_etdump=True, debug_buffer_size=0)
        x = _input_for_shape(module.method_meta("forward").input_tensor_meta(0).sizes())
    for _ in range(warmup):
        module.forward([x])
    with tempfile.TemporaryDirectory(prefix="bidrn-profile-") as tmp:
        # The tracer keeps every run since loading; the warm-up runs are dropped below by position.
        for _ in range(runs):
            module.forward([x])
        etdump = Path(tmp) / "run.etdp"
        module.write_etdump_result_to_file(str(etdump))
        inspector = Inspector(etdump_path=str(etdump))
    block = [b for b in inspector.event_blocks if b.name == "Execute"][-1]
    groups: dict[tuple[str, str], list[float]] = {}
    execute_ms = 0.0
    for event in block.events:
        raw = list(event.perf_data.raw)[warmup:] if event.perf_data else []
        if not raw:
            continue
        ms = statistics.median(raw)
        if event.name == "Method::execute":
            execute_ms = ms
        key = _event_kind(event.name, bool(event.is_delegated_op))
        if key is not None:
            groups.setdefault(key, [0.0, 0])
            groups[key][0] += ms
            groups[key][1] += 1
    rows = [{"kind": k, "event": g, "ms": v[0], "count": v[1], "share": v[0] / execute_ms if execute_ms else 0.0}
            for (k, g), v in sorted(groups.items(), key=lambda kv: -kv[1][0])]
    kinds = {}
    for r in rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0.0) + r["ms"]
    return {"pte": path, "threads": threads, "runs": runs, "execute_ms": execute_ms, "by_kind_ms": kinds,
            "events": rows}


def _input_for_shape(sizes):
    import torch

    return torch.rand(tuple(sizes), generator=torch.Generator().manual_seed(0))


def _worker(*args: str) -> list | dict:
    mode, threads = args[0], int(args[1])
    if mode == "time":
        return _time_worker(list(args[4:]), threads, int(args[2]), int(args[3]))
    if mode == "profile":
        return _profile_worker(args[4], threads, int(args[2]), int(args[3]))
    return _memory_worker(args[2], threads)


def _child(*args) -> list | dict:
    cmd = [sys.executable, "-m", "mobile_export.bench_model", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode == _LOAD_FAILED:
        raise ProgramLoadError(done.stderr.strip().splitlines()[-1])
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({' '.join(cmd[3:])}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _model_name(path: Path) -> str:
    sidecar = Path(str(path) + ".json")
    return json.loads(sidecar.read_text()).get("model", path.stem) if sidecar.exists() else path.stem


def _check_pte(path: str | Path) -> Path:
    from mobile_export.export import check_pte  # torch-heavy; only the parent process needs it

    return check_pte(path)


def run(ptes: list[str | Path], threads: int = 1, runs: int = 30, warmup: int = 3, log=print) -> list[dict]:
    """One row per .pte: model, bytes, median / p90 / min / mean ms, memory (module docstring).

    With two programs [A, B] (A BiDRN, B the full-precision baseline), A's row also gets ``speedup_vs`` =
    B median / A median, ``p90_speedup_vs`` likewise, ``paired_speedup_vs`` = the median over rounds of
    B's time / A's time in the same round (the two runs are next to each other, so a slow minute of a shared
    machine slows both: steadier than the ratio of medians when the load changes during the benchmark),
    ``min_speedup_vs`` = B min / A min (the fastest runs: the two programs with the least interference from
    other tenants, an upper estimate of the quiet-machine ratio), and ``bytes_ratio_vs`` = A bytes / B bytes.
    Every row keeps its per-round times (``times_ms``) and the core's state probed around the rounds (``core``:
    ``clock_ghz``, ``adds_per_cycle`` and ``tile_ns`` lists, :func:`mobile_export.kernel_library.probe`); A's
    row splits the rounds' ratios by it: ``paired_speedup_at_speed`` over the ``rounds_at_speed`` rounds with
    the core at the run's best (:func:`at_speed`), ``paired_speedup_core_shared`` over the
    ``rounds_core_shared`` others (None where there are none).
    """
    paths = [_check_pte(p) for p in ptes]
    if runs < 2:
        raise ValueError(f"runs must be >= 2 for a p90, got {runs}")
    log(f"timing {', '.join(map(str, paths))}: {warmup} warm-up + {runs} interleaved runs, {threads} thread(s)")
    timing = _child("time", threads, runs, warmup, *paths)
    rows = []
    for p, t in zip(paths, timing):
        log(f"memory of {p}")
        rows.append({"pte": str(p), "model": _model_name(p), "bytes": p.stat().st_size, "threads": threads,
                     "runs": runs, **t, **_child("memory", threads, p)})
    if len(rows) == 2:
        a, b = rows
        a["vs"] = b["pte"]
        a["speedup_vs"] = b["median_ms"] / a["median_ms"]
        a["p90_speedup_vs"] = b["p90_ms"] / a["p90_ms"]
        ratios = [tb / ta for ta, tb in zip(a["times_ms"], b["times_ms"])]
        a["paired_speedup_vs"] = statistics.median(ratios)
        fast = at_speed(a["core"])
        for key, keep in (("paired_speedup_at_speed", True), ("paired_speedup_core_shared", False)):
            picked = [r for r, f in zip(ratios, fast) if f == keep]
            a[key] = statistics.median(picked) if picked else None
            a[key.replace("paired_speedup", "rounds")] = len(picked)
        a["min_speedup_vs"] = b["min_ms"] / a["min_ms"]
        a["bytes_ratio_vs"] = a["bytes"] / b["bytes"]
    return rows


def profile(pte: str | Path, threads: int = 1, runs: int = 10, warmup: int = 3) -> dict:
    """Where one program's time goes (module docstring): execute_ms, by_kind_ms (bidrn / xnnpack / portable /
    other) and events, one row per group with ms (sum of per-event medians), count and share."""
    p = _check_pte(pte)
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    return _child("profile", threads, runs, warmup, p)


def format_profile(result: dict, top: int = 25) -> str:
    total = result["execute_ms"]
    kinds = ", ".join(f"{k} {ms:.1f} ms ({100 * ms / total:.0f}%)" for k, ms in
                      sorted(result["by_kind_ms"].items(), key=lambda kv: -kv[1]))
    lines = [f"{result['pte']}: {total:.2f} ms per execute (median of {result['runs']} runs, "
             f"{result['threads']} thread(s)); {kinds}",
             f"{'ms':>8s} {'share':>6s} {'n':>4s}  event"]
    for r in result["events"][:top]:
        lines.append(f"{r['ms']:8.2f} {100 * r['share']:5.1f}% {r['count']:4d}  {r['event']}")
    if len(result["events"]) > top:
        rest = result["events"][top:]
        lines.append(f"{sum(r['ms'] for r in rest):8.2f} {100 * sum(r['share'] for r in rest):5.1f}% "
                     f"{sum(r['count'] for r in rest):4d}  ({len(rest)} more groups)")
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    lines = [f"{'model':24s} {'MB':>8s} {'median ms':>10s} {'p90 ms':>8s} {'min ms':>8s} {'peak MB':>8s}  ({rows[0]['threads']} "
             f"thread(s), {rows[0]['runs']} runs)"]
    for r in rows:
        lines.append(f"{r['model']:24s} {r['bytes'] / 1e6:8.2f} {r['median_ms']:10.2f} {r['p90_ms']:8.2f} "
                     f"{r['min_ms']:8.2f} {r['peak_mb']:8.1f}")
    a = rows[0]
    if "speedup_vs" in a:
        lines.append(f"{a['model']} vs {rows[1]['model']}: {a['speedup_vs']:.2f}x faster (median), "
                     f"{a['paired_speedup_vs']:.2f}x (median of the rounds' ratios), {a['p90_speedup_vs']:.2f}x "
                     f"(p90), {a['min_speedup_vs']:.2f}x (fastest runs), {100 * a['bytes_ratio_vs']:.1f}% of the bytes")
    if "core" in a:
        lines.append(f"core during the rounds: {core_summary(a['core'])}")
    if a.get("rounds_core_shared"):
        at_speed_text = (f"{a['paired_speedup_at_speed']:.2f}x over the {a['rounds_at_speed']} rounds at the run's best"
                         if a["rounds_at_speed"] else "no round at the run's best")
        lines.append(f"rounds' ratios by the core's state: {at_speed_text}, {a['paired_speedup_core_shared']:.2f}x "
                     f"over the {a['rounds_core_shared']} with the core shared")
    return "\n".join(lines)


if __name__ == "__main__":
    # Worker mode (used by run / profile): time THREADS RUNS WARMUP PTE... | profile THREADS RUNS WARMUP PTE |
    # memory THREADS PTE -> one JSON line.
    try:
        result = _worker(*sys.argv[1:])
    except ProgramLoadError as exc:
        print(exc, file=sys.stderr)
        sys.exit(_LOAD_FAILED)
    print(json.dumps(result))
