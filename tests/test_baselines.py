"""The Table 1 baselines: each method's forward and backward against its paper's formula, its extra parameters,
and the backbone parameter totals of the BiDRN paper (Table 1: 21.61 / 21.66 / 21.71 / 32.06 M).

Expected numbers are worked out by hand from the formulas quoted in each test, never from the code under test.
"""
import math

import pytest
import torch
from torch import nn

from bidrn.nn.baselines import (
    BASELINES, ClippedScaledSignWeight, DoReFaActivation, DoReFaWeight, FourierSign, FourierWeight,
    MagnitudeAwareWeight, ReCUWeight, RSign, StandardizedApproxSign, SteSignWeight, XnorWeight, recu_tau,
)
from bidrn.nn.layers import BinaryConv2d, BinaryLayer
from bidrn.nn.quantizers import PiecewiseQuadraticSign, SteSign

ALL = sorted(BASELINES)


def _grad(fn, x, upstream=None):
    """Forward fn(x) and the gradient of sum(upstream * fn(x)) w.r.t. x."""
    x = x.clone().requires_grad_(True)
    y = fn(x)
    y.backward(torch.ones_like(y) if upstream is None else upstream)
    return y.detach(), x.grad


W_ROW = torch.tensor([[0.5, -1.5, 0.25, -0.75]])  # one output channel; mean |w| = 3/4


# --- registry ------------------------------------------------------------------------------------------------

def test_registry_holds_the_seven_table1_methods():
    assert set(BASELINES) == {"bnn", "xnor", "dorefa", "bireal", "reactnet", "recu", "fda"}


@pytest.mark.parametrize("name", ALL)
def test_conv_is_a_binary_layer_with_1bit_quantizers(name):
    conv = BASELINES[name].conv(8, 16, 3, 2, 1)
    assert isinstance(conv, BinaryLayer) and conv.is_binary and conv.bias is None
    assert conv(torch.randn(2, 8, 8, 8)).shape == (2, 16, 4, 4)


# --- BNN (Hubara et al. 2016) --------------------------------------------------------------------------------

def test_bnn_activation_sign_with_gradient_one_on_abs_x_le_1():
    y, g = _grad(SteSign(), torch.tensor([-1.5, -0.5, 0.0, 0.5, 1.0, 2.0]))
    assert y.tolist() == [-1, -1, 1, 1, 1, 1]
    assert g.tolist() == [0, 1, 1, 1, 1, 0]


def test_bnn_weights_unscaled_sign_with_clipped_ste():
    y, g = _grad(lambda w: SteSignWeight()(w, 0), W_ROW)
    assert y.tolist() == [[1, -1, 1, -1]]
    assert g.tolist() == [[1, 0, 1, 1]]


def test_bnn_clips_latent_weights_after_each_step():
    conv = BASELINES["bnn"].conv(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.7)
    BASELINES["bnn"].after_optimizer_step(conv)
    assert conv.weight.item() == 1.0


def test_bnn_activation_is_hardtanh():
    assert BASELINES["bnn"].activation(4)(torch.tensor([-3.0, 0.5, 3.0])).tolist() == [-1, 0.5, 1]


# --- XNOR-Net (Rastegari et al. 2016) --------------------------------------------------------------------------

def test_xnor_weights_alpha_sign_and_paper_gradient():
    # alpha = ||W||_1 / n = 3/4; dC/dW = 1/n + alpha 1_{|W|<=1} = 0.25 + 0.75 on |W| <= 1, 0.25 at W = -1.5
    y, g = _grad(lambda w: XnorWeight()(w, 0), W_ROW)
    assert torch.allclose(y, torch.tensor([[0.75, -0.75, 0.75, -0.75]]))
    assert torch.allclose(g, torch.tensor([[1.0, 0.25, 1.0, 1.0]]))


def test_xnor_output_scaled_by_activation_magnitude_k():
    # 2x2 input, 2 channels, 2x2 kernel of 0.5: A = mean_c |I| = [[1, 1], [2, 0.5]], K = mean(A) = 1.125,
    # sign(I) . sign(W) = (1 - 1 + 1 + 1) + (-1 + 1 + 1 - 1) = 2, alpha = 0.5 -> 2 * 0.5 * 1.125
    conv = BASELINES["xnor"].conv(2, 1, 2)
    with torch.no_grad():
        conv.weight.fill_(0.5)
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]], [[-1.0, 0.0], [1.0, -0.5]]]])
    assert torch.allclose(conv(x), torch.tensor([[[[1.125]]]]))


# --- DoReFa-Net (Zhou et al. 2016), 1-bit --------------------------------------------------------------------

