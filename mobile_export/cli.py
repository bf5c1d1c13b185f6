"""`bidrn export ...` (a .pte for ExecuTorch) and `bidrn bench ...` (speed of the mobile runtime).

    bidrn export NAME_OR_CHECKPOINT --format pte [--int8 [--int8-pointwise auto|bidrn|xnnpack] [--target host|aarch64]]
                 --out model.pte
                 [--reference fp.pte | --no-reference]
    bidrn bench model --pte A.pte [--vs B.pte] [--threads 1] [--runs 30] [--warmup 3] [--json]
    bidrn bench kernels [--json] [--layers NAME,...] [--threads 1,2] [--paths avx512,avx2] [--seconds S]
    bidrn bench profile --pte A.pte [--threads 1] [--runs 10] [--top 25] [--json]
    bidrn bench phone [--adb [SERIAL] | --qemu CPU | --host] [--cpu N] [--layers NAME,...] [--seconds S] [--json]
                      [--out report.json] [--plot shares.png]
    bidrn bench runner --pte A.pte [--host | --qemu CPU] [--runs 5] [--warmup 1] [--threads 1] [--check] [--json]

`export` replaces every binary layer by a bidrn:: op with bit-packed weights and lowers the rest to XNNPACK
(mobile_export/export.py, docs/export.md); it writes OUT and OUT.json (the report), and compares OUT's bytes
with the full-precision Hand4Whole .pte of the same architecture (exported to --reference once, then reused).
`bench model` times whole programs side by side (mobile_export/bench_model.py) and splits the rounds' ratios
by the core's state probed around each round.

Each binary layer shape of BiDRN (and the reference layer ``ref3x3_256_28``) is exported as a small .pte with
the bidrn:: op, and as XNNPACK fp32 and int8 .pte files of the same shape; all are timed in the same run,
one thread unless asked. ``--json`` prints a list of objects with ``layer``, ``threads``, ``binary_ms``
(the dispatched kernel path), ``fp32_ms``, ``int8_ms``, their ratios, and ``binary_ms_<path>`` per path
with ``of_ceiling_<path>`` (binary layers: the share of the path's count ceiling on this core, the table's
"ceil"; `bench phone` measures the same on a phone);
the core's state over the rounds (``clock_ghz``, ``adds_per_cycle``, ``tile_ns``: a shared machine's slow
minutes are another thread on the core, about half the adds a cycle) and the rounds split by it
(``at_speed``, ``core_shared``: rounds, medians and ratios of each side).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return values


def _bench_kernels(args) -> int:
    from mobile_export import bench_kernels

    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    rows = bench_kernels.run(args.layers.split(",") if args.layers else None, args.threads,
                             args.paths.split(",") if args.paths else None, args.seconds, log=log)
    print(json.dumps(rows, indent=1) if args.json else bench_kernels.format_table(rows))
    return 0


def _export(args) -> int:
    from mobile_export import export

    if args.format != "pte":
        raise ValueError(f"--format {args.format}: only 'pte' is implemented (Core ML is not yet)")
    out = Path(args.out)
    if out.suffix != ".pte":
        raise ValueError(f"--out {out}: expected a path ending in .pte")
    model = export.load_model(args.model_or_checkpoint, args.model)
    reference = None
    if not args.no_reference:
        twin = export.full_precision_twin(model.cfg).name + ("-no-body" if args.no_body_model else "")
        reference = args.reference or Path("out/export") / f"{twin}.pte"
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    report = export.export_pte(model, out, int8=args.int8, body_model=not args.no_body_model, reference=reference,
                               int8_pointwise={"auto": None, "bidrn": True, "xnnpack": False}[args.int8_pointwise],
                               target=args.target, log=log)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.summary())
    return 0


def _bench_profile(args) -> int:
    from mobile_export import bench_model

    result = bench_model.profile(args.pte, args.threads, args.runs, args.warmup)
    print(json.dumps(result, indent=1) if args.json else bench_model.format_profile(result, args.top))
    return 0


def _bench_model(args) -> int:
    from mobile_export import bench_model

    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    rows = bench_model.run([args.pte] + ([args.vs] if args.vs else []), args.threads, args.runs, args.warmup, log=log)
    print(json.dumps(rows, indent=1) if args.json else bench_model.format_table(rows))
    return 0


def _bench_phone(args) -> int:
    from mobile_export import phone_bench

    runner = "qemu" if args.qemu else "host" if args.host else "adb"
    report = phone_bench.run(runner, serial=args.adb or None, qemu_cpu=args.qemu or "max", cpu=args.cpu,
                             layers=args.layers.split(",") if args.layers else None, shapes=args.shape,
                             path=args.path, seconds=args.seconds)
    if args.out:
        phone_bench.write_json(report, Path(args.out))
    if args.plot:
        phone_bench.plot_report(report, Path(args.plot))
    print(json.dumps(report, indent=1) if args.json else phone_bench.format_report(report))
    return 0


def _bench_runner(args) -> int:
    from mobile_export import runner

    report = runner.run(args.pte, "aarch64" if args.qemu else "host", qemu_cpu=args.qemu or "max", runs=args.runs,
                        warmup=args.warmup, threads=args.threads)
    diffs = runner.compare(report) if args.check else None
    if args.json:
        print(json.dumps(dict(runner.summary(report), **({"max_abs_diff": diffs} if diffs is not None else {})),
                         indent=1))
    else:
        print(runner.format_report(report, diffs))
    return 0


def _add_export(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a network to an ExecuTorch .pte (binary ops + XNNPACK)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_or_checkpoint", metavar="NAME_OR_CHECKPOINT",
                   help="a registered model name (random init, seed 0) or a run folder / model.safetensors / "
                        "checkpoint.pt")
    p.add_argument("--format", choices=["pte", "coreml"], default="pte", help="output format (default pte)")
    p.add_argument("--out", required=True, help="output .pte path (a report lands next to it as OUT.json)")
    p.add_argument("--int8", action="store_true", help="quantize the full-precision parts to int8 (PT2E, XNNPACK)")
    p.add_argument("--int8-pointwise", choices=["auto", "bidrn", "xnnpack"], default="auto",
                   help="with --int8: our int8 ops (the 1x1 convs as bidrn::int8_pointwise, BoxNet's deconv, and on "
                        "AMX the stems as bidrn::int8_conv2d) or XNNPACK int8 convs; auto: ours where this machine's "
                        "kernel for them is fast (AMX, AVX-512 VNNI, NEON)")
    p.add_argument("--target", choices=["host", "aarch64"], default="host",  # export.TARGETS
                   help="with --int8: the CPU whose int8 kernels decide which int8 ops are ours (the binary ops "
                        "dispatch at run time anyway): host (this machine, the default) or aarch64 (an Arm phone: "
                        "NEON dotprod; the 1x1 convs and BoxNet's deconv ours, the stems XNNPACK's)")
    p.add_argument("--model", help="model name for a checkpoint that does not record it")
    p.add_argument("--no-body-model", action="store_true", help="leave the SMPL-X layer (mesh outputs) out")
    p.add_argument("--reference", help="full-precision .pte to compare bytes with; exported there if missing "
                                       "(default out/export/<twin>.pte, e.g. hand4whole.pte for bidrn)")
    p.add_argument("--no-reference", action="store_true", help="skip the size comparison")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_export)


def add_parser(subparsers) -> None:
    _add_export(subparsers)
    bench = subparsers.add_parser("bench", help="time the mobile runtime (binary kernels vs XNNPACK)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    kernels = bench_sub.add_parser("kernels", help="binary conv kernels vs XNNPACK fp32 / int8, layer by layer",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kernels.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    kernels.add_argument("--layers", help="comma-separated layer names (default: all; ref3x3_256_28 is the reference)")
    kernels.add_argument("--threads", type=_int_list, default=[1], help="thread counts to time, e.g. 1,2 (default 1)")
    kernels.add_argument("--paths", help="kernel paths to time, e.g. amx,avx512,avx2 (default: every SIMD path this CPU has)")
    kernels.add_argument("--seconds", type=float, default=0.3, help="minimum timing per layer and thread count")
    kernels.set_defaults(func=_bench_kernels)
    model = bench_sub.add_parser("model", help="whole-model latency (median, p90) and peak memory of .pte files",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model.add_argument("--pte", required=True, help="the program to time (e.g. the BiDRN .pte)")
    model.add_argument("--vs", help="a second program timed side by side (e.g. the full-precision Hand4Whole .pte)")
    model.add_argument("--threads", type=int, default=1, help="ExecuTorch threads (default 1)")
    model.add_argument("--runs", type=int, default=30, help="timed runs per program after warm-up (default 30)")
    model.add_argument("--warmup", type=int, default=3, help="untimed runs per program first (default 3)")
    model.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    model.set_defaults(func=_bench_model)
    prof = bench_sub.add_parser("profile", help="where one .pte's time goes, op by op (ExecuTorch ETDump)",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    prof.add_argument("--pte", required=True, help="the program to profile")
    prof.add_argument("--threads", type=int, default=1, help="ExecuTorch threads (default 1)")
    prof.add_argument("--runs", type=int, default=10, help="profiled runs after warm-up (default 10)")
    prof.add_argument("--warmup", type=int, default=3, help="unprofiled runs first (default 3)")
    prof.add_argument("--top", type=int, default=25, help="event groups to list (default 25)")
    prof.add_argument("--json", action="store_true", help="print the whole profile as JSON")
    prof.set_defaults(func=_bench_profile)
    from mobile_export import phone_bench

    phone = bench_sub.add_parser("phone", help="binary conv layers on one core of a phone (adb) against its popcount "
                                               "ceiling", description=phone_bench.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    where = phone.add_mutually_exclusive_group()
    where.add_argument("--adb", nargs="?", const="", metavar="SERIAL",
                       help="run on the phone adb sees, or the one with this serial (the default)")
    where.add_argument("--qemu", metavar="CPU", help="run under qemu-aarch64 -cpu CPU to check the build (max, "
                                                    "cortex-a53); emulated timings mean nothing")
    where.add_argument("--host", action="store_true", help="run the same program built for this machine")
    phone.add_argument("--cpu", type=int, help="pin to this CPU (a phone's big cores are numbered last)")
    phone.add_argument("--layers", help="ref3x3_256_28 (default), dabnn3x3_128_28, all (those two), bidrn (every "
                                        "binary conv of BiDRN, as bench kernels names them), comma-separated")
    phone.add_argument("--shape", action="append", metavar="[NAME=]N,C,H,W,O,K,S,P",
                       help="also a conv of this shape, square kernel (repeatable)")
    phone.add_argument("--path", help="kernel path (neon_dotprod, neon, scalar; on a host amx, avx512, avx2) or all; "
                                      "default: the one dispatch picks")
    phone.add_argument("--seconds", type=float, default=2.0, help="timing per layer and path (default 2)")
    phone.add_argument("--out", help="also write the JSON report to this file")
    phone.add_argument("--plot", help="also draw each layer's share of the ceiling to this PNG")
    phone.add_argument("--json", action="store_true", help="print the JSON report instead of a table")
    phone.set_defaults(func=_bench_phone)

    from mobile_export import runner

    run = bench_sub.add_parser("runner", help="a .pte in ExecuTorch's C++ runtime, here or on aarch64 under qemu: "
                                              "latency, peak memory, outputs checked", description=runner.__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--pte", required=True, help="the program (the input shape from its export report beside it, "
                                                  "else from the program)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--host", action="store_true", help="this machine's runtime (the default)")
    where.add_argument("--qemu", metavar="CPU", help="aarch64 runtime under qemu-aarch64 -cpu CPU (max, neoverse-n1, "
                                                     "cortex-a76, cortex-a53); emulated timings mean nothing")
    run.add_argument("--runs", type=int, default=5, help="timed executes (default 5)")
    run.add_argument("--warmup", type=int, default=1, help="untimed executes first (default 1)")
    run.add_argument("--threads", type=int, default=1, help="ExecuTorch threads (default 1)")
    run.add_argument("--check", action="store_true",
                     help="compare the outputs with ExecuTorch's Python runtime on this machine")
    run.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    run.set_defaults(func=_bench_runner)
