"""A block's last binary conv writes its output over its shortcut (export.share_shortcut_storage): only
where nothing reads the shortcut afterwards, and with the same numbers on every kernel path."""
from __future__ import annotations

import pytest
import torch

from mobile_export import export, kernel_library, ops


def _conv(g, o, c, k):
    return ops.pack_conv_weight(torch.randn(o, c, k, k, generator=g))


class ShortcutChain(torch.nn.Module):
    """Nine float-output binary convs whose shortcuts are shared or not:

    a = conv1(x); b = conv2(a)
    c = conv3(b, residual b, shortcut a)   a's last reader: c may take a's storage
    d = conv4(c, shortcut b)                b is read again by e: not shared
    e = conv5(d, shortcut b)                b's last reader (1 x 1): shared
    f = conv6(e, shortcut e)                the shortcut is also the input: not shared
    g = conv7(f, shortcut c)                c is a graph output: not shared
    h = conv9(g, shortcut v), v = conv8(g)  a view of v is returned: not shared
    The 3 x 3 convs of 16 channels on 24 x 24 run on the tile unit where the CPU has AMX; the 1 x 1 on the
    channel-at-a-time epilogue."""

    shared = ("conv3", "conv5")

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        shapes = {1: (16, 13, 3), 2: (16, 16, 3), 3: (16, 16, 3), 4: (16, 16, 3), 5: (16, 16, 1), 6: (16, 16, 1),
                  7: (16, 16, 3), 8: (16, 16, 1), 9: (16, 16, 1)}
        for i, (o, c, k) in shapes.items():
            self.register_buffer(f"w{i}", _conv(g, o, c, k))
            self.register_buffer(f"s{i}", torch.rand(o, generator=g) * 0.1 + 0.01)
            self.register_buffer(f"b{i}", torch.randn(o, generator=g))
        self.register_buffer("rp", torch.randn(3, 16, generator=g) * 0.3)
        self.register_buffer("post", torch.stack([torch.rand(16, generator=g) + 0.5, torch.randn(16, generator=g)]))
        self.shapes = shapes

    def conv(self, i, x, **epilogue):
        o, c, k = self.shapes[i]
        p = k // 2
        args = (x, getattr(self, f"w{i}"), getattr(self, f"s{i}"), getattr(self, f"b{i}"), self.rp, c, [k, k],
                [1, 1], [p, p], 0, epilogue.get("residual"), self.post if epilogue.get("residual") is not None
                else None, 0, 0, 0, epilogue.get("residual") is not None, None, epilogue.get("shortcut"))
        return torch.ops.bidrn.binary_conv2d(*args)

    def forward(self, x):
        a = self.conv(1, x)
        b = self.conv(2, a)
        c = self.conv(3, b, residual=b, shortcut=a)
        d = self.conv(4, c, shortcut=b)
        e = self.conv(5, d, shortcut=b)
        f = self.conv(6, e, shortcut=e)
        g = self.conv(7, f, shortcut=c)
        viewed = self.conv(8, g)
        flat = viewed.flatten(2)  # a view taken before conv9 and returned: conv9 must not write over `viewed`
        return self.conv(9, g, shortcut=viewed), c, flat


def _allocations(pte: bytes) -> list[tuple[tuple, tuple]]:
    """(shortcut allocation, output allocation) of each bidrn::binary_conv2d with a shortcut, in program
    order, from the serialized plan: (memory id, offset)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(pte)
    plan = getattr(program, "program", program).execution_plan[0]

    def where(i):
        info = plan.values[i].val.allocation_info
        return info.memory_id, info.memory_offset_low, info.memory_offset_high

    found = []
    for chain in plan.chains:
        for instruction in chain.instructions:
            a = instruction.instr_args
            if hasattr(a, "op_index") and plan.operators[a.op_index].name == "bidrn::binary_conv2d":
                if type(plan.values[a.args[17]].val).__name__ == "Tensor":
                    found.append((where(a.args[17]), where(a.args[-1])))
    return found


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, x = ShortcutChain().eval(), torch.randn(1, 13, 24, 24, generator=torch.Generator().manual_seed(8))
    path = tmp_path_factory.mktemp("inplace") / "chain.pte"
    export.save_program(model, x, path)
    return model, x, path


def test_only_the_shortcuts_read_last_by_their_op_share_its_output_storage(exported):
    _, _, path = exported
    pairs = _allocations(path.read_bytes())
    assert len(pairs) == 6  # conv3 .. conv7 and conv9 in program order
    same = [sc == out for sc, out in pairs]
    assert same == [True, False, True, False, False, False]


def test_sharing_marks_the_op_nodes_it_may(exported):
    """Without XNNPACK the flatten stays a view_copy node ahead of conv9 (ExecuTorch would plan it into the
    storage of conv8's output): conv9 must not take that storage, though no node after it reads conv8's
    output directly."""
    from executorch.exir import to_edge_transform_and_lower

    model, x, _ = exported
    graph_module = to_edge_transform_and_lower(torch.export.export(model, (x,))).exported_program().graph_module
    convs = [n for n in graph_module.graph.nodes if "binary_conv2d" in str(n.target)]
    view = [n for n in graph_module.graph.nodes if "view_copy" in str(n.target)]
    assert len(convs) == 9 and len(view) == 1 and list(graph_module.graph.nodes).index(view[0]) < \
        list(graph_module.graph.nodes).index(convs[8])
    assert export.share_shortcut_storage(graph_module) == 2
    marked = [i + 1 for i, n in enumerate(convs) if "_share_alloc_with_arg_idx" in n.meta]
    assert marked == [3, 5] and all(convs[i - 1].meta["_share_alloc_with_arg_idx"] == 17 for i in marked)


@pytest.mark.parametrize("path", kernel_library.supported_paths())
def test_outputs_written_over_the_shortcut_equal_the_reference(exported, path):
    """On every kernel path this CPU has, the program (two ops writing over their shortcuts) gives the
    reference ops' numbers bit for bit, as it did before sharing."""
    from executorch.runtime import Runtime

    model, x, pte = exported
    kernel_library.load()
    want = model(x)
    with kernel_library.using_path(path):
        got = Runtime.get().load_program(str(pte)).load_method("forward").execute([x])
    assert len(got) == len(want) == 3 and all(torch.equal(g, w) for g, w in zip(got, want))
