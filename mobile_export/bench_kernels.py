"""`bidrn bench kernels`: each binary layer (ExecuTorch .pte with the bidrn:: op) against XNNPACK fp32 and
XNNPACK int8 (PT2E static, per-channel, fp32 in/out) .pte files of the same shape, timed in the same run.
The int8 block residuals (layer_shapes.BLOCK_RESIDUALS, ``br_*``) and BoxNet's deconv3
(``int8_deconv3_256_32x24``) are timed the same way, their "binary" program being the --int8 export's
lowering (``bidrn::int8_pointwise``, ``bidrn::int8_conv_transpose2d``) against XNNPACK's int8 and fp32 convs.

ExecuTorch's threadpool size can only be set before a program is loaded, so the programs are exported once
into a temporary folder and each thread count is timed in its own child process.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from mobile_export.bench_model import at_speed
from mobile_export.layer_shapes import LayerShape, benchmark_layers


def _example_input(layer: LayerShape) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if layer.kind == "linear":
        return torch.randn(layer.batch, layer.in_channels, generator=g)
    return torch.randn(layer.batch, layer.in_channels, layer.height, layer.width, generator=g)


def float_module(layer: LayerShape) -> nn.Module:
    if layer.kind == "linear":
        return nn.Linear(layer.in_channels, layer.out_channels)
    cls = nn.ConvTranspose2d if layer.transposed else nn.Conv2d
    return cls(layer.in_channels, layer.out_channels, layer.kernel, layer.stride, layer.padding)


class BinaryLayerModule(nn.Module):
    """The layer as the exported model will run it: float in, packed sign weights, float out with the
    per-channel scale / bias epilogue fused."""

    def __init__(self, layer: LayerShape):
        super().__init__()
        from mobile_export import ops

        self.layer = layer
        w = float_module(layer).weight.detach()
        if layer.kind == "linear":
            packed = ops.pack_linear_weight(w)
        elif layer.kind == "conv_transpose":
            packed = ops.pack_conv_transpose_weight(w, (layer.stride,) * 2, (layer.padding,) * 2)
        else:
            packed = ops.pack_conv_weight(w)
        self.register_buffer("weight", packed)
        self.register_buffer("scale", torch.rand(layer.out_channels) * 0.01)
        self.register_buffer("bias", torch.randn(layer.out_channels))

    def forward(self, x):
        l, k, s, p = self.layer, [self.layer.kernel] * 2, [self.layer.stride] * 2, [self.layer.padding] * 2
        if l.kind == "linear":
            return torch.ops.bidrn.binary_linear(x, self.weight, self.scale, self.bias, None, l.in_channels)
        if l.kind == "conv_transpose":
            return torch.ops.bidrn.binary_conv_transpose2d(x, self.weight, self.scale, self.bias, None,
                                                           l.in_channels, k, s, p, [0, 0])
        return torch.ops.bidrn.binary_conv2d(x, self.weight, self.scale, self.bias, None, l.in_channels, k, s, p)


def int8_module(layer: LayerShape, x: torch.Tensor) -> nn.Module:
    """An int8 layer as the --int8 export runs it, calibrated on x: a block residual as bidrn::int8_pointwise
    (export.Int8Pointwise, no ReLU), deconv3 as bidrn::int8_conv_transpose2d (export.Int8ConvTranspose of
    its phase decomposition; BN and ReLU, folded there in the network, left out)."""
    from mobile_export.deconv import PhasedConvTranspose2d
    from mobile_export.export import Int8ConvTranspose, Int8Pointwise

    if layer.kind == "int8_conv_transpose":
        module = Int8ConvTranspose(PhasedConvTranspose2d(float_module(layer).eval()))
    else:
        module = Int8Pointwise(float_module(layer).eval())
    module(x)
    module.freeze()
    return module.eval()


def _lower(module: nn.Module, x: torch.Tensor, xnnpack: bool) -> bytes:
    """The program of one layer. Its input is not memory-planned (``alloc_graph_input=False``): ExecuTorch
    then reads the caller's tensor where it lies, as a layer inside a network reads what the previous op
    wrote, instead of copying it into a planned buffer first. The copy is the harness's time, not the
    layer's: 0.8 MB, about 0.07 ms, 13 % of the binary reference layer's program (measured on the Emerald
    Rapids VM) and about 1 % of XNNPACK fp32's. Every variant is lowered the same way."""
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass

    partitioner = []
    if xnnpack:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioner = [XnnpackPartitioner()]
    ep = torch.export.export(module, (x,))
    config = ExecutorchBackendConfig(memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False))
    return to_edge_transform_and_lower(ep, partitioner=partitioner).to_executorch(config).buffer


