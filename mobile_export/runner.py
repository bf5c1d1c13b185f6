"""`bidrn bench runner`: a .pte in ExecuTorch's C++ runtime, as an app runs it: on this machine, or on aarch64.

    bidrn bench runner --pte A.pte [--host | --qemu CPU] [--runs N] [--warmup N] [--threads N] [--check] [--json]

``bidrn_pte_runner`` (mobile_export/kernels/pte_runner.cpp) loads the program with ExecuTorch's Program /
Method API, no Python: the bidrn:: ops come from the app archive (``bidrn_et_kernels_static``, linked whole),
XNNPACK and the portable / optimized kernels from the runtime's own shared libraries. It prints each
execute's milliseconds and the process's peak resident memory, and writes the outputs for the check.

- ``--host`` (default): built against the installed executorch wheel's runtime (``lib/`` of the package).
- ``--qemu CPU``: built for aarch64 (Debian's ``g++-aarch64-linux-gnu``) against the **aarch64 build of the
  same executorch release**, fetched once from PyPI (``pip download executorch==<installed> --platform
  manylinux_2_28_aarch64``; only its ``lib/*.so`` are kept, in the kernel cache), and run under
  ``qemu-aarch64 -cpu CPU -L /usr/aarch64-linux-gnu``. That is the runtime a Linux-on-Arm device runs:
  XNNPACK's aarch64 kernels, our NEON kernels (``neon_dotprod`` with ``-cpu max``, ``neon`` with
  ``cortex-a53``), the same .pte. Emulated times say nothing about a core; the outputs are the point.
  (An Android phone needs the runtime built with the NDK against bionic; the wheel's libraries are glibc's.)
- ``--check``: the outputs against ExecuTorch's Python runtime on this machine (the same program and image),
  largest absolute difference per output.

The image is ``export.example_image`` of the program's input shape (seed 7), written as raw float32.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mobile_export import kernel_library
from mobile_export.phone_bench import QEMU, BenchRunError, _on_arm, cross_compiler

RUNNER = kernel_library.RUNNER_NAME
SYSROOT = Path("/usr/aarch64-linux-gnu")  # Debian's cross toolchain: glibc and libstdc++ for aarch64
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
RUNTIME_LIBS = ("libexecutorch.so", "libexecutorch_threadpool.so", "libexecutorch_backend_xnnpack.so",
                "libexecutorch_kernels_optimized.so")
# ExecuTorch ScalarType codes the runner writes (runtime/core/portable_type/scalar_type.h).
DTYPES = {0: np.uint8, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.int64, 6: np.float32, 7: np.float64,
          11: np.bool_}


class RunnerError(BenchRunError):
    """The runner could not be built or fetched, or the program failed in it (the runner's or the tool's message;
    a ValueError, so the command line prints it as one line)."""


def _executorch_version() -> str:
    from importlib.metadata import version

    return version("executorch")


def aarch64_runtime() -> Path:
    """Folder of the aarch64 ExecuTorch runtime libraries of the installed executorch release, fetched from PyPI
    once (the wheel's lib/*.so and nothing else) into the kernel cache."""
    ver = _executorch_version()

    def fetch(folder: Path) -> Path:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", f"executorch=={ver}", "--no-deps", "--only-binary=:all:",
                   "--platform", WHEEL_PLATFORM, "--python-version", f"{sys.version_info[0]}{sys.version_info[1]}",
                   "--dest", tmp, "--quiet", "--disable-pip-version-check"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            wheels = list(Path(tmp).glob("executorch-*.whl"))
            if done.returncode != 0 or len(wheels) != 1:
                raise RunnerError(f"fetching the aarch64 executorch {ver} wheel from PyPI failed (pip download ... "
                                  f"--platform {WHEEL_PLATFORM}): {(done.stderr or done.stdout).strip()[-400:]}")
            lib = folder / "lib"
            lib.mkdir(parents=True)
            with zipfile.ZipFile(wheels[0]) as z:
                for name in RUNTIME_LIBS:
                    (lib / name).write_bytes(z.read(f"executorch/lib/{name}"))
        return folder

    tag = hashlib.sha256(f"{ver}\0{WHEEL_PLATFORM}\0{sys.version_info[:2]}".encode()).hexdigest()[:12]
    return kernel_library.build_once(kernel_library.cache_dir() / f"et-runtime-aarch64-{tag}", fetch) / "lib"


def build(arch: str = "host") -> Path:
    """The runner for `arch` ('host' or 'aarch64'), built once into the kernel cache (keyed by the kernel sources,
    the compiler and the runtime); the aarch64 one has its runtime libraries beside it (rpath $ORIGIN)."""
    if arch not in ("host", "aarch64"):
        raise ValueError(f"arch must be 'host' or 'aarch64', got {arch!r}")
    if arch == "host" or _on_arm():  # the kernel library's own build makes it (kernels compiled once)
        return kernel_library.library_path().with_name(RUNNER)
    root = kernel_library.executorch_root()
    compiler, args = cross_compiler(RUNNER)
    runtime = aarch64_runtime()
    args += [f"-DCMAKE_CXX_COMPILER={compiler}", f"-DEXECUTORCH_ROOT={root}", f"-DEXECUTORCH_RUNTIME_LIB={runtime}"]
    h = hashlib.sha256(f"{os.path.realpath(compiler)}\0{root}\0{runtime}\0{_executorch_version()}".encode())
    kernel_library.hash_sources(h)

    def make(folder: Path) -> Path:
        tree = kernel_library.cmake_build(folder / "tree", [RUNNER], *args)
        out = folder / "bin"
        out.mkdir()
        shutil.copy2(tree / RUNNER, out / RUNNER)
        for name in RUNTIME_LIBS:  # beside it: its rpath is $ORIGIN
            shutil.copy2(runtime / name, out / name)
        return out

    folder = kernel_library.build_once(kernel_library.cache_dir() / f"runner-aarch64-{h.hexdigest()[:16]}", make)
    return folder / RUNNER


def read_outputs(path: Path) -> list[np.ndarray]:
    """The tensors a runner wrote with --outputs: 'BDRNOUT1', then per tensor its dtype code and rank (int32),
    sizes and byte count (int64), bytes."""
    data = path.read_bytes()
    if data[:8] != b"BDRNOUT1":
        raise RunnerError(f"{path}: not a {RUNNER} output file")
    at, out = 8, []
    while at < len(data):
        code, rank = (int(v) for v in np.frombuffer(data, np.int32, 2, at))
        at += 8
        sizes = [int(v) for v in np.frombuffer(data, np.int64, rank, at)]
        at += 8 * rank
        nbytes = int(np.frombuffer(data, np.int64, 1, at)[0])
        at += 8
        if code not in DTYPES:
            raise RunnerError(f"{path}: output {len(out)} has ExecuTorch dtype code {code}, which this reader lacks")
        out.append(np.frombuffer(data, DTYPES[code], nbytes // np.dtype(DTYPES[code]).itemsize, at).reshape(sizes))
        at += nbytes
    return out


def _input_shape(pte: Path) -> list[int]:
    """The program's input shape: from the export report beside it, else from the program's own metadata."""
    sidecar = Path(str(pte) + ".json")
    if sidecar.exists():
        return list(json.loads(sidecar.read_text())["input_shape"])
    from executorch.runtime import Runtime

    from mobile_export.bench_model import loading

    with loading(pte):
        meta = Runtime.get().load_program(str(pte)).metadata("forward")
    if meta.num_inputs() != 1:
        raise ValueError(f"{pte}: its forward method takes {meta.num_inputs()} inputs; the runner feeds one image")
    return list(meta.input_tensor_meta(0).sizes())


def example_input(pte: Path, seed: int = 7):
    """The check's image for `pte`: export.example_image's [0, 1) values (seed 7) of the program's input shape
    (the export report's, or the program's own)."""
    import torch

    shape = _input_shape(pte)
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g)


def run(pte: str | Path, arch: str = "host", *, qemu_cpu: str = "max", runs: int = 5, warmup: int = 1,
        threads: int = 1, image=None, timeout: float = 1800.0) -> dict:
    """Runs `pte` in the C++ runner ('host', or 'aarch64' under qemu-aarch64 -cpu `qemu_cpu` on an x86 machine)
    on `image` (a float tensor; default :func:`example_input`) and returns its report: ms (one per timed
    execute), peak_rss_kb, kernel_path, outputs (numpy arrays, by name where the export report names them),
    input (the image), runner / emulated / qemu_cpu."""
    from mobile_export import export

    pte = export.check_pte(pte)
    if runs < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"runs >= 1, warmup >= 0 and threads >= 1 are needed; got {runs}, {warmup}, {threads}")
    binary = build(arch)
    emulated = arch == "aarch64" and not _on_arm()
    prefix: list[str] = []
    if emulated:
        qemu = shutil.which(QEMU)
        if not qemu:
            raise FileNotFoundError(f"running the aarch64 runner here needs `{QEMU}` on PATH; install it with "
                                    "apt-get install qemu-user")
        if not (SYSROOT / "lib").is_dir():
            raise FileNotFoundError(f"{SYSROOT}: the aarch64 C and C++ libraries are missing; install them with "
                                    "apt-get install --no-install-recommends g++-aarch64-linux-gnu")
        prefix = [qemu, "-cpu", qemu_cpu, "-L", str(SYSROOT)]
    img = example_input(pte) if image is None else image
    with tempfile.TemporaryDirectory() as tmp:
        image_file, outputs = Path(tmp) / "image.f32", Path(tmp) / "outputs.bin"
        img.numpy().astype(np.float32).tofile(image_file)
        cmd = prefix + [str(binary), str(pte), "--input", str(image_file), "--outputs", str(outputs), "--runs",
                        str(runs), "--warmup", str(warmup), "--threads", str(threads)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RunnerError(f"{RUNNER} did not finish {pte.name} in {timeout:.0f} s") from None
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.startswith(RUNNER) or ln.startswith("E ")]
            hint = (f" ({QEMU} -cpu {qemu_cpu})" if emulated else "")
            raise RunnerError(f"{RUNNER}{hint} failed on {pte.name} (exit status {done.returncode}): "
                              + (" | ".join(lines[-3:]) or done.stderr.strip()[-400:]))
        try:
            report = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise RunnerError(f"{RUNNER} printed no report for {pte.name}; its output ended with "
                              f"{done.stdout.strip()[-300:]!r}") from None
        tensors = read_outputs(outputs)
    sidecar = Path(str(pte) + ".json")
    names = json.loads(sidecar.read_text()).get("outputs") if sidecar.exists() else None
    report["outputs"] = dict(zip(names, tensors)) if names and len(names) == len(tensors) else tensors
    report.update(program=str(pte), input=img, runner="qemu" if emulated else "host", emulated=emulated,
                  arch="aarch64" if arch == "aarch64" else platform.machine())
    if emulated:
        report["qemu_cpu"] = qemu_cpu
    return report


def compare(report: dict) -> dict[str, float]:
    """Largest absolute difference per output between a runner report and ExecuTorch's Python runtime on this
    machine, for the same program and image."""
    from mobile_export import export

    got = export.run_pte(report["program"], report["input"])
    names = list(got) if isinstance(got, dict) else [str(i) for i in range(len(got))]
    wants = list(got.values()) if isinstance(got, dict) else list(got)
    ours = list(report["outputs"].values()) if isinstance(report["outputs"], dict) else list(report["outputs"])
    if len(ours) != len(wants):
        raise RunnerError(f"the runner gave {len(ours)} outputs, the Python runtime {len(wants)}")
    diffs: dict[str, float] = {}
    for key, mine, want in zip(names, ours, wants):
        want = want.numpy() if hasattr(want, "numpy") else np.asarray(want)
        if mine.shape != want.shape:
            raise RunnerError(f"output {key}: the runner gave shape {list(mine.shape)}, the Python runtime "
                              f"{list(want.shape)}")
        diffs[key] = float(np.abs(mine.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
    return diffs


def summary(report: dict) -> dict:
    """The report's timings as median / p90 / min ms, without the output tensors (what --json prints)."""
    ms = report["ms"]
    keep = {k: v for k, v in report.items() if k not in ("outputs", "input")}
    # p90 as bench_model's (statistics.quantiles, n=10); one run is its own p90.
    keep.update(median_ms=statistics.median(ms), p90_ms=statistics.quantiles(ms, n=10)[-1] if len(ms) > 1 else ms[0],
                min_ms=min(ms),
                output_shapes={k: list(v.shape) for k, v in report["outputs"].items()}
                if isinstance(report["outputs"], dict) else [list(v.shape) for v in report["outputs"]])
    return keep


def format_report(report: dict, diffs: dict[str, float] | None = None) -> str:
    """The runner's report as text: where it ran, the timings and peak memory, and the check's differences."""
    s = summary(report)
    where = (f"aarch64 under {QEMU} -cpu {s['qemu_cpu']} (emulated: its times say nothing about a core)"
             if s["emulated"] else f"this machine ({s['arch']})")
    lines = [f"{s['program']} in {RUNNER}, {where}; bidrn kernel path {s['kernel_path']}, {s['threads']} thread(s)",
             f"{len(s['ms'])} timed executes after {s['warmup']} warm-up: median {s['median_ms']:.2f} ms, p90 "
             f"{s['p90_ms']:.2f}, fastest {s['min_ms']:.2f}; peak resident memory {s['peak_rss_kb'] / 1024:.1f} MB"]
    if diffs is not None:
        lines.append("outputs against ExecuTorch's Python runtime on this machine (largest |difference|):")
        items = [f"{k} {v:.2g}" for k, v in diffs.items()]
        lines += ["  " + "  ".join(items[i:i + 6]) for i in range(0, len(items), 6)]
    return "\n".join(lines)