def test_dorefa_activation_is_0_1_after_clip_with_ste_inside_0_1():
    y, g = _grad(DoReFaActivation(), torch.tensor([-0.5, 0.2, 0.5, 0.7, 1.0, 1.5]))
    assert y.tolist() == [0, 0, 1, 1, 1, 1]
    assert g.tolist() == [0, 1, 1, 1, 1, 0]


def test_dorefa_weights_scaled_by_layer_mean_abs_with_identity_gradient():
    # E(|W|) over the whole layer: (0.5 + 1.5 + 0.25 + 0.75 + 2 + 2 + 1 + 1) / 8 = 1.125, one scalar for both rows
    w = torch.tensor([[0.5, -1.5, 0.25, -0.75], [2.0, -2.0, 1.0, 1.0]])
    y, g = _grad(lambda t: DoReFaWeight()(t, 0), w)
    assert torch.allclose(y, 1.125 * torch.tensor([[1.0, -1, 1, -1], [1, -1, 1, 1]]))
    assert torch.equal(g, torch.ones_like(w))


def test_dorefa_activation_is_clip_0_1():
    assert BASELINES["dorefa"].activation(4)(torch.tensor([-1.0, 0.3, 2.0])).tolist() == pytest.approx([0, 0.3, 1])


# --- Bi-Real Net (Liu et al. 2018) ---------------------------------------------------------------------------

def test_bireal_activation_gradient_is_2_minus_2_abs_x():
    _, g = _grad(PiecewiseQuadraticSign(), torch.tensor([-1.5, -0.5, 0.0, 0.25, 0.75]))
    assert torch.allclose(g, torch.tensor([0.0, 1.0, 2.0, 1.5, 0.5]))


def test_bireal_weight_gradient_is_magnitude_aware_per_channel():
    # row 0: alpha = 0.75; row 1: alpha = (2 + 2 + 0.5 + 0.5) / 4 = 1.25; dW_b/dW = alpha 1_{|W| < 1}
    w = torch.tensor([[0.5, -1.5, 0.25, -0.75], [2.0, -2.0, 0.5, 0.5]])
    y, g = _grad(lambda t: MagnitudeAwareWeight()(t, 0), w)
    assert torch.allclose(y, torch.tensor([[0.75, -0.75, 0.75, -0.75], [1.25, -1.25, 1.25, 1.25]]))
    assert torch.allclose(g, torch.tensor([[0.75, 0.0, 0.75, 0.75], [0.0, 0.0, 1.25, 1.25]]))


# --- ReActNet (Liu et al. 2020) ------------------------------------------------------------------------------

def test_reactnet_rsign_shifts_threshold_and_learns_it():
    # beta = (0.5, -0.5); x - beta = (-0.25, 0.5 | -0.5, 0.5); d/dx = 2 - 2|x - beta|; d/dbeta = -sum d/dx
    rsign = RSign(2)
    with torch.no_grad():
        rsign.beta.copy_(torch.tensor([0.5, -0.5]))
    x = torch.tensor([[[[0.25, 1.0]], [[-1.0, 0.0]]]])
    y, g = _grad(rsign, x)
    assert y.flatten().tolist() == [-1, 1, -1, 1]
    assert torch.allclose(g.flatten(), torch.tensor([1.5, 1.0, 1.0, 1.0]))
    assert torch.allclose(rsign.beta.grad, torch.tensor([-2.5, -2.0]))


def test_reactnet_weights_scaled_sign_with_clipped_gradient():
    y, g = _grad(lambda w: ClippedScaledSignWeight()(w, 0), W_ROW)
    assert torch.allclose(y, torch.tensor([[0.75, -0.75, 0.75, -0.75]]))
    assert g.tolist() == [[1, 0, 1, 1]]


# --- ReCU (Xu et al. 2021b) ----------------------------------------------------------------------------------

W_RECU = torch.tensor([[3.0, -3.0, 1.0, -1.0]])  # mean 0, unbiased var 20/3
C_RECU = 2 * math.sqrt(2) / math.sqrt(20 / 3)     # balanced = w * 2 sqrt(2) / std = w * 1.0954


def test_recu_tau_schedule_runs_from_0_85_to_0_99_exponentially():
    a = 0.14 / (math.e - 1)
    assert recu_tau(0, 10) == pytest.approx(0.85)
    assert recu_tau(5, 10) == pytest.approx(0.85 + a * (math.sqrt(math.e) - 1))
    assert recu_tau(10, 10) == pytest.approx(0.99)


