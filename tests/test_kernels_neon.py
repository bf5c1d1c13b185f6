"""The aarch64 NEON kernels, cross-compiled with Debian's aarch64 g++ and run under qemu-user.

The self-test binary (mobile_export/kernels/selftest.cpp) checks every path the emulated CPU supports
against a naive convolution, bit for bit, on random shapes with odd channel counts, borders, strides and
transposed convs, and the fused epilogue (residual, pooled residual, partial sum, post affine, shortcut,
FDR's branches) against the same steps written out in float, bidrn::int8_pointwise and bidrn::int8_conv_transpose2d
against their definitions, and reports which path dispatch picked:
  -cpu max         has dotprod: dispatch must pick neon_dotprod, and neon and scalar are checked too
  -cpu cortex-a53  ARMv8.0 without dotprod: dispatch must fall back to plain neon
Needs: apt-get install --no-install-recommends g++-aarch64-linux-gnu qemu-user (and cmake).
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from mobile_export.kernel_library import SOURCE_DIR

CROSS_CXX = "aarch64-linux-gnu-g++"
TOOLS = (CROSS_CXX, "qemu-aarch64", "cmake")
missing = [t for t in TOOLS if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(
    bool(missing), reason=f"aarch64 cross toolchain absent ({', '.join(missing)} not on PATH); install with "
                          "apt-get install --no-install-recommends g++-aarch64-linux-gnu qemu-user cmake")


def build_selftest(build, *cmake_args: str) -> str:
    """Configures and builds the stand-alone self-test into `build`; returns the binary's path."""
    configure = ["cmake", "-S", str(SOURCE_DIR), "-B", str(build), *cmake_args]
    for cmd in (configure, ["cmake", "--build", str(build), "--target", "bidrn_selftest", "--parallel", "2"]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return str(build / "bidrn_selftest")


@pytest.fixture(scope="module")
def selftest(tmp_path_factory) -> str:
    # static: qemu-user then needs no aarch64 sysroot
    return build_selftest(tmp_path_factory.mktemp("aarch64"), "-DCMAKE_SYSTEM_NAME=Linux",
                          "-DCMAKE_SYSTEM_PROCESSOR=aarch64", f"-DCMAKE_CXX_COMPILER={CROSS_CXX}",
                          "-DBIDRN_SELFTEST_STATIC=ON")


def run_under_qemu(binary: str, cpu: str, expect: str, cases: int) -> str:
    done = subprocess.run(["qemu-aarch64", "-cpu", cpu, binary, "--expect-path", expect, "--cases", str(cases)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_neon_paths_are_bit_exact_and_dotprod_is_dispatched_on_a_cpu_that_has_it(selftest):
    out = run_under_qemu(selftest, "max", "neon_dotprod", cases=60)
    for path in ("neon_dotprod", "neon", "scalar"):
        assert f"{path}: bit-exact" in out
        # bidrn::int8_pointwise, bidrn::int8_conv_transpose2d and bidrn::int8_conv2d checked too
        assert re.search(f"{path}: .*int8 pointwise 0 of [1-9].*int8 deconv 0 of [1-9].*int8 conv 0 of [1-9]", out)


def test_dispatch_falls_back_to_plain_neon_on_a_cortex_a53(selftest):
    out = run_under_qemu(selftest, "cortex-a53", "neon", cases=20)
    assert "supported: neon,scalar" in out
    assert "neon: bit-exact" in out