def _quantized(module: nn.Module, x: torch.Tensor) -> nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(module, (x,)).module(), quantizer)
    prepared(x)  # calibration
    return convert_pt2e(prepared)


def export_programs(layer: LayerShape, folder: Path) -> dict[str, Path]:
    """Writes <layer>.{binary,fp32,int8}.pte; returns their paths by variant."""
    from mobile_export import ops  # noqa: F401  (registers the bidrn:: ops for export)

    torch.manual_seed(0)
    x = _example_input(layer)
    module = float_module(layer).eval()
    programs = {
        "binary": lambda: _lower(int8_module(layer, x) if layer.kind.startswith("int8")
                                 else BinaryLayerModule(layer).eval(), x, xnnpack=False),
        "fp32": lambda: _lower(module, x, xnnpack=True),
        "int8": lambda: _lower(_quantized(module, x), x, xnnpack=True),
    }
    paths = {}
    for variant, build in programs.items():
        paths[variant] = folder / f"{layer.name}.{variant}.pte"
        paths[variant].write_bytes(build())
    return paths


TURN_SECONDS = 0.02  # how long each program runs per turn of a round (at least 3 timed runs)


def _record_probe(core: dict[str, list]) -> None:
    from mobile_export import kernel_library

    for key, value in kernel_library.probe().items():
        core[key].append(value)
    for key, values in core.items():  # "ceiling_<path>": that path's count ceiling (binary MACs per ns)
        if key.startswith("ceiling_"):
            values.append(kernel_library.count_ceiling(key[len("ceiling_"):]))


