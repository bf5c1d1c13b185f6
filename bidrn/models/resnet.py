"""ResNet encoders in three flavours that share one skeleton (stem, four stages, no pooling or fc):

- full precision: torchvision's "v1.5" layout (stride on the 3x3 conv, 1x1 conv + BN shortcut in each stage's
  first block), the Hand4Whole encoders;
- a Table 1 baseline: every conv after the stem (shortcuts included) becomes the method's binary conv and every
  ReLU the method's activation; everything else unchanged;
- BiDRN: every block becomes a Binarized Dual Residual Block (BiDRB, eq. 11): an LCR chain plus a Block
  Residual.
"""
from __future__ import annotations

from torch import nn

from bidrn.models.config import EncoderConfig
from bidrn.nn.lcr import DSaR, DScR, FDR, FUR, BaseLCR, PlainBinaryConv


class FullPrecision:
    """The 'method' of the unbinarized network: plain convs and ReLU."""

    name = "fp"

    def conv(self, in_ch, out_ch, kernel_size, stride, padding):
        return nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False)

    def activation(self, channels):
        return nn.ReLU()


def conv_method(name: str):
    """Look a conv-replacement method up by name: 'fp' or a Table 1 baseline."""
    if name == "fp":
        return FullPrecision()
    from bidrn.nn.baselines import BASELINES

    try:
        return BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown encoder method {name!r}; expected 'fp', 'bidrn' or one of "
                         f"{sorted(BASELINES)}") from None


class Bottleneck(nn.Module):
    """ResNet-50 block with pluggable convs/activations: 1x1 -> 3x3 (stride) -> 1x1 (x4), + shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, method):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1, self.bn1, self.act1 = method.conv(in_ch, width, 1, 1, 0), nn.BatchNorm2d(width), method.activation(width)
        self.conv2, self.bn2, self.act2 = method.conv(width, width, 3, stride, 1), nn.BatchNorm2d(width), method.activation(width)
        self.conv3, self.bn3 = method.conv(width, out_ch, 1, 1, 0), nn.BatchNorm2d(out_ch)
        self.shortcut = _shortcut(in_ch, out_ch, stride, method)
        self.act3 = method.activation(out_ch)

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + self.shortcut(x))


class BasicBlock(nn.Module):
    """ResNet-18 block with pluggable convs/activations: 3x3 (stride) -> 3x3, + shortcut."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, method):
        super().__init__()
        self.conv1, self.bn1, self.act1 = method.conv(in_ch, width, 3, stride, 1), nn.BatchNorm2d(width), method.activation(width)
        self.conv2, self.bn2 = method.conv(width, width, 3, 1, 1), nn.BatchNorm2d(width)
        self.shortcut = _shortcut(in_ch, width, stride, method)
        self.act2 = method.activation(width)

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def _shortcut(in_ch, out_ch, stride, method) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(method.conv(in_ch, out_ch, 1, stride, 0), nn.BatchNorm2d(out_ch))


def _block_residual(in_ch, out_ch, stride, cfg: EncoderConfig) -> nn.Module | None:
    """BR of eq. 11: identity where shapes match, else the original 1x1 conv + BN, full precision or binary."""
    if cfg.block_residual == "none":
        return None
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    if cfg.block_residual == "binary":
        return PlainBinaryConv(in_ch, out_ch, 1, stride, cfg.pre_activation)
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))


class _BiDRB(nn.Module):
    """o'' = LCR chain(x) + BR(x) (eq. 11); no activation at the block output."""

    def forward(self, x):
        out = self.chain(x)
        return out if self.block_residual is None else out + self.block_residual(x)


class BiDRBottleneck(_BiDRB):
    """ResNet-50 bottleneck as a BiDRB.

    conv1 (1x1, in -> w): FDR with k = in/w (4 in identity blocks, 2 in the first block of stages 2-4), BaseLCR
    when in == w (stage 1, block 1); conv2 (3x3): BaseLCR, or DScR at stride 2; conv3 (1x1, w -> 4w): FUR, k = 4.
    A switched-off module (Table 2a ablations) becomes a PlainBinaryConv of the same shape.
    """

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, cfg: EncoderConfig):
        super().__init__()
        out_ch, pa, lcr = width * 4, cfg.pre_activation, set(cfg.lcr)
        if in_ch == width:
            conv1 = BaseLCR(width, 1, pa)
        elif "fdr" in lcr and in_ch % width == 0:
            conv1 = FDR(width, in_ch // width, 1, pa)
        else:
            conv1 = PlainBinaryConv(in_ch, width, 1, 1, pa)
        if stride == 1:
            conv2 = BaseLCR(width, 3, pa)
        elif "dscr" in lcr:
            conv2 = DScR(width, 3, pa)
        else:
            conv2 = PlainBinaryConv(width, width, 3, stride, pa)
        conv3 = FUR(width, 4, 1, 1, pa) if "fur" in lcr else PlainBinaryConv(width, out_ch, 1, 1, pa)
        self.chain = nn.Sequential(conv1, conv2, conv3)
        self.block_residual = _block_residual(in_ch, out_ch, stride, cfg)


class BiDRBasic(_BiDRB):
    """ResNet-18 basic block as a BiDRB: conv1 = BaseLCR, or DSaR (C -> 2C, stride 2); conv2 = BaseLCR."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, cfg: EncoderConfig):
        super().__init__()
        pa = cfg.pre_activation
        if stride == 1 and in_ch == width:
            conv1 = BaseLCR(width, 3, pa)
        elif "dsar" in cfg.lcr and width % in_ch == 0 and stride == 2:
            conv1 = DSaR(in_ch, width // in_ch, 3, pa)
        else:
            conv1 = PlainBinaryConv(in_ch, width, 3, stride, pa)
        self.chain = nn.Sequential(conv1, BaseLCR(width, 3, pa))
        self.block_residual = _block_residual(in_ch, width, stride, cfg)


class ResNetEncoder(nn.Module):
    """B x 3 x H x W -> B x out_channels x H/32 x W/32 (stem 7x7/2 + maxpool, four stages)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        bidrn = cfg.method == "bidrn"
        method = None if bidrn else conv_method(cfg.method)
        self.stem = nn.Sequential(
            nn.Conv2d(3, cfg.width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(cfg.width),
            # A ReLU here would feed sign() non-negative values (constant +1): BiDRN drops it, the
            # baselines use their own activation.
            nn.Identity() if bidrn else method.activation(cfg.width),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        if cfg.depth == 50:
            block = BiDRBottleneck if bidrn else Bottleneck
        else:
            block = BiDRBasic if bidrn else BasicBlock
        stages, in_ch = [], cfg.width
        for i, n in enumerate(cfg.stage_blocks):
            width = cfg.width * 2 ** i
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_ch, width, stride, cfg if bidrn else method))
                in_ch = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_channels = in_ch

    def forward(self, x):  # B x 3 x H x W -> B x C x H/32 x W/32
        return self.stages(self.stem(x))
