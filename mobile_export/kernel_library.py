"""Builds (when needed) and loads the C++ ExecuTorch kernels of the ``bidrn::`` ops, once per process.

The library is compiled on first use, with the cmake and C++17 compiler found on the machine, into a cache
folder keyed by a hash of the kernel sources, the compiler and the installed executorch build, so an
editable install, a wheel install and a fresh CI machine all work with no hand step, and a source edit
rebuilds. A file lock makes concurrent first uses (pytest-xdist, two shells) build once.

    BIDRN_KERNEL_CACHE   cache folder (default: $XDG_CACHE_HOME/bidrn/kernels or ~/.cache/bidrn/kernels)
    BIDRN_KERNEL_PATH    force a kernel path: amx, avx512, avx2, neon_dotprod, neon or scalar
    python -m mobile_export.kernel_library   builds now and prints the library path and kernel paths
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent / "kernels"
LIBRARY_NAME = "libbidrn_et_kernels.so"
BENCH_NAME = "bidrn_kernel_bench"
RUNNER_NAME = "bidrn_pte_runner"

_lock = threading.Lock()
_handle: ctypes.CDLL | None = None


def executorch_root() -> Path:
    import executorch

    # executorch is a namespace package: no __file__.
    return Path(list(executorch.__path__)[0])


def _tool(name: str, hint: str) -> str:
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"building the bidrn kernels needs `{name}` on PATH; {hint}")
    return found


def _compiler() -> str:
    return os.environ.get("CXX") or _tool("c++", "install a C++17 compiler (Debian: apt-get install g++)")


def hash_sources(h) -> None:
    """Feeds the kernel sources (name and bytes of every .cpp, .h and CMakeLists.txt) into hash `h`."""
    for path in sorted(SOURCE_DIR.iterdir()):
        if path.suffix in {".cpp", ".h", ".txt"}:
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")


def source_hash() -> str:
    h = hashlib.sha256()
    hash_sources(h)
    root = executorch_root()
    h.update(str(root).encode())
    h.update(str((root / "lib" / "libexecutorch.so").stat().st_mtime_ns).encode())
    h.update(os.path.realpath(_compiler()).encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    if os.environ.get("BIDRN_KERNEL_CACHE"):
        return Path(os.environ["BIDRN_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bidrn" / "kernels"


def cmake_build(build_dir: Path, targets: list[str], *configure_args: str) -> Path:
    """Configures SOURCE_DIR into `build_dir` (Release, plus `configure_args`) and builds `targets` (the
    objects they share compiled once); returns `build_dir`. Raises RuntimeError with the tools' output when a
    step fails."""
    cmake = _tool("cmake", "install cmake >= 3.18 (Debian: apt-get install cmake, or pip install cmake)")
    configure = [cmake, "-S", str(SOURCE_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", *configure_args]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    build = [cmake, "--build", str(build_dir), "--target", *targets, "--parallel", str(os.cpu_count() or 2)]
    for cmd in (configure, build):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building {', '.join(targets)} failed ({' '.join(cmd[:2])} ...):\n"
                               f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return build_dir


def build_once(target: Path, build) -> Path:
    """Returns `target` (a file or a folder), first running build(folder) -> built path when it does not exist
    yet: in a temporary folder beside it, under a file lock (a second builder waits, then finds it), moved into
    place atomically (never a half-written file)."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                os.replace(build(Path(tmp)), target)
    return target


def library_path() -> Path:
    """Path of the compiled library, building it first if this source hash has none yet. The same build makes
    the stand-alone kernel benchmark (`bidrn bench phone --host`) and the C++ program runner (`bidrn bench
    runner`), left beside the library as BENCH_NAME and RUNNER_NAME (their kernels compiled once)."""
    def build(folder: Path) -> Path:
        root = executorch_root()
        built = cmake_build(folder, ["bidrn_et_kernels", BENCH_NAME, RUNNER_NAME],
                            f"-DCMAKE_CXX_COMPILER={_compiler()}", f"-DEXECUTORCH_ROOT={root}",
                            f"-DEXECUTORCH_RUNTIME_LIB={root / 'lib'}")
        for name in (BENCH_NAME, RUNNER_NAME):  # before the library, whose presence says done
            os.replace(built / name, folder.parent / name)
        return built / LIBRARY_NAME

    return build_once(cache_dir() / source_hash() / LIBRARY_NAME, build)


