"""`bidrn bench phone`: binary conv layers on one core of a phone, against that core's popcount ceiling.

    bidrn bench phone [--adb [SERIAL] | --qemu CPU | --host] [--cpu N] [--layers NAME,...|all|bidrn]
                      [--shape [NAME=]N,C,H,W,O,K,S,P]... [--path NAME|all] [--seconds S] [--json] [--out FILE]
                      [--plot FILE.png]

PERFORMANCE.md's phone target is a fraction of the popcount ceiling (at least 70 %, above daBNN's 66 % on a
Pixel 1), so the measurement is a stand-alone program, not a .pte: ``bidrn_kernel_bench``
(mobile_export/kernels/kernel_bench.cpp) runs the NEON kernels of the ExecuTorch ops with no runtime around
them, one core, and measures the ceiling on that core in the same rounds (the path's count in a
register-only loop: eor + cnt + add per 128 bits, 85 binary MACs a cycle on a core with two 128-bit pipes
such as the Cortex-A76, 171 with four). This module builds it (static, for aarch64: Debian's
``g++-aarch64-linux-gnu`` on x86, the native compiler on an Arm host), cached by a hash of the kernel
sources, and runs it:

- ``--adb [SERIAL]`` (default): pushes it to ``/data/local/tmp`` of the phone adb sees (or SERIAL) and runs
  it there, optionally pinned to ``--cpu N`` (a big core: phones number them last);
- ``--qemu CPU``: under ``qemu-aarch64 -cpu CPU`` here, to check the build and the dispatch (``max`` has
  dotprod, ``cortex-a53`` has not); emulated timings say nothing about a core, and the report says so;
- ``--host``: the same program built for this machine (its x86 paths: ``amx``, ``avx512``, ``avx2``).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
from pathlib import Path

from bidrn.io import atomic_write
from mobile_export import kernel_library

BINARY = kernel_library.BENCH_NAME
CROSS_CXX = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
DEVICE_DIR = "/data/local/tmp"
TARGET_FRACTION = 0.70  # PERFORMANCE.md: on a phone, at least 70 % of the popcount ceiling
DABNN_FRACTION = 0.66   # daBNN's 28 x 28 x 128 3 x 3 layer on a Pixel 1 (PERFORMANCE.md)
RUNNERS = ("adb", "qemu", "host")


def _on_arm() -> bool:
    return platform.machine().lower() in {"aarch64", "arm64"}


def cross_compiler(what: str) -> tuple[str, list[str]]:
    """(compiler, CMake arguments) that build `what` for aarch64 on this x86 machine: Debian's cross compiler."""
    compiler = shutil.which(CROSS_CXX)
    if not compiler:
        raise FileNotFoundError(f"building {what} for aarch64 needs `{CROSS_CXX}` on PATH; install it with "
                                "apt-get install --no-install-recommends g++-aarch64-linux-gnu")
    return compiler, ["-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64"]


def build_tree(arch: str = "aarch64") -> Path:
    """The build folder of the stand-alone programs for `arch` ('aarch64': static, for a phone or qemu; 'host':
    this machine): bidrn_kernel_bench, bidrn_selftest and (aarch64) the app archive libbidrn_et_kernels_static.a,
    their shared objects compiled once, into the kernel cache (kernel_library.cache_dir()) on first use and
    reused while the sources and compiler are the same."""
    if arch not in ("aarch64", "host"):
        raise ValueError(f"arch must be 'aarch64' or 'host', got {arch!r}")
    args: list[str] = []
    if arch == "host" or _on_arm():
        compiler = kernel_library._compiler()
        args.append("-DBIDRN_SELFTEST_STATIC=ON" if arch == "aarch64" else "-DBIDRN_SELFTEST_STATIC=OFF")
    else:
        compiler, args = cross_compiler(BINARY)
        args.append("-DBIDRN_SELFTEST_STATIC=ON")
    root = kernel_library.executorch_root()  # its headers, for the app archive
    args += [f"-DCMAKE_CXX_COMPILER={compiler}", f"-DEXECUTORCH_ROOT={root}"]
    h = hashlib.sha256(f"{arch}\0{os.path.realpath(compiler)}\0{root}\0".encode())
    kernel_library.hash_sources(h)
    targets = [BINARY, "bidrn_selftest"] + (["bidrn_et_kernels_static"] if arch == "aarch64" else [])
    return kernel_library.build_once(kernel_library.cache_dir() / f"standalone-{arch}-{h.hexdigest()[:16]}",
                                     lambda folder: kernel_library.cmake_build(folder / "tree", targets, *args))


def build(arch: str = "aarch64") -> Path:
    """The bench program for `arch`: the aarch64 one of build_tree, or the host one that the kernel library's
    own build leaves beside it (no second compile of the same kernels)."""
    if arch == "host":
        bench = kernel_library.library_path().with_name(kernel_library.BENCH_NAME)
        if bench.exists():
            return bench
    return build_tree(arch) / BINARY