def test_recu_clamps_balanced_weights_at_the_laplace_tau_quantile():
    # balanced = (3.2863, -3.2863, 1.0954, -1.0954); mean |.| = 2.1909; Q(0.85) = -2.1909 ln(0.3) = 2.6378
    q = -(2 * 3 + 2 * 1) / 4 * C_RECU * math.log(2 - 2 * 0.85)
    rect = ReCUWeight(1, tau=0.85).rectify(W_RECU)
    assert torch.allclose(rect, torch.tensor([[q, -q, C_RECU, -C_RECU]]), atol=1e-5)


def test_recu_tau_one_leaves_weights_unclamped():
    assert torch.allclose(ReCUWeight(1, tau=1.0).rectify(W_RECU), C_RECU * W_RECU, atol=1e-5)


def test_recu_clamped_weights_get_no_gradient():
    q = ReCUWeight(1, tau=0.85)
    _, g = _grad(lambda w: q(w, 0), W_RECU, upstream=torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert torch.allclose(g, torch.zeros_like(g), atol=1e-6)


def test_recu_gradient_flows_through_balancing():
    # L = alpha (b3 - b4), b = c (w - mean) / std: dL/dw = alpha c/std ((0,0,1,-1) - (w3 - w4) w / ((n-1) std^2))
    #   = alpha * 1.0954 * ((0, 0, 1, -1) - 0.1 (3, -3, 1, -1)) with alpha = 0.5
    q = ReCUWeight(1, tau=0.85)
    with torch.no_grad():
        q.alpha.fill_(0.5)
    y, g = _grad(lambda w: q(w, 0), W_RECU, upstream=torch.tensor([[0.0, 0.0, 1.0, -1.0]]))
    assert torch.allclose(y, 0.5 * torch.tensor([[1.0, -1, 1, -1]]))
    assert torch.allclose(g, 0.5 * C_RECU * torch.tensor([[-0.3, 0.3, 0.9, -0.9]]), atol=1e-5)


def test_recu_activation_gradient_window_follows_activation_scale():
    # a = +-2, unbiased var 16/3: a' = a / std = +-0.8660, d/da = (2 - 2|a'|) / std = 0.11603 (mean of a is 0,
    # so the std term cancels for a uniform upstream); in eval no standardisation: |a| = 2 > 1 -> 0
    q = StandardizedApproxSign()
    x = torch.tensor([2.0, -2.0, 2.0, -2.0]).view(1, 4, 1, 1)
    y, g = _grad(q, x)
    assert y.flatten().tolist() == [1, -1, 1, -1]
    std = math.sqrt(16 / 3)
    assert torch.allclose(g, torch.full_like(x, (2 - 2 * 2 / std) / std), atol=1e-5)
    q.eval()
    assert torch.equal(_grad(q, x)[1], torch.zeros_like(x))


# --- FDA (Xu et al. 2021a) -----------------------------------------------------------------------------------

def _fourier_derivative(x, n, omega=0.1):
    """Closed form of 4 omega/pi sum_{i<n} cos((2i+1) omega x) = 4 omega/pi sin(2 n omega x) / (2 sin(omega x))."""
    if x == 0:
        return 4 * omega / math.pi * n
    return 4 * omega / math.pi * math.sin(2 * n * omega * x) / (2 * math.sin(omega * x))


def test_fda_sign_gradient_is_the_fourier_series_derivative():
    xs = [0.0, 0.5, -1.0, 1.5]  # 1.273, 1.0718, 0.5798, 0 (clipped beyond |x| = 1)
    y, g = _grad(FourierSign(n_terms=10), torch.tensor(xs))
    assert y.tolist() == [1, 1, -1, 1]
    expected = [_fourier_derivative(x, 10) if abs(x) <= 1 else 0.0 for x in xs]
    assert torch.allclose(g, torch.tensor(expected), atol=1e-5)


def test_fda_schedule_adds_fourier_terms_and_fades_the_noise():
    q = FourierWeight(fan_in=4)
    q.set_epoch(5, 10)  # n = 9 + int(4.5) = 13 -> 14 terms
    assert int(q.n_terms) == 14
    q.set_epoch(0, 10)
    assert float(q.noise_scale) == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.1)))
    q.set_epoch(9, 10)
    assert float(q.noise_scale) == pytest.approx(0.0, abs=1e-12)


def test_fda_noise_module_adds_scaled_error_in_training_only():
    # with W1 = W2 = 0: e(w) = 0.1 sin(w); W_b = mean|W| (sign(w) + s e(w)), s = 0.1, mean |W| = 0.75
    q = FourierWeight(fan_in=4)
    with torch.no_grad():
        q.noise.fc1.weight.zero_()
        q.noise.fc2.weight.zero_()
    signs = torch.tensor([[1.0, -1, 1, -1]])
    assert torch.allclose(q(W_ROW, 0), 0.75 * (signs + 0.1 * 0.1 * torch.sin(W_ROW)))
    q.eval()
    assert torch.allclose(q(W_ROW, 0), 0.75 * signs)