def load() -> ctypes.CDLL:
    """Loads the kernel library into this process (registering the ops with ExecuTorch's runtime) once.

    Loading the same registrations twice aborts the process inside ExecuTorch, hence the module-level guard.
    """
    global _handle
    with _lock:
        if _handle is None:
            lib = ctypes.CDLL(str(library_path()))
            lib.bidrn_kernels_active_path.restype = ctypes.c_char_p
            lib.bidrn_kernels_supported_paths.restype = ctypes.c_char_p
            lib.bidrn_kernels_set_path.argtypes = [ctypes.c_char_p]
            lib.bidrn_binary_conv.restype = ctypes.c_char_p
            lib.bidrn_kernels_amx_takes.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.c_int]
            lib.bidrn_kernels_thread_count.restype = ctypes.c_int64
            for probe_fn in (lib.bidrn_probe_clock_ghz, lib.bidrn_probe_adds_per_ns, lib.bidrn_probe_tile_ns):
                probe_fn.restype, probe_fn.argtypes = ctypes.c_double, [ctypes.c_int64]
            lib.bidrn_probe_count_ceiling.restype = ctypes.c_double
            lib.bidrn_probe_count_ceiling.argtypes = [ctypes.c_char_p, ctypes.c_int64]
            lib.bidrn_int8_pointwise.restype = ctypes.c_char_p
            lib.bidrn_int8_pointwise_kernel.restype = ctypes.c_char_p
            lib.bidrn_int8_conv_transpose2d.restype = ctypes.c_char_p
            # shape, x, weight, weight_sum, scale, bias, input_scale_inv, zero_point, relu, out
            int8_args = [ctypes.POINTER(ctypes.c_int64)] + [ctypes.c_void_p] * 5 + [
                ctypes.c_float, ctypes.c_int32, ctypes.c_int, ctypes.c_void_p]
            lib.bidrn_int8_pointwise.argtypes = lib.bidrn_int8_conv_transpose2d.argtypes = int8_args
            lib.bidrn_int8_conv2d.restype = ctypes.c_char_p
            # shape16, x, weight, weight_sum, scale, bias, input_scale_inv, zero_point, out
            lib.bidrn_int8_conv2d.argtypes = [ctypes.POINTER(ctypes.c_int64)] + [ctypes.c_void_p] * 5 + [
                ctypes.c_float, ctypes.c_int32, ctypes.c_void_p]
            _handle = lib
    return _handle


def thread_count() -> int:
    """Threads the bidrn:: ops run on: ExecuTorch's threadpool as the kernel library sees it (set it with
    `_unsafe_reset_threadpool(n)` before loading a program)."""
    return int(load().bidrn_kernels_thread_count())


def supported_paths() -> list[str]:
    """Kernel paths this CPU can run, best first (e.g. ['avx512', 'avx2', 'scalar'])."""
    return load().bidrn_kernels_supported_paths().decode().split(",")


def active_path() -> str:
    return load().bidrn_kernels_active_path().decode()


def int8_pointwise_kernel() -> str:
    """The kernel ``bidrn::int8_pointwise`` runs on the active path: 'amx', 'avx512_vnni', or the path's block
    GEMM ('avx2', 'neon_dotprod', 'neon', 'scalar')."""
    return load().bidrn_int8_pointwise_kernel().decode()


def probe(adds: int = 240_000, multiplies: int = 8_000) -> dict[str, float | None]:
    """The state of the core this thread runs on, for benchmark reports (a shared machine's minutes differ),
    each the best of three short loops, about 0.3 ms in all:

    - ``clock_ghz``: a chain of ``adds`` dependent register adds, one a cycle: the clock the core ran at;
    - ``adds_per_cycle``: ``adds`` in eight independent chains per ns, over the clock: how many integer adds
      the core's ALUs retire a cycle (about 4 on a core of Intel's Golden Cove family to itself); another
      thread on the same core (SMT, e.g. another tenant of a VM host) takes ports and about halves it,
      while the clock stays;
    - ``tile_ns``: ns per tile multiply (``tdpbssd``) of a register-only loop of ``multiplies`` (None
      without the `amx` path): 16 cycles on Sapphire / Emerald Rapids, about 2.5x that when another thread
      uses the core's tile unit."""
    lib = load()
    clock = lib.bidrn_probe_clock_ghz(adds)
    rate = lib.bidrn_probe_adds_per_ns(adds)
    tile = lib.bidrn_probe_tile_ns(multiplies)
    return {"clock_ghz": clock, "adds_per_cycle": rate / clock if clock > 0 else 0.0,
            "tile_ns": tile if tile > 0 else None}


def amx_takes(shape13, transposed: bool = False) -> bool:
    """Whether the `amx` path runs this conv on the tile unit (else on the AVX-512 kernels). shape13: batch,
    in_channels, in_h, in_w, out_channels, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w."""
    return bool(load().bidrn_kernels_amx_takes((ctypes.c_int64 * 13)(*shape13), int(transposed)))


def count_ceiling(path: str, steps: int = 20_000) -> float | None:
    """Binary MACs per ns of kernel path `path`'s count in a register-only loop on the core this thread runs
    on (best of three; ``amx``: 16,384 per tile multiply): the ceiling a layer's rate is measured against.
    None for a path this build or CPU does not have."""
    rate = load().bidrn_probe_count_ceiling(path.encode(), steps)
    return rate if rate > 0 else None


def set_path(name: str) -> None:
    if not load().bidrn_kernels_set_path(name.encode()):
        raise ValueError(f"kernel path {name!r} is not available on this CPU; available: {supported_paths()}")


@contextmanager
def using_path(name: str):
    """Runs the block with kernel path `name` (process-wide), then restores the previous one."""
    previous = active_path()
    set_path(name)
    try:
        yield
    finally:
        set_path(previous)


if __name__ == "__main__":
    print(library_path())
    print("kernel paths:", ", ".join(supported_paths()), "| active:", active_path())
    state = probe()
    print(f"core: clock {state['clock_ghz']:.2f} GHz, {state['adds_per_cycle']:.1f} independent adds a cycle"
          + (f", tile unit {state['tile_ns']:.2f} ns per tdpbssd" if state["tile_ns"] else ""))
    sys.exit(0)
