"""BiDRN's binarization primitives against the paper's equations, on hand-made tensors."""
import torch
from torch.nn import functional as F

from bidrn.nn import BinaryConv2d, BinaryConvTranspose2d, BinaryLinear, PiecewiseQuadraticSign, RPReLU, ScaledSignWeight, sign


def test_sign_maps_zero_to_plus_one():
    # Eq. 1: +1 for a_f >= 0, -1 otherwise.
    x = torch.tensor([-2.0, -1e-8, 0.0, 1e-8, 3.0])
    assert sign(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]


def test_piecewise_quadratic_sign_gradient_is_derivative_of_eq2():
    # F(a) = -a^2 + 2a on [0, 1), a^2 + 2a on [-1, 0): F'(a) = 2 - 2|a| inside, 0 outside.
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.25, 0.5, 0.99, 1.0, 2.0], requires_grad=True)
    y = PiecewiseQuadraticSign()(x)
    y.backward(torch.ones_like(y))
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1, 1, 1]
    expected = [0.0, 0.0, 1.0, 2.0, 1.5, 1.0, 0.02, 0.0, 0.0]
    assert torch.allclose(x.grad, torch.tensor(expected), atol=1e-6)


def test_scaled_sign_weight_eq4_with_identity_gradient():
    # alpha_o = ||w_o||_1 / n per output channel: rows [1, -2] -> 1.5, [3, -4, ...] -> 3.5.
    w = torch.tensor([[1.0, -2.0], [3.0, -4.0]], requires_grad=True)
    wb = ScaledSignWeight()(w, 0)
    assert wb.tolist() == [[1.5, -1.5], [3.5, -3.5]]
    g = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    wb.backward(g)
    assert torch.equal(w.grad, g)


def test_scaled_sign_weight_follows_the_output_axis_of_a_transposed_conv():
    # ConvTranspose2d weights are in x out x k x k: alpha is taken over axis 0, 2, 3 for each output channel.
    w = torch.tensor([[[[1.0]], [[-4.0]]], [[[-3.0]], [[2.0]]]])  # 2 in x 2 out x 1 x 1
    wb = ScaledSignWeight()(w, 1)
    assert wb[:, 0].flatten().tolist() == [2.0, -2.0]  # mean(|1|, |-3|) = 2
    assert wb[:, 1].flatten().tolist() == [-3.0, 3.0]  # mean(|-4|, |2|) = 3


def test_rprelu_eq6():
    act = RPReLU(2)
    with torch.no_grad():
        act.gamma.copy_(torch.tensor([0.5, -1.0]))
        act.zeta.copy_(torch.tensor([1.0, 0.0]))
        act.beta.copy_(torch.tensor([0.25, 0.1]))
    x = torch.tensor([[[[2.0]], [[3.0]]], [[[0.0]], [[-2.0]]]])  # B=2, C=2, 1x1
    y = act(x).flatten(1)
    # channel 0: 2 > 0.5 -> 2 - 0.5 + 1 = 2.5; 0 <= 0.5 -> 0.25 * (0 - 0.5) + 1 = 0.875
    # channel 1: 3 > -1 -> 3 + 1 + 0 = 4; -2 <= -1 -> 0.1 * (-2 + 1) = -0.1
    assert torch.allclose(y, torch.tensor([[2.5, 4.0], [0.875, -0.1]]))


def test_rprelu_initialises_as_prelu_with_slope_quarter():
    act = RPReLU(3)
    x = torch.tensor([-4.0, 0.0, 2.0]).view(1, 3, 1, 1)
    assert act(x).flatten().tolist() == [-1.0, 0.0, 2.0]


def test_binary_conv_equals_scaled_xnor_popcount_eq5():
    # o = alpha * sum(sign(a) * sign(W)) over the window: check one output against an explicit sum.
    torch.manual_seed(0)
    conv = BinaryConv2d(3, 2, 3, padding=0)
    x = torch.randn(1, 3, 3, 3)
    out = conv(x)
    sa, sw = sign(x), sign(conv.weight)
    alpha = conv.weight.abs().mean(dim=(1, 2, 3))
    expected = alpha * (sa * sw).sum(dim=(1, 2, 3))
    assert torch.allclose(out.flatten(), expected, atol=1e-6)


def test_binary_conv_padding_contributes_zero():
    # PyTorch pads the already-binarised activation with zeros: a 3x3 all-(+1) conv on a 1x1 input sees 1 tap.
    conv = BinaryConv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(0.5)
    assert conv(torch.ones(1, 1, 1, 1)).item() == 0.5


def test_binary_transposed_conv_and_linear_use_signed_inputs_and_weights():
    torch.manual_seed(1)
    deconv = BinaryConvTranspose2d(4, 3, 4, stride=2, padding=1)
    x = torch.randn(2, 4, 5, 5)
    w = deconv.weight
    wb = w.abs().mean(dim=(0, 2, 3), keepdim=True) * sign(w)
    assert torch.allclose(deconv(x), F.conv_transpose2d(sign(x), wb, stride=2, padding=1), atol=1e-5)
    lin = BinaryLinear(6, 2)
    v = torch.randn(3, 6)
    wl = lin.weight.abs().mean(dim=1, keepdim=True) * sign(lin.weight)
    assert torch.allclose(lin(v), sign(v) @ wl.t() + lin.bias, atol=1e-6)
