"""`bidrn bench phone` and the popcount ceilings it measures layers against.

The stand-alone bench program (mobile_export/kernels/kernel_bench.cpp) is built for this host and, with the
aarch64 cross toolchain, as the static binary a phone runs; here it runs under qemu-user (as the NEON
self-test does), where only the dispatch, the MAC counts and the report's shape mean anything. No phone is
attached here, so the adb runner is checked for its refusal only.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from mobile_export import kernel_library, phone_bench

ARM_TOOLS = [t for t in (phone_bench.CROSS_CXX, phone_bench.QEMU) if shutil.which(t) is None]
needs_arm = pytest.mark.skipif(bool(ARM_TOOLS), reason=f"{', '.join(ARM_TOOLS)} not on PATH; install with apt-get "
                               "install --no-install-recommends g++-aarch64-linux-gnu qemu-user")

# Binary MACs of a conv, N x O x OH x OW x C x K x K: the reference layer of PERFORMANCE.md (462.4 M) and
# daBNN's 28 x 28 x 128 3 x 3 layer.
REF_MACS = 1 * 256 * 28 * 28 * 256 * 3 * 3
DABNN_MACS = 1 * 128 * 28 * 28 * 128 * 3 * 3

# What a core can issue at most, per cycle, for each path's count (the MACs of one step over its
# instructions, times four vector pipes, the widest of the cores the project runs on); `amx`: one 16 x 16 x 64
# tile multiply per 16 cycles (Sapphire / Emerald Rapids). A rate above this means the loop was optimised away.
MAX_PER_CYCLE = {"avx512": 4 * 512 / 3, "avx2": 4 * 128 / 2, "scalar": 6 * 64 / 3, "amx": 16 * 16 * 64 / 16}


def test_the_ceiling_loops_run_at_a_rate_a_core_can_issue():
    assert REF_MACS == 462_422_016  # "462.4 M MACs" (PERFORMANCE.md)
    clock = kernel_library.probe()["clock_ghz"]
    for path in kernel_library.supported_paths():
        per_ns = kernel_library.count_ceiling(path, 20_000)
        assert per_ns is not None and per_ns > 0, path
        # 25 % of slack for the clock probe and the loop not running in the same microseconds
        assert per_ns / clock <= 1.25 * MAX_PER_CYCLE[path], (path, per_ns, clock)
    assert kernel_library.count_ceiling("no_such_path") is None


def _check_report(report: dict, macs: dict[str, int], paths: list[str]) -> None:
    assert [p["path"] for p in report["paths"]] == paths
    for p in report["paths"]:
        assert {layer["name"]: layer["macs"] for layer in p["layers"]} == macs
        for layer in p["layers"]:
            assert layer["rounds"] >= 3 and layer["runs"] >= layer["rounds"]
            assert 0 < layer["min_ms"] <= layer["median_ms"]
            assert layer["ceiling_macs_per_ns"] > 0 and layer["fraction_of_ceiling"] > 0


def test_host_run_times_the_dispatched_path_against_its_ceiling(tmp_path):
    report = phone_bench.run("host", layers=["dabnn3x3_128_28"], shapes=["2,64,16,16,32,1,1,0"], seconds=0.2)
    assert report["runner"] == "host" and not report["emulated"]
    assert report["supported_paths"] == ",".join(kernel_library.supported_paths())
    _check_report(report, {"dabnn3x3_128_28": DABNN_MACS, "conv_2,64,16,16,32,1,1,0": 2 * 32 * 16 * 16 * 64},
                  [kernel_library.supported_paths()[0]])
    for layer in report["paths"][0]["layers"]:
        # a layer does the ceiling loop's count and more (packing, im2col, epilogue, loads): below it, up to the
        # noise of rounds on a shared core
        assert layer["fraction_of_ceiling"] < 1.2
    text = phone_bench.format_report(report)
    assert "this host" in text and "dabnn3x3_128_28" in text and "meets 70 %" not in text
    from PIL import Image

    png = tmp_path / "plots" / "shares.png"
    phone_bench.plot_report(report, png)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 100
    assert [p.name for p in png.parent.iterdir()] == ["shares.png"]
    with pytest.raises(ValueError, match="no layers"):
        phone_bench.plot_report({**report, "paths": []}, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()
    # an unpinned layer that ran on two CPUs is flagged (a phone moves an unpinned process between core types)
    moved = json.loads(json.dumps(report))
    moved["paths"][0]["layers"][0]["cpus"] = [0, 1]
    assert "1 of the layers ran on more than one CPU (dabnn3x3_128_28)" in phone_bench.format_report(moved)
    # the same report as a Linux Arm board's --host run (NEON paths, not emulated) gets the target's verdict
    board = {**report, "supported_paths": "neon_dotprod,neon,scalar"}
    verdicts = [line.endswith(("meets 70 %", "below 70 %")) for line in phone_bench.format_report(board).splitlines()
                if line.startswith("dabnn3x3_128_28")]
    assert verdicts == [True]


def test_cpu_pins_the_run_to_one_core():
    cpu = os.cpu_count() - 1  # the last CPU: a phone's big cores are numbered last
    report = phone_bench.run("host", shapes=["1,64,8,8,64,3,1,1"], seconds=0.05, cpu=cpu)
    assert report["cpu"] == cpu and report["paths"][0]["layers"][0]["cpus"] == [cpu]
    assert "more than one CPU" not in phone_bench.format_report(report)


@needs_arm
def test_aarch64_build_runs_under_qemu_and_dispatches_by_cpu_features():
    shape = "1,64,8,8,64,3,1,1"
    macs = {f"conv_{shape}": 64 * 8 * 8 * 64 * 9}
    with_dotprod = phone_bench.run("qemu", qemu_cpu="max", shapes=[shape], path="all", seconds=0.05)
    assert with_dotprod["emulated"] and with_dotprod["supported_paths"] == "neon_dotprod,neon,scalar"
    _check_report(with_dotprod, macs, ["neon_dotprod", "neon", "scalar"])
    armv8_0 = phone_bench.run("qemu", qemu_cpu="cortex-a53", shapes=[shape], seconds=0.05)
    _check_report(armv8_0, macs, ["neon"])  # no dotprod: dispatch falls back to plain NEON
    assert "emulated" in phone_bench.format_report(armv8_0)


def _bidrn(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bidrn.cli", "bench", "phone", *args], capture_output=True,
                          text=True, timeout=600, env=env)


@needs_arm
def test_cli_prints_the_table_and_writes_the_report(tmp_path):
    out = tmp_path / "reports" / "phone.json"
    done = _bidrn("--qemu", "max", "--shape", "1,64,8,8,64,3,1,1", "--seconds", "0.05", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "emulated" in done.stdout and "neon_dotprod" in done.stdout
    report = json.loads(out.read_text())
    assert report["paths"][0]["layers"][0]["macs"] == 64 * 8 * 8 * 64 * 9
    assert [p.name for p in out.parent.iterdir()] == ["phone.json"]  # no temporary file left


def test_cli_refuses_bad_arguments_in_one_line(tmp_path):
    out = tmp_path / "phone.json"
    for args, expected in [(["--host", "--shape", "1,64,8,8"],
                            "takes 8 integers N,C,H,W,O,K,S,P (after an optional NAME=), got '1,64,8,8'"),
                           (["--host", "--layers", "ref3x3_256_28,nope"], "no layer named 'nope'")]:
        done = _bidrn(*args, "--out", str(out))
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()
    # the same refusals reach Python callers as ValueError
    with pytest.raises(ValueError, match="path 'nope' is not available here"):
        phone_bench.run("host", path="nope", seconds=0.05)
    with pytest.raises(ValueError, match="seconds must be > 0"):
        phone_bench.run("host", seconds=0)


def test_adb_runner_without_adb_says_what_it_needs():
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if not os.path.exists(os.path.join(d, "adb")))
    done = _bidrn("--seconds", "0.1", env={**os.environ, "PATH": path})
    assert done.returncode == 2
    assert "--adb needs `adb` on PATH" in done.stderr and "Traceback" not in done.stderr


def test_bidrn_layers_are_timed_by_name_each_against_the_count_it_runs_on():
    from mobile_export.layer_shapes import BIDRN_LAYERS

    convs = [l for l in BIDRN_LAYERS if l.kind == "conv"]
    report = phone_bench.run("host", layers=["bidrn"], seconds=0.01)
    path = report["paths"][0]
    assert [layer["name"] for layer in path["layers"]] == [l.name for l in convs]
    for l, layer in zip(convs, path["layers"]):
        oh = (l.height + 2 * l.padding - l.kernel) // l.stride + 1
        ow = (l.width + 2 * l.padding - l.kernel) // l.stride + 1
        assert layer["macs"] == l.batch * l.out_channels * oh * ow * l.in_channels * l.kernel ** 2, l.name
        taken = path["path"] != "amx" or kernel_library.amx_takes(
            (l.batch, l.in_channels, l.height, l.width, l.out_channels, oh, ow, l.kernel, l.kernel, l.stride, l.stride,
             l.padding, l.padding))
        assert layer["ceiling_path"] == (path["path"] if taken else "avx512"), l.name


@needs_arm
def test_a_runner_that_fails_is_one_line_with_its_own_words():
    done = _bidrn("--qemu", "no-such-cpu", "--seconds", "0.05")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "qemu-aarch64 -cpu no-such-cpu failed (exit status" in done.stderr and "no-such-cpu" in done.stderr
