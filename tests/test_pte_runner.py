"""The C++ program runner (mobile_export/runner.py, kernels/pte_runner.cpp): a .pte in ExecuTorch's C++ runtime
with the bidrn:: ops linked in from the app archive, on this machine and on aarch64: the aarch64 build of the
same executorch release (fetched from PyPI) under qemu-user, as a Linux-on-Arm device runs it. The binary
layer's integer accumulators must be eq. 5's exactly, on every runtime and kernel path (the whole network on
aarch64: tests/test_export_pte.py)."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
from torch.nn import functional as F

from bidrn.nn.layers import BinaryConv2d
from mobile_export import export, kernel_library, ops, runner

AARCH64_TOOLS = ("aarch64-linux-gnu-g++", "qemu-aarch64", "cmake")
missing = [t for t in AARCH64_TOOLS if shutil.which(t) is None]
needs_aarch64 = pytest.mark.skipif(
    bool(missing), reason=f"aarch64 cross toolchain absent ({', '.join(missing)} not on PATH); install with "
                          "apt-get install --no-install-recommends g++-aarch64-linux-gnu qemu-user cmake")


@pytest.fixture(scope="module")
def layer_program(tmp_path_factory):
    """A 3 x 3 binary conv with odd channel counts and zero padding, its raw accumulators as the output:
    (program, input, eq. 5's accumulators computed with PyTorch's conv on the +-1 signs)."""
    torch.manual_seed(0)
    layer = BinaryConv2d(37, 70, 3, padding=1).eval()
    x = torch.randn(1, 37, 13, 11)
    with torch.no_grad():
        signs_x, signs_w = layer.input_quantizer(x), ops.signs_from_bits(ops.is_negative(layer.weight))
        want = F.conv2d(signs_x, signs_w, padding=1).to(torch.int32)
    packed = export.pack_layer("conv", layer)
    packed.output = ops.Output.ACCUMULATOR
    path = tmp_path_factory.mktemp("runner") / "layer.pte"
    export.save_program(packed, x, path)
    return path, x, want


def test_host_runner_gives_eq5_accumulators_and_reports_time_and_memory(layer_program):
    path, x, want = layer_program
    report = runner.run(path, "host", runs=3, warmup=1, image=x)
    (got,) = report["outputs"]
    assert got.dtype == "int32" and torch.equal(torch.from_numpy(got.copy()), want)
    assert len(report["ms"]) == 3 and all(ms > 0 for ms in report["ms"])
    assert report["peak_rss_kb"] > 1000 and report["kernel_path"] == kernel_library.active_path()
    assert report["kernel_threads"] == 1 and runner.run(path, "host", threads=2, image=x)["kernel_threads"] == 2
    assert runner.compare(report) == {"0": 0.0}
    # without an export report beside it, the input shape comes from the program itself
    assert not path.with_name(path.name + ".json").exists() and runner.example_input(path).shape == x.shape
    text = runner.format_report(report, runner.compare(report))
    assert "bidrn kernel path" in text and "peak resident memory" in text


@needs_aarch64
@pytest.mark.parametrize("cpu, path", [("neoverse-n1", "neon_dotprod"), ("cortex-a53", "neon")])
def test_aarch64_executorch_runtime_runs_the_layer_bit_exact_under_qemu(layer_program, cpu, path):
    program, x, want = layer_program
    report = runner.run(program, "aarch64", qemu_cpu=cpu, runs=1, warmup=0, image=x)
    assert report["emulated"] and report["arch"] == "aarch64" and report["kernel_path"] == path
    assert f"aarch64 under qemu-aarch64 -cpu {cpu} (emulated" in runner.format_report(report)
    (got,) = report["outputs"]
    assert torch.equal(torch.from_numpy(got.copy()), want)


def test_runner_refuses_an_input_of_the_wrong_size_with_what_it_expected(layer_program, tmp_path):
    program, _, _ = layer_program
    short = tmp_path / "short.f32"
    torch.zeros(10).numpy().tofile(short)
    done = subprocess.run([str(runner.build("host")), str(program), "--input", str(short)], capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert "has 40 bytes; input 0 takes 5291 float32 values (21164 bytes)" in done.stderr  # 37 x 13 x 11
    done = subprocess.run([str(runner.build("host")), str(program), "--runs", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "--runs takes an integer >= 1, got '0'" in done.stderr


def test_outputs_file_reader_refuses_a_foreign_file(tmp_path):
    foreign = tmp_path / "o.bin"
    foreign.write_bytes(b"not ours")
    with pytest.raises(runner.RunnerError, match="not a bidrn_pte_runner output file"):
        runner.read_outputs(foreign)
