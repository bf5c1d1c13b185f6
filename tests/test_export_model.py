"""The network goes through torch.export (RoIAlign and all), the first step of the mobile export."""
import torch

from bidrn import create_model


def test_bidrn_tiny_exports_and_matches_eager():
    torch.manual_seed(0)
    model = create_model("bidrn-tiny").eval()
    x = torch.rand(1, 3, 256, 192)
    program = torch.export.export(model, (x,), strict=False)
    y = torch.rand(1, 3, 256, 192)
    eager, exported = model(y), program.module()(y)
    assert eager.keys() == exported.keys()
    for key in eager:
        assert torch.allclose(eager[key], exported[key], atol=1e-5), key
