"""The bidrn:: binary-layer ops: reference semantics, every x86/scalar kernel path bit-exact against the
reference, and the .pte running in ExecuTorch's runtime. (NEON under qemu: tests/test_kernels_neon.py.)"""
from __future__ import annotations

import ctypes
import random

import pytest
import torch
from torch.nn import functional as F

from mobile_export import kernel_library, ops


def sign(x):
    return torch.where(x >= 0, 1.0, -1.0)


def with_special_values(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Exact zeros, negative zeros and NaN: sign(0) = sign(-0) = +1, sign(NaN) = -1 (torch.where(x >= 0))."""
    flat = x.flatten().clone()
    idx = torch.randperm(flat.numel(), generator=gen)[: max(3, flat.numel() // 30)]
    flat[idx[0::3]] = 0.0
    flat[idx[1::3]] = -0.0
    flat[idx[2::3]] = float("nan")
    return flat.view_as(x)


# ---------------------------------------------------------------- reference semantics

def test_packed_bit_layout_puts_channel_c_at_bit_c_mod_64_of_word_c_div_64():
    x = torch.ones(1, 130, 1, 1)
    x[0, [0, 65, 129]] = -1.0
    words = ops.pack_signs_reference(x)
    assert words.shape == (1, 1, 1, 3)
    assert words.flatten().tolist() == [1, 2, 2]


def test_reference_conv_pads_with_zero_after_binarizing():
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 5, 6, 7, generator=gen), torch.randn(3, 5, 3, 3, generator=gen)
    acc = ops.binary_conv2d_reference(x, ops.pack_conv_weight(w), torch.ones(3), torch.zeros(3), None, 5,
                                      (3, 3), (1, 1), (1, 1), ops.Output.ACCUMULATOR)
    want = F.conv2d(sign(x), sign(w), padding=1)
    assert torch.equal(acc, want.to(torch.int32))
    # A corner output sees 4 of 9 taps: |acc| <= 4 * 5 channels.
    assert acc[:, :, 0, 0].abs().max() <= 20


def test_reference_with_alpha_as_scale_matches_the_eager_binary_conv_layer():
    from bidrn.nn import BinaryConv2d

    torch.manual_seed(0)
    layer = BinaryConv2d(13, 8, 3, stride=2, padding=1).eval()
    x = torch.randn(1, 13, 9, 10)
    alpha = layer.weight.abs().mean(dim=(1, 2, 3))  # eq. 4, folded into the epilogue's scale at export
    y = torch.ops.bidrn.binary_conv2d(x, ops.pack_conv_weight(layer.weight.detach()), alpha, torch.zeros(8), None,
                                      13, [3, 3], [2, 2], [1, 1])
    torch.testing.assert_close(y, layer(x).detach(), rtol=1e-5, atol=1e-5)


def test_reference_transposed_conv_matches_conv_transpose2d_of_signs():
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(1, 7, 4, 3, generator=gen), torch.randn(7, 5, 4, 4, generator=gen)
    acc = ops.binary_conv_transpose2d_reference(x, ops.pack_conv_transpose_weight(w, (2, 2), (1, 1)),
                                                torch.ones(5), torch.zeros(5), None, 7, (4, 4), (2, 2), (1, 1),
                                                (0, 0), ops.Output.ACCUMULATOR)
    assert torch.equal(acc, F.conv_transpose2d(sign(x), sign(w), stride=2, padding=1).to(torch.int32))


def test_rprelu_epilogue_follows_eq_6():
    x, w = torch.tensor([[1.0, -1.0]]), torch.tensor([[1.0, 1.0], [1.0, -1.0]])  # acc = 0, 2
    beta, gamma, zeta = torch.tensor([0.5, 0.5]), torch.tensor([1.0, 1.0]), torch.tensor([0.25, 0.25])
    y = torch.ops.bidrn.binary_linear(x, ops.pack_linear_weight(w), torch.ones(2), torch.zeros(2),
                                      torch.stack([beta, gamma, zeta]), 2)
    # acc 0: 0.5 * (0 - 1) + 0.25 = -0.25; acc 2: (2 - 1) + 0.25 = 1.25
    assert y.tolist() == [[-0.25, 1.25]]


# ---------------------------------------------------------------- C++ paths, bit-exact

def random_problem(rng: random.Random, gen: torch.Generator):
    """A random conv / transposed conv / linear with odd channel counts, borders and strides."""
    kind = rng.choice(["conv", "conv", "conv", "transposed", "linear"])
    c = rng.choice([1, 3, 31, 63, 64, 65, 127, 130, 200])
    o = rng.choice([1, 5, 6, 7, 13, 64, 70])
    n = rng.choice([1, 2])
    if kind == "linear":
        shape = dict(kind=kind, n=n, c=c, o=o, h=1, w=1, k=(1, 1), s=(1, 1), p=(0, 0), oh=1, ow=1)
    else:
        k = (rng.randint(1, 4), rng.randint(1, 4))
        s = (rng.randint(1, 2), rng.randint(1, 3))
        p = (rng.randint(0, k[0] - 1), rng.randint(0, k[1] - 1))
        if kind == "transposed":
            h, w = rng.randint(1, 7), rng.randint(1, 7)
            oh, ow = (h - 1) * s[0] - 2 * p[0] + k[0], (w - 1) * s[1] - 2 * p[1] + k[1]
            if oh < 1 or ow < 1:
                return random_problem(rng, gen)
        else:
            h, w = rng.randint(k[0], 12), rng.randint(k[1], 12)
            oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
        shape = dict(kind=kind, n=n, c=c, o=o, h=h, w=w, k=k, s=s, p=p, oh=oh, ow=ow)
    x = with_special_values(torch.randn(n, c, shape["h"], shape["w"], generator=gen), gen)
    if kind == "transposed":
        weight = ops.pack_conv_transpose_weight(torch.randn(c, o, *shape["k"], generator=gen), shape["s"], shape["p"])
    else:
        weight = ops.pack_conv_weight(torch.randn(o, c, *shape["k"], generator=gen))
    scale = torch.rand(o, generator=gen) + 0.01
    bias = torch.randn(o, generator=gen)
    rprelu = torch.randn(3, o, generator=gen) if rng.random() < 0.5 else None
    return shape, x, weight, scale, bias, rprelu


def reference(shape, x, weight, scale, bias, rprelu, output):
    if shape["kind"] == "linear":
        return ops.binary_linear_reference(x.flatten(1), weight, scale, bias, rprelu, shape["c"], output)
    if shape["kind"] == "transposed":
        return ops.binary_conv_transpose2d_reference(x, weight, scale, bias, rprelu, shape["c"], shape["k"],
                                                     shape["s"], shape["p"], (0, 0), output)
    return ops.binary_conv2d_reference(x, weight, scale, bias, rprelu, shape["c"], shape["k"], shape["s"],
                                       shape["p"], output)


def run_c_kernel(shape, x, weight, scale, bias, rprelu, output, packed_input=False):
    lib = kernel_library.load()
    dims = [shape["n"], shape["c"], shape["h"], shape["w"], shape["o"], shape["oh"], shape["ow"], *shape["k"],
            *shape["s"], *shape["p"]]
    like = reference(shape, x, weight, scale, bias, rprelu, output)
    out = torch.empty(like.shape, dtype=like.dtype)  # NCHW-contiguous, whatever strides conv2d chose
    xf = None if packed_input else x.contiguous()
    xp = ops.pack_signs_reference(x).contiguous() if packed_input else None
    ptr = lambda t: ctypes.c_void_p(t.data_ptr()) if t is not None else None  # noqa: E731
    err = lib.bidrn_binary_conv((ctypes.c_int64 * 13)(*dims), int(shape["kind"] == "transposed"), ptr(xf), ptr(xp),
                                ptr(weight.contiguous()), ptr(scale), ptr(bias),
                                ptr(rprelu.contiguous() if rprelu is not None else None), int(output), ptr(out))
    assert err is None, err.decode()
    return out, like


X86_AND_SCALAR_PATHS = ["amx", "avx512", "avx2", "scalar"]


def require_path(path: str) -> None:
    """Skips the test on a CPU without kernel path `path`."""
    if path not in kernel_library.supported_paths():
        pytest.skip(f"this CPU has no {path} (available: {kernel_library.supported_paths()})")


@pytest.mark.parametrize("path", X86_AND_SCALAR_PATHS)
def test_kernel_path_is_bit_exact_against_the_reference_on_random_shapes(path):
    require_path(path)
    rng, gen = random.Random(path), torch.Generator().manual_seed(7)
    with kernel_library.using_path(path):
        for case in range(40):
            problem = random_problem(rng, gen)
            assert_every_output_bit_exact(problem, f"{path} case {case} {problem[0]}")


def assert_every_output_bit_exact(problem, label: str) -> None:
    """Every output form against the reference, and the accumulator from packed input too."""
    for output in ops.Output:
        got, want = run_c_kernel(*problem, output)
        # Float outputs compared bit for bit (mul then add on both sides, no FMA).
        assert torch.equal(got.view(torch.int32) if got.is_floating_point() else got,
                           want.view(torch.int32) if want.is_floating_point() else want), f"{label} output {output.name}"
    got, want = run_c_kernel(*problem, ops.Output.ACCUMULATOR, packed_input=True)
    assert torch.equal(got, want), f"{label} from packed input"


def table_count_problem(gen: torch.Generator, kind: str, c: int, o: int, h: int, w: int, k: int, s: int, p: int):
    if kind == "transposed":
        oh, ow = (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k
        weight = ops.pack_conv_transpose_weight(torch.randn(c, o, k, k, generator=gen), (s, s), (p, p))
    else:
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        weight = ops.pack_conv_weight(torch.randn(o, c, k, k, generator=gen))
    shape = dict(kind=kind, n=2, c=c, o=o, h=h, w=w, k=(k, k), s=(s, s), p=(p, p), oh=oh, ow=ow)
    x = with_special_values(torch.randn(2, c, h, w, generator=gen), gen)
    rprelu = torch.randn(3, o, generator=gen)
    return shape, x, weight, torch.rand(o, generator=gen) + 0.01, torch.randn(o, generator=gen), rprelu


# Shapes that take AVX2's lookup-table count (rows of 2+ words, 96+ pixels an output phase; docs/kernels.md):
# 3 x 3 stride 1 and 2 with borders, an odd 1 x 1 of 3 words, more than 64 output channels (two channel
# chunks in one work item), a transposed conv whose phases have 100 pixels, and 4 tiles plus a partial one.
TABLE_COUNT_SHAPES = [
    ("conv", 200, 70, 12, 12, 3, 1, 1),
    ("conv", 65, 129, 21, 23, 3, 2, 1),
    ("conv", 130, 65, 10, 11, 1, 1, 0),
    ("conv", 64, 7, 13, 14, 3, 1, 1),
    ("transposed", 129, 64, 10, 10, 4, 2, 1),
]


# Shapes the AMX path takes (stride 1, rows of 9+ words, 512+ output positions; bconv_amx.cpp): 3 x 3 with and
# without padding on odd channel counts and widths that are not multiples of its 16-position groups, a 2 x 2
# kernel padded to an output larger than its input, more than 32 output channels (two channel pairs, the
# second partial), the reference layer, outputs 48 and 16 wide (whole-row groups; the second also in the
# 4-group order of 256+ channels' worth of words), a small plane (308 positions: small weights), and a 4 x 4
# kernel without padding on an 11-wide output (6 dropped positions a padded row: groups whose valid lanes are
# gathered from both sides of several dropped runs, Group::src).
AMX_SHAPES = [
    ("conv", 65, 70, 17, 19, 3, 1, 1),
    ("conv", 129, 33, 15, 23, 3, 1, 0),
    ("conv", 64, 16, 18, 30, 3, 1, 2),
    ("conv", 200, 48, 16, 16, 2, 1, 1),
    ("conv", 256, 256, 28, 28, 3, 1, 1),
    ("conv", 65, 40, 20, 48, 3, 1, 1),
    ("conv", 200, 40, 16, 16, 3, 1, 1),
    ("conv", 100, 40, 14, 11, 3, 1, 1),
    ("conv", 64, 20, 30, 14, 4, 1, 0),
    # transposed, k = 2 + 2 p, stride 2 (the tile unit's deconv kernel): BoxNet's 256 -> 256 at 16 x 12 (batch
    # 2), a partial last word of channels with groups crossing row ends at 9 wide, and k6 s2 p2 (3 x 3 taps a
    # phase) at 8 wide
    ("transposed", 256, 256, 16, 12, 4, 2, 1),
    ("transposed", 100, 64, 11, 9, 4, 2, 1),
    ("transposed", 64, 32, 12, 8, 6, 2, 2),
]


def amx_takes(kind: str, c: int, o: int, h: int, w: int, k: int, s: int, p: int, n: int = 2) -> bool:
    if kind == "transposed":
        oh, ow = (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k
    else:
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    return kernel_library.amx_takes((n, c, h, w, o, oh, ow, k, k, s, s, p, p), kind == "transposed")


@pytest.mark.parametrize("path", ["amx", "avx512"])
def test_amx_shapes_are_bit_exact_against_the_reference(path):
    require_path(path)
    if path == "amx":  # the shapes do run on the tile unit, not on the AVX-512 fallback
        assert all(amx_takes(*spec) for spec in AMX_SHAPES)
    gen = torch.Generator().manual_seed(13)
    with kernel_library.using_path(path):
        for spec in AMX_SHAPES:
            assert_every_output_bit_exact(table_count_problem(gen, *spec), f"{path} {spec}")


def test_amx_expanded_weights_follow_new_words_at_the_same_address():
    """The AMX path keeps each layer's expanded weights from call to call (bconv_amx.cpp, expanded_weights),
    found by the packed weights' address: words rewritten in place must give the new conv, not the old one."""
    require_path("amx")
    gen = torch.Generator().manual_seed(17)
    spec = ("conv", 129, 40, 16, 20, 3, 1, 1)
    assert amx_takes(*spec)
    shape, x, weight, scale, bias, rprelu = table_count_problem(gen, *spec)
    weight = weight.contiguous()
    with kernel_library.using_path("amx"):
        for _ in range(3):
            got, want = run_c_kernel(shape, x, weight, scale, bias, rprelu, ops.Output.ACCUMULATOR)
            assert torch.equal(got, want)
            address = weight.data_ptr()
            weight.copy_(torch.randint(-2**62, 2**62, weight.shape, generator=gen, dtype=weight.dtype))
            assert weight.data_ptr() == address


TWO_THREADS = """
import sys, torch
from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
_unsafe_reset_threadpool(2)
from mobile_export import export, kernel_library
kernel_library.load()
assert kernel_library.thread_count() == 2, kernel_library.thread_count()
x, want = torch.load(sys.argv[2])
for path in kernel_library.supported_paths():
    with kernel_library.using_path(path):
        method, _ = export.load_program(sys.argv[1])
        got = method.execute([x])[0]
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), path
print("bit-exact on", kernel_library.supported_paths())
"""


def assert_bit_exact_on_two_threads(pte, x: torch.Tensor, want: torch.Tensor, tmp_path) -> None:
    """Runs the program with ExecuTorch's threadpool at 2 threads (set before any program loads, hence a
    child process) on every kernel path this CPU has; every bit of its output must equal `want`."""
    import subprocess
    import sys

    torch.save((x, want), tmp_path / "io.pt")
    done = subprocess.run([sys.executable, "-c", TWO_THREADS, str(pte), str(tmp_path / "io.pt")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "bit-exact" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("kind, c, o, h, w, k, s, p", [("conv", 129, 70, 24, 24, 3, 1, 1),
                                                      ("transposed", 100, 64, 11, 9, 4, 2, 1)])
def test_binary_conv_on_two_threads_keeps_every_bit(tmp_path, kind, c, o, h, w, k, s, p):
    """A 3 x 3 binary conv the `amx` path takes in its 4-group order (129 channels: 27 words a row) and a
    transposed conv it takes through the deconv kernel, with float input, on ExecuTorch's threadpool at 2
    threads on every path: work items, the float input's fill and the weights' expansion split across
    threads, the reference's bits."""
    from mobile_export import bench_kernels, export
    from mobile_export.layer_shapes import LayerShape

    layer = LayerShape("two_threads", "conv_transpose" if kind == "transposed" else "conv", 2, c, o, h, w, k, s, p)
    assert amx_takes(kind, c, o, h, w, k, s, p) or "amx" not in kernel_library.supported_paths()
    torch.manual_seed(5)
    module = bench_kernels.BinaryLayerModule(layer).eval()
    x = with_special_values(torch.randn(2, c, h, w), torch.Generator().manual_seed(6))
    path = tmp_path / "binary.pte"
    export.save_program(module, (x,), path)
    reference = ops.binary_conv_transpose2d_reference if kind == "transposed" else ops.binary_conv2d_reference
    extra = ([0, 0],) if kind == "transposed" else ()
    want = reference(x, module.weight, module.scale, module.bias, None, c, [k, k], [s, s], [p, p], *extra)
    assert_bit_exact_on_two_threads(path, x, want, tmp_path)


def test_amx_leaves_the_layers_where_it_measured_slower_to_avx512():
    require_path("amx")
    assert amx_takes("conv", 64, 64, 64, 64, 3, 1, 1)  # hand 3 x 3 at 64 x 64, batch 2
    assert not amx_takes("conv", 64, 256, 64, 64, 1, 1, 0)  # FUR's 1 x 1: one word a row
    assert not amx_takes("conv", 512, 512, 8, 8, 3, 1, 1)  # 128 output positions over the batch
    assert amx_takes("conv", 256, 256, 16, 12, 3, 1, 1, n=1)  # 192 positions, 590 KB of expanded weights
    assert not amx_takes("conv", 256, 256, 12, 12, 3, 1, 1, n=1)  # 144 positions
    assert not amx_takes("conv", 512, 512, 16, 12, 3, 1, 1, n=1)  # 192 positions, 2.4 MB of weights
    assert not amx_takes("conv", 128, 128, 64, 64, 3, 2, 1)  # stride 2


@pytest.mark.parametrize("path", X86_AND_SCALAR_PATHS)
def test_table_count_shapes_are_bit_exact_against_the_reference(path):
    require_path(path)
    gen = torch.Generator().manual_seed(11)
    with kernel_library.using_path(path):
        for spec in TABLE_COUNT_SHAPES:
            assert_every_output_bit_exact(table_count_problem(gen, *spec), f"{path} {spec}")


def test_native_selftest_is_bit_exact_on_every_path_this_cpu_supports():
    """selftest.cpp built for this machine: the naive convolution and the fused epilogue (residual, pooled
    residual, partial sum, post affine, shortcut, FDR's branches) written out in float, on random shapes."""
    import shutil
    import subprocess

    from mobile_export import phone_bench

    if shutil.which("cmake") is None:
        pytest.skip("cmake is not on PATH")
    binary = str(phone_bench.build_tree("host") / "bidrn_selftest")
    done = subprocess.run([binary, "--expect-path", kernel_library.active_path(), "--cases", "120"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout
    for path in kernel_library.supported_paths():
        assert f"{path}: bit-exact" in done.stdout
        line = done.stdout.split(f"{path}: bit-exact")[1].split("\n")[0]
        assert "int8 pointwise 0 of 31" in line and "int8 deconv 0 of 19" in line  # 120 / 4 + 1, 120 / 8 + 4


def test_dispatch_picks_the_best_path_the_cpu_supports():
    supported = kernel_library.supported_paths()
    assert supported[-1] == "scalar"
    assert kernel_library.active_path() == supported[0]


def test_unknown_kernel_path_is_refused_with_the_available_ones():
    with pytest.raises(ValueError, match="available"):
        kernel_library.set_path("sve2")


# ---------------------------------------------------------------- ExecuTorch runtime

class LayerChain(torch.nn.Module):
    """Every op and form once: float in -> conv (RPReLU, packed signs out) -> conv (packed in, float out)
    -> transposed conv -> pooled -> linear; odd channel counts and padded borders throughout."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.register_buffer("w1", ops.pack_conv_weight(torch.randn(70, 13, 3, 3, generator=g)))
        self.register_buffer("w2", ops.pack_conv_weight(torch.randn(33, 70, 3, 3, generator=g)))
        self.register_buffer("w3", ops.pack_conv_transpose_weight(torch.randn(33, 9, 4, 4, generator=g), (2, 2), (1, 1)))
        self.register_buffer("w4", ops.pack_linear_weight(torch.randn(5, 9, generator=g)))
        for i, o in enumerate((70, 33, 9, 5), 1):
            self.register_buffer(f"s{i}", torch.rand(o, generator=g) + 0.1)
            self.register_buffer(f"b{i}", torch.randn(o, generator=g))
        self.register_buffer("rp", torch.randn(3, 70, generator=g))

    def forward(self, x):
        bd = torch.ops.bidrn
        y = bd.binary_conv2d(x, self.w1, self.s1, self.b1, self.rp, 13, [3, 3], [1, 1], [1, 1], int(ops.Output.PACKED))
        y = bd.binary_conv2d(y, self.w2, self.s2, self.b2, None, 70, [3, 3], [2, 2], [1, 1])
        y = bd.binary_conv_transpose2d(y, self.w3, self.s3, self.b3, None, 33, [4, 4], [2, 2], [1, 1], [0, 0])
        return bd.binary_linear(y.mean(dim=(2, 3)), self.w4, self.s4, self.b4, None, 9)


def test_pte_with_the_custom_ops_runs_in_executorch_and_matches_the_reference(tmp_path):
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    model, x = LayerChain().eval(), torch.randn(2, 13, 11, 9, generator=torch.Generator().manual_seed(4))
    program = to_edge_transform_and_lower(torch.export.export(model, (x,))).to_executorch()
    ops_in_program = {op.name for plan in program.executorch_program.execution_plan for op in plan.operators}
    assert {"bidrn::binary_conv2d", "bidrn::binary_conv_transpose2d", "bidrn::binary_linear"} <= ops_in_program
    (tmp_path / "chain.pte").write_bytes(program.buffer)
    kernel_library.load()
    method = Runtime.get().load_program(str(tmp_path / "chain.pte")).load_method("forward")
    got = method.execute([x])[0]
    assert torch.equal(got, model(x))


def test_loading_the_kernel_library_twice_returns_the_same_handle():
    assert kernel_library.load() is kernel_library.load()


def test_profile_names_each_binary_op_by_its_geometry_and_accounts_for_the_execute(tmp_path):
    """`bidrn bench profile` on the chain: one event per bidrn:: op, named by kernel/stride, channels and
    input size as LayerChain defines them, and the groups adding up to no more than the whole execute."""
    from executorch.exir import to_edge_transform_and_lower

    from mobile_export import bench_model

    model, x = LayerChain().eval(), torch.randn(1, 13, 11, 9)
    pte = tmp_path / "chain.pte"
    pte.write_bytes(to_edge_transform_and_lower(torch.export.export(model, (x,))).to_executorch().buffer)
    result = bench_model.profile(pte, threads=1, runs=3, warmup=1)
    events = {r["event"]: r for r in result["events"]}
    # conv 13 -> 70 on 11 x 9; conv 70 -> 33 stride 2 reading packed signs of 11 x 9; transposed 33 -> 9 on
    # 6 x 5 (the stride-2 output); linear 9 -> 5.
    for name in ("bidrn::binary_conv2d 3x3/1 13->70 11x9", "bidrn::binary_conv2d 3x3/2 70->33 11x9",
                 "bidrn::binary_conv_transpose2d 4x4/2 33->9 6x5", "bidrn::binary_linear 1x1/1 9->5 1x1"):
        assert name in events and events[name]["count"] == 1 and events[name]["kind"] == "bidrn", sorted(events)
    assert 0 < sum(r["ms"] for r in result["events"]) <= result["execute_ms"] * 1.001
    assert "bidrn::binary_linear 1x1/1 9->5 1x1" in bench_model.format_profile(result, top=10)


def test_bench_model_pairs_each_round_of_two_programs(tmp_path):
    """The same program on both sides: the ratios are the medians' ratio and the median of the rounds'
    ratios, and the paired one is 1 up to timing noise (a tiny program on a noisy VM: 1.5x either way; the
    ratio of medians has been seen 1.55x off here, which is why the paired ratio exists)."""
    from executorch.exir import to_edge_transform_and_lower

    from mobile_export import bench_model

    model, x = LayerChain().eval(), torch.randn(1, 13, 11, 9)
    pte = tmp_path / "chain.pte"
    pte.write_bytes(to_edge_transform_and_lower(torch.export.export(model, (x,))).to_executorch().buffer)
    a, b = bench_model.run([pte, pte], runs=9, warmup=1, log=lambda msg: None)
    assert len(a["times_ms"]) == len(b["times_ms"]) == 9 and a["bytes_ratio_vs"] == 1.0
    import statistics

    assert a["speedup_vs"] == pytest.approx(statistics.median(b["times_ms"]) / statistics.median(a["times_ms"]))
    rounds = [tb / ta for ta, tb in zip(a["times_ms"], b["times_ms"])]
    assert a["paired_speedup_vs"] == pytest.approx(statistics.median(rounds))
    assert a["min_speedup_vs"] == pytest.approx(min(b["times_ms"]) / min(a["times_ms"]))
    assert 1 / 1.5 < a["paired_speedup_vs"] < 1.5
    # The core's state before each round, and the rounds' ratios split by it (every round on one side or
    # the other; each side's ratio the median of its rounds).
    assert all(len(a["core"][key]) == 10 for key in ("clock_ghz", "adds_per_cycle", "tile_ns"))  # and after
    # (A run whose core was shared but for one probe has no round at speed: both sides of a round count.)
    assert a["rounds_at_speed"] + a["rounds_core_shared"] == 9
    fast = bench_model.at_speed(a["core"])
    for key, keep in (("paired_speedup_at_speed", True), ("paired_speedup_core_shared", False)):
        picked = [r for r, f in zip(rounds, fast) if f == keep]
        assert a[key] == (pytest.approx(statistics.median(picked)) if picked else None)
    table = bench_model.format_table([a, b])
    assert "median of the rounds' ratios" in table and "(fastest runs)" in table
    assert "core during the rounds: clock " in table


def test_bench_commands_refuse_a_damaged_program_with_a_message(tmp_path, capsys):
    """`bidrn bench model / profile / runner` on a file that is not a whole .pte: exit status 2 and one line naming the
    file and what was expected (no traceback), whether the header is wrong (checked before any worker starts)
    or the program is cut short (ExecuTorch's refusal, from the worker that tried to load it)."""
    from executorch.exir import to_edge_transform_and_lower

    from bidrn.cli import main

    model, x = LayerChain().eval(), torch.randn(1, 13, 11, 9)
    whole = to_edge_transform_and_lower(torch.export.export(model, (x,))).to_executorch().buffer
    good, cut, text = tmp_path / "chain.pte", tmp_path / "cut.pte", tmp_path / "notes.pte"
    good.write_bytes(whole)
    cut.write_bytes(whole[: len(whole) // 3])
    text.write_text("not a program")
    cases = [(["model", "--pte", str(text)], "notes.pte: not an ExecuTorch program"),
             (["model", "--pte", str(good), "--vs", str(cut), "--runs", "2", "--warmup", "0"],
              "cut.pte: ExecuTorch could not load its forward method"),
             (["profile", "--pte", str(cut), "--runs", "1", "--warmup", "0"],
              "cut.pte: ExecuTorch could not load its forward method"),
             (["runner", "--pte", str(text)], "notes.pte: not an ExecuTorch program"),
             (["runner", "--pte", str(cut)], "cut.pte: ExecuTorch could not load its forward method")]
    for argv, message in cases:
        assert main(["bench", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_core_probe_reads_a_plausible_clock_issue_rate_and_tile_rate():
    """The benchmarks' probe: a chain of dependent adds runs at one a cycle, so its rate is the clock, which
    for any CPU this runs on lies between 0.5 and 6 GHz; eight independent chains retire at most as many adds
    a cycle as the core has integer ALUs (at most 6 on current x86 and Arm cores) and at least one shared
    core's half of one; the tile unit's `tdpbssd` takes 16 cycles on Sapphire / Emerald Rapids (Intel's
    optimization manual), so at 0.5-6 GHz 2.6-32 ns, and up to about 2.5x that with another thread on the
    unit; no tile rate without the `amx` path."""
    state = kernel_library.probe()
    assert 0.5 < state["clock_ghz"] < 6.0
    assert 0.5 < state["adds_per_cycle"] <= 6.5
    if "amx" in kernel_library.supported_paths():
        assert 2.6 < state["tile_ns"] < 80
    else:
        assert state["tile_ns"] is None


def test_rounds_at_speed_are_those_near_the_runs_best_issue_and_tile_rates():
    from mobile_export import bench_model

    # Five probes around four rounds. 75 % of the best rate (4.0 adds a cycle) is 3.0; 75 % of the fastest
    # tile rate (6 ns) is 8 ns: the probes are at the best, at the best, at the best, not (2.0), not (8.1 ns),
    # and a round is at speed where both of its probes are.
    core = {"clock_ghz": [2.7, 2.7, 2.5, 2.6, 2.6], "adds_per_cycle": [4.0, 3.9, 3.0, 2.0, 3.9],
            "tile_ns": [6.0, 6.5, 6.2, 6.4, 8.1]}
    assert bench_model.at_speed(core) == [True, True, False, False]
    no_tiles = {"clock_ghz": [2.0] * 4, "adds_per_cycle": [4.0, 3.1, 2.9, 3.1], "tile_ns": [None] * 4}
    assert bench_model.at_speed(no_tiles) == [True, False, False]
    assert bench_model.core_summary(core) == ("clock 2.5-2.7 GHz, 2.0-4.0 adds a cycle (median 3.9), "
                                              "tile unit 6.0-8.1 ns per tdpbssd (median 6.4)")


def test_bench_kernels_json_lists_each_layer_with_its_times_and_ratios():
    """`bidrn bench kernels --json` on the smallest BiDRN layer (BoxNet's binary Linear 256 -> 256): one
    object per layer and thread count with the fields the issue names, every kernel path this CPU has, and
    ratios that are the quotients of the listed times."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "bidrn", "bench", "kernels", "--json", "--layers", "boxnet_linear_256",
                           "--seconds", "0.05"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout)
    assert [r["layer"] for r in rows] == ["boxnet_linear_256"] and rows[0]["threads"] == 1
    row = rows[0]
    assert row["kind"] == "linear" and row["macs"] == 3 * 256 * 256  # one row per box (two hands, the face)
    paths = [p for p in kernel_library.supported_paths() if p != "scalar"] or ["scalar"]
    assert row["path"] in paths
    for path in paths:
        assert row[f"binary_ms_{path}"] > 0
        assert row[f"fp32_over_{path}"] == pytest.approx(row["fp32_ms"] / row[f"binary_ms_{path}"])
        assert row[f"int8_over_{path}"] == pytest.approx(row["int8_ms"] / row[f"binary_ms_{path}"])
    assert row["binary_ms"] == row[f"binary_ms_{row['path']}"]
    assert row["fp32_ratio"] == pytest.approx(row["fp32_ms"] / row["binary_ms"])
    # The core's clock (and tile unit, where the CPU has one) over the layer's rounds.
    assert 0.5 < row["clock_ghz"] < 6.0 and 0.5 < row["adds_per_cycle_min"] <= row["adds_per_cycle"] <= 6.5
    assert (row["tile_ns"] is None) == ("amx" not in kernel_library.supported_paths())
    # Per round: the core's state and each program's median; the split's two sides cover every round, and
    # each side's ratio is the quotient of its listed medians.
    n = len(row["core"]["adds_per_cycle"]) - 1  # probed before each round and after the last
    assert n >= 1 and all(len(v) == n for v in row["round_ms"].values())
    assert sum((row[side] or {"rounds": 0})["rounds"] for side in ("at_speed", "core_shared")) == n
    for side in filter(None, (row["at_speed"], row["core_shared"])):
        assert side["fp32_ratio"] == pytest.approx(side["fp32_ms"] / side["binary_ms"])
    # Each path's share of its count ceiling (probed with the core's state), the median of the rounds' shares
    # computed from the listed values; the `amx` path runs a Linear on the AVX-512 count.
    import statistics

    for path in paths:
        c = row["core"][f"ceiling_{'avx512' if path == 'amx' else path}"]
        shares = [row["macs"] / (t * 1e6) / max(c[i], c[i + 1])
                  for i, t in enumerate(row["round_ms"][f"binary_{path}"])]
        assert row[f"of_ceiling_{path}"] == pytest.approx(statistics.median(shares))


def test_bench_kernels_names_the_known_layers_when_given_an_unknown_one():
    from mobile_export import bench_kernels

    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['nope'\]; known: \['ref3x3_256_28'"):
        bench_kernels.run(["nope"], [1], None, 0.05, log=lambda msg: None)


def test_layer_programs_read_their_input_in_place(tmp_path):
    """bench kernels' layer programs leave the input unplanned (bench_kernels._lower): ExecuTorch reads the
    caller's tensor where it lies (no copy into a planned buffer), and the program still computes the layer."""
    from mobile_export import bench_kernels, bench_model
    from mobile_export.layer_shapes import LayerShape

    layer = LayerShape("tiny", "conv", 1, 64, 16, 6, 5, 3, 1, 1)
    module = bench_kernels.BinaryLayerModule(layer).eval()
    x = torch.randn(1, 64, 6, 5)
    pte = tmp_path / "tiny.pte"
    pte.write_bytes(bench_kernels._lower(module, x, xnnpack=False))
    kernel_library.load()
    forward, _ = bench_model.load_forward(pte)
    assert torch.equal(forward(x)[0], module(x))
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(pte.read_bytes())
    program = getattr(program, "program", program)
    plan = program.execution_plan[0]
    first_input = plan.values[plan.inputs[0]].val
    assert first_input.allocation_info is None  # not memory-planned: read in place


def test_timed_forward_returns_the_program_outputs_without_copying_them(tmp_path):
    """bench_model.load_forward (what both benchmarks time) runs the program: its outputs equal the eager
    model's, and they are ExecuTorch's own buffers (the same storage on every call), not fresh copies."""
    from executorch.exir import to_edge_transform_and_lower

    from mobile_export import bench_model

    model, x = LayerChain().eval(), torch.randn(1, 13, 11, 9)
    pte = tmp_path / "chain.pte"
    pte.write_bytes(to_edge_transform_and_lower(torch.export.export(model, (x,))).to_executorch().buffer)
    kernel_library.load()
    forward, sizes = bench_model.load_forward(pte)
    assert sizes == (1, 13, 11, 9)
    first = forward(x)[0]
    assert torch.equal(first, model(x))
    second = forward(x)[0]
    assert second.data_ptr() == first.data_ptr()