def time_programs(programs: dict[str, tuple[Path, str | None]], x: torch.Tensor, min_seconds: float,
                  rounds: int = 15, core: dict[str, list] | None = None,
                  per_round: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Median ms of `forward` for each program, measured in interleaved rounds so that the machine's load
    swings hit every program alike (the ratios are what matters). programs: name -> (pte, kernel path).

    In each round every program takes a turn of about TURN_SECONDS: one untimed run, then timed runs (at
    least 3). Steady-state per-layer latency is what the ratios compare, as inside a network, where a layer's
    weights and buffers are warm. Switching programs run by run instead costs a sub-millisecond program
    right after an 8 ms XNNPACK conv about 10% for several runs (measured on the binary reference layer:
    0.67, 0.61, 0.59 ms for the first three runs after the fp32 conv, 0.53 ms steady), an effect of the
    switch, not of either kernel; short turns would fold it into the small program's time only.
    Each run is the program's execute alone (:func:`mobile_export.bench_model.load_forward`: no copy of the
    outputs, the garbage collector off while timing). Where ``core`` is given, the core's state probed before
    each round and after the last (:func:`mobile_export.kernel_library.probe`) is appended to its lists of the
    same keys, and where ``per_round`` is given, each program's median ms of each round to its list."""
    from mobile_export import kernel_library
    from mobile_export.bench_model import load_forward, timing

    forwards = {name: load_forward(pte)[0] for name, (pte, _) in programs.items()}
    times: dict[str, list[float]] = {name: [] for name in programs}
    per_turn = {name: 3 for name in programs}
    start = time.perf_counter()
    first = True
    with timing():
        while first or min(len(t) for t in times.values()) < rounds or time.perf_counter() - start < min_seconds:
            if core is not None:
                _record_probe(core)
            for name, forward in forwards.items():
                with kernel_library.using_path(programs[name][1] or kernel_library.active_path()):
                    for _ in range(3 if first else 1):  # warm-up: the very first runs are 1.3-3x slower
                        forward(x)
                    turn = []
                    for _ in range(per_turn[name]):
                        t0 = time.perf_counter()
                        forward(x)
                        turn.append(time.perf_counter() - t0)
                    times[name] += turn
                    if per_round is not None:
                        per_round.setdefault(name, []).append(statistics.median(turn) * 1e3)
            if first:
                per_turn = {name: max(3, min(50, int(TURN_SECONDS / statistics.median(t)))) for name, t in times.items()}
            first = False
    if core is not None:  # and after the last round
        _record_probe(core)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def _worker(folder: Path, threads: int, paths: list[str], min_seconds: float) -> list[dict]:
    """Times every program in `folder` with `threads` threads (a fresh process: see module docstring)."""
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    from mobile_export import kernel_library

    _unsafe_reset_threadpool(threads)
    torch.set_num_threads(threads)  # or torch's own threads compete with ExecuTorch's
    kernel_library.load()
    best = kernel_library.active_path() if kernel_library.active_path() in paths else paths[0]
    rows = []
    for layer in benchmark_layers():
        if not (folder / f"{layer.name}.binary.pte").exists():
            continue
        programs = {"fp32": (folder / f"{layer.name}.fp32.pte", None), "int8": (folder / f"{layer.name}.int8.pte", None)}
        programs |= {f"binary_{p}": (folder / f"{layer.name}.binary.pte", p) for p in paths}
        core, rounds = {"clock_ghz": [], "adds_per_cycle": [], "tile_ns": []}, {}
        binary = not layer.kind.startswith("int8")
        oh, ow = layer.out_hw
        shape13 = (layer.batch, layer.in_channels, layer.height, layer.width, layer.out_channels, oh, ow,
                   layer.kernel, layer.kernel, layer.stride, layer.stride, layer.padding, layer.padding)
        # the count each path's layer runs on: `amx` hands what the tile unit does not take to `avx512`
        counted_on = {p: "avx512" if p == "amx" and not kernel_library.amx_takes(shape13, layer.transposed) else p
                      for p in paths}
        if binary:
            core |= {f"ceiling_{p}": [] for p in set(counted_on.values())}
        ms = time_programs(programs, _example_input(layer), min_seconds, core=core, per_round=rounds)
        row = {"layer": layer.name, "kind": layer.kind, "threads": threads, "macs": layer.macs, "path": best,
               "binary_ms": ms[f"binary_{best}"], "fp32_ms": ms["fp32"], "int8_ms": ms["int8"],
               "clock_ghz": statistics.median(core["clock_ghz"]),
               "adds_per_cycle": statistics.median(core["adds_per_cycle"]),
               "adds_per_cycle_min": min(core["adds_per_cycle"])}
        tiles = [t for t in core["tile_ns"] if t]
        row["tile_ns"], row["tile_ns_max"] = (statistics.median(tiles), max(tiles)) if tiles else (None, None)
        for path in paths:
            row[f"binary_ms_{path}"] = ms[f"binary_{path}"]
            row[f"fp32_over_{path}"] = ms["fp32"] / ms[f"binary_{path}"]
            row[f"int8_over_{path}"] = ms["int8"] / ms[f"binary_{path}"]
            if binary:
                # The layer's binary MACs per ns over the path's count ceiling (the better of the probes before
                # and after the round) times the threads, round by round; the median.
                c = core[f"ceiling_{counted_on[path]}"]
                row[f"of_ceiling_{path}"] = statistics.median(
                    layer.macs / (t * 1e6) / (threads * max(c[i], c[i + 1]))
                    for i, t in enumerate(rounds[f"binary_{path}"]))
        row["fp32_ratio"], row["int8_ratio"] = row[f"fp32_over_{best}"], row[f"int8_over_{best}"]
        # The rounds split by the core's state (bench_model.at_speed), each side's ratios those of its rounds'
        # median times, for the dispatched path.
        fast = at_speed(core)
        for key, keep in (("at_speed", True), ("core_shared", False)):
            picked = [i for i, f in enumerate(fast) if f == keep]
            if not picked:
                row[key] = None
                continue
            med = {name: statistics.median(rounds[name][i] for i in picked) for name in ("fp32", "int8", f"binary_{best}")}
            row[key] = {"rounds": len(picked), "binary_ms": med[f"binary_{best}"], "fp32_ms": med["fp32"],
                        "int8_ms": med["int8"], "fp32_ratio": med["fp32"] / med[f"binary_{best}"],
                        "int8_ratio": med["int8"] / med[f"binary_{best}"]}
        row["core"], row["round_ms"] = core, rounds  # per round: the core's state, each program's median ms
        rows.append(row)
    return rows