# --- extra parameters ----------------------------------------------------------------------------------------

# conv 64 -> 128, 3x3: RSign 1 per input channel; ReCU alpha 1 per output channel; FDA noise module on
# d = 64*9 = 576 weights per output channel: 576 -> 9 -> 576, no bias = 2*576*9; PReLU 1 per channel.
EXTRA_CONV = {"bnn": 0, "xnor": 0, "dorefa": 0, "bireal": 0, "reactnet": 64, "recu": 128, "fda": 2 * 576 * 9}
EXTRA_ACT = {"bnn": 0, "xnor": 0, "dorefa": 0, "bireal": 0, "reactnet": 0, "recu": 128, "fda": 128}


@pytest.mark.parametrize("name", ALL)
def test_extra_parameters_of_one_conv_and_activation(name):
    method = BASELINES[name]
    conv_params = sum(p.numel() for p in method.conv(64, 128, 3, 1, 1).parameters())
    assert conv_params - 64 * 128 * 9 == EXTRA_CONV[name]
    assert sum(p.numel() for p in method.activation(128).parameters()) == EXTRA_ACT[name]


def _resnet_layout(bottleneck: bool):
    """torchvision v1.5 ResNet-50 / ResNet-18 backbone convs (in, out, k) without the stem, and the channel
    counts of its ReLUs (stem included)."""
    convs, relus, inp = [], [64], 64
    for width, n in zip((64, 128, 256, 512), (3, 4, 6, 3) if bottleneck else (2, 2, 2, 2)):
        for b in range(n):
            out = 4 * width if bottleneck else width
            if bottleneck:
                convs += [(inp, width, 1), (width, width, 3), (width, out, 1)]
                relus += [width, width, out]
            else:
                convs += [(inp, width, 3), (width, width, 3)]
                relus += [width, width]
            if b == 0 and inp != out:
                convs.append((inp, out, 1))
            inp = out
    return convs, relus


# Hand4Whole: 77,842,256 FP parameters; its three backbones (hand ResNet-50 counted once) hold 58,048,512
# conv weights that become binary: Params = 77,842,256 - 58,048,512 * 31/32 = 21,607,760 (ARCHITECTURE.md).
TABLE1_PARAMS_M = {"bnn": 21.61, "xnor": 21.61, "dorefa": 21.61, "bireal": 21.61,
                   "reactnet": 21.66, "recu": 21.71, "fda": 32.06}


@pytest.mark.parametrize("name", ALL)
def test_backbone_extras_reproduce_table1_params(name):
    layouts = [_resnet_layout(True), _resnet_layout(True), _resnet_layout(False)]
    method = BASELINES[name]
    binary = extra = 0
    for convs, relus in layouts:
        for i, o, k in convs:
            params = sum(p.numel() for p in method.conv(i, o, k).parameters())
            binary += i * o * k * k
            extra += params - i * o * k * k
        extra += sum(sum(p.numel() for p in method.activation(c).parameters()) for c in relus)
    assert binary == 58_048_512
    total = 77_842_256 - binary + binary / 32 + extra
    assert round(total / 1e6, 2) == TABLE1_PARAMS_M[name]


# --- end to end ----------------------------------------------------------------------------------------------

class _TinyBottleneckNet(nn.Module):
    """FP stem + one bottleneck with a downsample shortcut + FP head, convs and ReLUs from ``method``."""

    def __init__(self, method):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), method.activation(8))
        self.conv1, self.bn1, self.act1 = method.conv(8, 4, 1), nn.BatchNorm2d(4), method.activation(4)
        self.conv2, self.bn2, self.act2 = method.conv(4, 4, 3, 2, 1), nn.BatchNorm2d(4), method.activation(4)
        self.conv3, self.bn3 = method.conv(4, 16, 1), nn.BatchNorm2d(16)
        self.down = nn.Sequential(method.conv(8, 16, 1, 2), nn.BatchNorm2d(16))
        self.act_out = method.activation(16)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        """x: B x 3 x H x W -> B x 2."""
        x = self.stem(x)
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.act2(self.bn2(self.conv2(y)))
        y = self.act_out(self.bn3(self.conv3(y)) + self.down(x))
        return self.head(y.mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ALL)
def test_end_to_end_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    method = BASELINES[name]
    net = _TinyBottleneckNet(method)
    method.on_epoch(net, 0, 14)
    net(torch.randn(4, 3, 8, 8)).square().sum().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"
    method.after_optimizer_step(net)
    assert all(isinstance(m, BinaryConv2d) for m in (net.conv1, net.conv2, net.conv3, net.down[0]))