def bidrn_shapes() -> list[str]:
    """BiDRN's binary convs (mobile_export.layer_shapes, as `bidrn bench kernels` times them) as the program's
    ``NAME=N,C,H,W,O,K,S,P`` shapes."""
    from mobile_export.layer_shapes import BIDRN_LAYERS

    return [f"{l.name}={l.batch},{l.in_channels},{l.height},{l.width},{l.out_channels},{l.kernel},{l.stride},"
            f"{l.padding}" for l in BIDRN_LAYERS if l.kind == "conv"]


def bench_args(layers: list[str] | None = None, shapes: list[str] | None = None, path: str | None = None,
               seconds: float = 2.0, cpu: int | None = None) -> list[str]:
    """The program's command line (it checks the values itself and says what it expected). The layer name
    ``bidrn`` stands for every binary conv of BiDRN (bidrn_shapes)."""
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    args = ["--seconds", repr(float(seconds)), "--json"]
    if layers and "bidrn" in layers:
        layers = [l for l in layers if l != "bidrn"]
        shapes = [*bidrn_shapes(), *(shapes or [])]
    if layers:
        args += ["--layers", ",".join(layers)]
    for shape in shapes or []:
        args += ["--shape", shape]
    if path:
        args += ["--path", path]
    if cpu is not None:
        args += ["--cpu", str(cpu)]
    return args


class BenchRunError(ValueError):
    """The runner or the program failed (no phone attached, adb or qemu refused, the program crashed or hung):
    a one-line message with the tool's own last words (a ValueError, so the command line prints just that)."""


def _run(cmd: list[str], what: str, timeout: float) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchRunError(f"{what} did not finish in {timeout:.0f} s") from None
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()
        if done.returncode == 2:  # the program refused its arguments: its first line says why
            raise ValueError(f"{what}: {lines[0].removeprefix(BINARY + ': ')}")
        raise BenchRunError(f"{what} failed (exit status {done.returncode}): {' | '.join(lines[-3:])}")
    return done.stdout