def run(layer_names: list[str] | None, threads: list[int], paths: list[str] | None, min_seconds: float,
        log=print) -> list[dict]:
    from mobile_export import kernel_library

    layers = [l for l in benchmark_layers() if not layer_names or l.name in layer_names]
    unknown = set(layer_names or []) - {l.name for l in layers}
    if unknown:
        raise ValueError(f"unknown layer(s) {sorted(unknown)}; known: {[l.name for l in benchmark_layers()]}")
    supported = kernel_library.supported_paths()
    paths = paths or [p for p in supported if p != "scalar"] or ["scalar"]
    missing = [p for p in paths if p not in supported]
    if missing:
        raise ValueError(f"kernel path(s) {missing} not available on this CPU; available: {supported}")
    with tempfile.TemporaryDirectory(prefix="bidrn-bench-") as tmp:
        for i, layer in enumerate(layers):
            log(f"exporting {layer.name} ({i + 1}/{len(layers)})")
            export_programs(layer, Path(tmp))
        rows = []
        for n in threads:
            log(f"timing with {n} thread(s)")
            cmd = [sys.executable, "-m", "mobile_export.bench_kernels", tmp, str(n), ",".join(paths), str(min_seconds)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if done.returncode != 0:
                raise RuntimeError(f"benchmark worker failed:\n{done.stderr[-4000:]}")
            rows += json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as a table. Per path: ms, the ratios, and "ceil", the layer's binary MACs per ns as a share of
    the path's count ceiling on this core (its count in a register-only loop, `kernel_library.count_ceiling`,
    times the threads; the median of the rounds; binary layers only). The last columns are the core's state
    over the layer's rounds (the median, and the worst seen): clock, independent adds a cycle (about half when
    another thread shares the core) and, where there is one, the tile unit's ns per multiply; they tell a
    shared machine's slow minutes."""
    paths = sorted({k[len("binary_ms_"):] for r in rows for k in r if k.startswith("binary_ms_")})
    tiles = any(r.get("tile_ns") for r in rows)
    head = f"{'layer':28s} {'thr':>3s} {'fp32 ms':>8s} {'int8 ms':>8s}" + "".join(
        f" {p + ' ms':>11s} {'fp32/' + p:>12s} {'int8/' + p:>12s} {'ceil':>5s}" for p in paths) + (
        f" {'GHz':>5s} {'adds/cycle':>11s}") + (f" {'tile ns':>12s}" if tiles else "")
    lines = [head]
    for r in rows:
        line = f"{r['layer']:28s} {r['threads']:3d} {r['fp32_ms']:8.3f} {r['int8_ms']:8.3f}"
        for p in paths:
            line += f" {r[f'binary_ms_{p}']:11.3f} {r[f'fp32_over_{p}']:11.1f}x {r[f'int8_over_{p}']:11.1f}x"
            line += f" {100 * r[f'of_ceiling_{p}']:4.0f}%" if f"of_ceiling_{p}" in r else f" {'-':>5s}"
        line += f" {r['clock_ghz']:5.2f} {r['adds_per_cycle']:4.1f} ({r['adds_per_cycle_min']:3.1f})"
        if tiles:
            line += f" {r['tile_ns']:4.1f} ({r['tile_ns_max']:4.1f})" if r.get("tile_ns") else f" {'-':>12s}"
        lines.append(line)
    split = [r for r in rows if r.get("core_shared")]
    if split:
        lines.append("rounds by the core's state (median ms over those rounds; the dispatched path):")
        for r in split:
            parts = [f"{label} ({s['rounds']} rounds) {s['binary_ms']:.3f} ms, {s['fp32_ratio']:.1f}x / "
                     f"{s['int8_ratio']:.1f}x" for label, s in (("at speed", r["at_speed"]),
                                                                ("core shared", r["core_shared"])) if s]
            lines.append(f"  {r['layer']:28s} {r['threads']} thr: " + "; ".join(parts))
    return "\n".join(lines)


if __name__ == "__main__":
    # Worker mode (used by run): folder threads paths min_seconds -> one JSON line on stdout.
    folder, n, paths, seconds = sys.argv[1:5]
    print(json.dumps(_worker(Path(folder), int(n), paths.split(","), float(seconds))))
