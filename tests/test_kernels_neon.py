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

CROSS_CXX = "aarch64-linux-gnu-g++"
TOOLS = (CROSS_CXX, "qemu-aarch64", "cmake")
missing = [t for t in TOOLS if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(
    bool(missing), reason=f"aarch64 cross toolchain absent ({', '.join(missing)} not on PATH); install with "
                          "apt-get install --no-install-recommends g++-aarch64-linux-gnu qemu-user cmake")


@pytest.fixture(scope="module")
def aarch64_tree():
    # static: qemu-user then needs no aarch64 sysroot; the same (cached) tree `bidrn bench phone` builds
    from mobile_export import phone_bench

    return phone_bench.build_tree("aarch64")


@pytest.fixture(scope="module")
def selftest(aarch64_tree) -> str:
    return str(aarch64_tree / "bidrn_selftest")


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


def test_the_app_archive_cross_builds_for_aarch64_with_every_op_registered(aarch64_tree):
    """`bidrn_et_kernels_static` (the ops and kernels for an app's own ExecuTorch runtime) built for aarch64
    against the installed executorch's headers: an archive of aarch64 objects holding each op's `.out` kernel,
    its registration name and the NEON count."""
    build = aarch64_tree
    archive = build / "libbidrn_et_kernels_static.a"
    headers = subprocess.run(["aarch64-linux-gnu-objdump", "-f", str(archive)], capture_output=True, text=True).stdout
    formats = set(re.findall(r"file format (\S+)", headers))
    assert formats == {"elf64-littleaarch64"}, formats
    symbols = subprocess.run(["aarch64-linux-gnu-nm", "-C", "--defined-only", str(archive)], capture_output=True,
                             text=True).stdout
    ops = ["binary_conv2d", "binary_conv_transpose2d", "binary_linear", "pack_signs", "subsample", "int8_pointwise",
           "int8_conv_transpose2d", "int8_conv2d", "roi_align", "sample_points", "skin"]
    data = archive.read_bytes()
    for op in ops:
        # the boxed wrapper EXECUTORCH_LIBRARY instantiates around the op's kernel
        assert re.search(rf"WrapUnboxedIntoFunctor<.*&bidrn::(\(anonymous namespace\)::)?{op}_out, ", symbols), op
        assert f"{op}.out".encode() in data, op  # the name EXECUTORCH_LIBRARY registers
    assert "neon_count_loop" in symbols and "bidrn::binary_conv(" in symbols