def _parse(stdout: str, what: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise BenchRunError(f"{what} printed no JSON report; its output ended with: {stdout.strip()[-300:]!r}")


def run(runner: str = "adb", *, serial: str | None = None, qemu_cpu: str = "max", cpu: int | None = None,
        layers: list[str] | None = None, shapes: list[str] | None = None, path: str | None = None,
        seconds: float = 2.0) -> dict:
    """Runs the bench program with `runner` ('adb', 'qemu' or 'host') and returns its JSON report with
    ``runner``, ``emulated`` and (adb) ``device`` added. See the module docstring."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}; got {runner!r}")
    args = bench_args(layers, shapes, path, seconds, cpu)
    # a bound, not an estimate: every layer spec (a preset, "all" = two, a shape) on every path, with room for
    # rounds that overrun and for qemu's start
    timeout = 300 + 10 * seconds * (args.count("--shape") + 2 * len(layers or []) + 1) * (6 if path == "all" else 1)
    extra: dict = {"runner": runner, "emulated": runner == "qemu"}
    if runner == "host":
        binary = build("host")
        out = _run([str(binary), *args], BINARY, timeout)
    elif runner == "qemu":
        qemu = None if _on_arm() else shutil.which(QEMU)
        if not _on_arm() and not qemu:
            raise FileNotFoundError(f"--qemu needs `{QEMU}` on PATH; install it with apt-get install qemu-user")
        binary = build("aarch64")
        extra["qemu_cpu"] = qemu_cpu
        out = _run(([qemu, "-cpu", qemu_cpu] if qemu else []) + [str(binary), *args], f"{QEMU} -cpu {qemu_cpu}",
                   timeout)
    else:
        adb = shutil.which("adb")
        if not adb:
            raise FileNotFoundError("--adb needs `adb` on PATH (Android platform-tools) and a phone with USB "
                                    "debugging on; or pass --qemu CPU to check the build here")
        base = [adb] + (["-s", serial] if serial else [])
        binary = build("aarch64")
        remote = f"{DEVICE_DIR}/{BINARY}"
        _run(base + ["push", str(binary), remote], "adb push", 120)
        extra["device"] = _run(base + ["shell", "getprop", "ro.product.model"], "adb shell getprop", 30).strip()
        out = _run(base + ["shell", f"chmod 755 {remote} && {remote} {shlex.join(args)}"], f"adb shell {remote}",
                   timeout)
    report = _parse(out, BINARY)
    report.update(extra)
    return report


def rows(report: dict) -> list[dict]:
    """One row per (path, layer): rates per ns and per cycle (by the clock the program measured) and the
    fraction of the ceiling against the target."""
    clock = max(report["clock_ghz"])
    table = []
    for p in report["paths"]:
        for layer in p["layers"]:
            rate = layer["macs"] / (layer["median_ms"] * 1e6)
            path = p["path"] if layer["ceiling_path"] == p["path"] else f"{p['path']}>{layer['ceiling_path']}"
            table.append({
                "layer": layer["name"], "path": path, "macs": layer["macs"], "median_ms": layer["median_ms"],
                "min_ms": layer["min_ms"], "macs_per_ns": rate, "macs_per_cycle": rate / clock,
                "ceiling_per_cycle": layer["ceiling_macs_per_ns"] / clock,
                "fraction": layer["fraction_of_ceiling"], "cpus": layer["cpus"],
                "meets_target": layer["fraction_of_ceiling"] >= TARGET_FRACTION})
    return table


def _on_arm_core(report: dict) -> bool:
    """Whether the report's times are an Arm core's: a phone over adb, or `--host` on a Linux Arm board (a
    Raspberry Pi 5's Cortex-A76, say), where the target's verdict means something; never qemu's or x86's."""
    return not report["emulated"] and (report["runner"] == "adb" or "neon" in report["supported_paths"].split(","))


def _where(report: dict) -> str:
    """Where the report's run happened, in words."""
    return {"adb": f"adb device {report.get('device') or '?'}", "host": "this host",
            "qemu": f"qemu-aarch64 -cpu {report.get('qemu_cpu')}"}[report["runner"]]


def format_report(report: dict) -> str:
    where = _where(report)
    lines = [f"{where}: CPU {report['cpu']}, {report['core']}; clock {report['clock_ghz'][0]:.2f} / "
             f"{report['clock_ghz'][1]:.2f} GHz (before / after); paths {report['supported_paths']}"]
    if report["emulated"]:
        lines.append("emulated: the times and fractions below are qemu's, not a core's; only the paths, the "
                     "MAC counts and that it runs mean anything")
    lines.append(f"{'layer':<20} {'path':<13} {'M MACs':>8} {'median ms':>10} {'min ms':>9} {'MACs/cycle':>11} "
                 f"{'ceiling':>8} {'of ceiling':>11}")
    table = rows(report)
    for r in table:
        lines.append(f"{r['layer']:<20} {r['path']:<13} {r['macs'] / 1e6:>8.1f} {r['median_ms']:>10.3f} "
                     f"{r['min_ms']:>9.3f} {r['macs_per_cycle']:>11.1f} {r['ceiling_per_cycle']:>8.1f} "
                     f"{100 * r['fraction']:>10.1f}%" + ("" if not _on_arm_core(report) else
                                                        "  meets 70 %" if r["meets_target"] else "  below 70 %"))
    moved = [r for r in table if len(r["cpus"]) > 1]
    if moved:  # a phone's scheduler moves an unpinned process between big and little cores
        lines.append(f"{len(moved)} of the layers ran on more than one CPU ({', '.join(r['layer'] for r in moved[:4])}"
                     f"{', ...' if len(moved) > 4 else ''}): their ceiling and calls may be different cores' figures; "
                     "pin the run with --cpu N")
    lines.append(f"(ceiling: the path's count in a register-only loop on this core, binary MACs a cycle; amx>avx512: "
                 f"a layer the tile unit does not take, against the AVX-512 count; of ceiling: the median over "
                 f"rounds of the layer's rate over the round's ceiling. Target {TARGET_FRACTION:.0%}; daBNN "
                 f"{DABNN_FRACTION:.0%} on a Pixel 1.)")
    return "\n".join(lines)


def plot_report(report: dict, path: str | Path) -> None:
    """A bar per layer (and path): its share of the ceiling, against the 70 % target and daBNN's 66 %, with
    the rate in binary MACs a cycle at the bar's end; written whole or not at all (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = rows(report)
    if not table:
        raise ValueError("the report has no layers to plot")
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.28 * len(table)))
    labels = [f"{r['layer']} ({r['path']})" for r in table][::-1]
    shares = [100 * r["fraction"] for r in table][::-1]
    colors = ["tab:green" if r["meets_target"] else "tab:orange" for r in table][::-1]
    ax.barh(labels, shares, color=colors)
    for y, r in enumerate(table[::-1]):
        ax.text(100 * r["fraction"] + 1, y, f"{r['macs_per_cycle']:.0f} / {r['ceiling_per_cycle']:.0f}",
                va="center", fontsize=7)
    ax.axvline(100 * TARGET_FRACTION, color="k", lw=1, label=f"target {TARGET_FRACTION:.0%}")
    ax.axvline(100 * DABNN_FRACTION, color="gray", lw=1, ls="--", label=f"daBNN {DABNN_FRACTION:.0%} (Pixel 1)")
    ax.set_xlim(0, 115)
    ax.set_xlabel("% of the popcount ceiling (labels: binary MACs a cycle, layer / ceiling)")
    emulated = " (emulated: not a core's times)" if report["emulated"] else ""
    ax.set_title(f"{_where(report)}{emulated}: {report['core']}", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=90))
    plt.close(fig)


def write_json(report: dict, out: Path) -> None:
    """Writes the report to `out` whole or not at all."""
    atomic_write(out, lambda f: f.write(json.dumps(report, indent=1).encode()))
