"""Every distinct binary layer shape of BiDRN, derived from the encoder layouts until the model can be read.

Encoders are torchvision ResNets v1.5 (stride on the 3x3 conv of a bottleneck), stem and downsample
shortcuts kept full precision as in Bi-Real / ReActNet; LCR (the paper's Local Convolution Residual) splits
every channel-changing 1x1 conv into chunks of C -> C convs with C = the block width, so the 1x1 shapes
are C -> C at the resolution they run at.
  body   ResNet-50 at 256 x 192 (features 64 x 48), batch 1
  hands  ResNet-50 at 256 x 256 (features 64 x 64), two crops: batch 2
  face   ResNet-18 at 192 x 192 (features 48 x 48), batch 1
  BoxNet ConvTranspose2d k4 s2 p1 2248 -> 256 (8 x 6 -> 16 x 12) and 256 -> 256 (16 x 12 -> 32 x 24),
         Linear 256 -> 256 on 3 rows.
And the int8 export's block residuals (eq. 11's 1 x 1 conv at each stage's first block, kind
"int8_pointwise": bidrn::int8_pointwise, not a binary layer), named br_<encoder>_<C>_<O>_<H>x<W>.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerShape:
    name: str
    kind: str  # "conv", "conv_transpose", "linear", "int8_pointwise" (1 x 1, int8) or "int8_conv_transpose"
    batch: int
    in_channels: int
    out_channels: int
    height: int = 1  # input height / width (1 for linear)
    width: int = 1
    kernel: int = 1
    stride: int = 1
    padding: int = 0

    @property
    def transposed(self) -> bool:
        return self.kind in ("conv_transpose", "int8_conv_transpose")

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.transposed:
            return ((self.height - 1) * self.stride - 2 * self.padding + self.kernel,
                    (self.width - 1) * self.stride - 2 * self.padding + self.kernel)
        return ((self.height + 2 * self.padding - self.kernel) // self.stride + 1,
                (self.width + 2 * self.padding - self.kernel) // self.stride + 1)

    @property
    def macs(self) -> int:
        """Binary (int8 for the int8 kinds) MACs, counting only valid taps for the transposed conv (stride^2
        fewer than its kernel)."""
        oh, ow = self.out_hw
        taps = self.kernel ** 2 // (self.stride ** 2 if self.transposed else 1)
        return self.batch * oh * ow * self.out_channels * self.in_channels * taps


REFERENCE = LayerShape("ref3x3_256_28", "conv", 1, 256, 256, 28, 28, 3, 1, 1)


def _resnet(prefix: str, batch: int, h: int, w: int, bottleneck: bool) -> list[LayerShape]:
    """Binary convs of ResNet layers 1-4 whose first stage runs at h x w; widths 64, 128, 256, 512."""
    shapes = []
    for stage, width in enumerate((64, 128, 256, 512)):
        sh, sw = h >> stage, w >> stage
        if stage:
            # First block: 3x3 stride 2 from the previous resolution (v1.5); in a bottleneck its 1x1
            # reduction runs before it, at the previous resolution.
            shapes.append(LayerShape(f"{prefix}_3x3s2_{width}_{2 * sh}x{2 * sw}", "conv", batch, width, width,
                                     2 * sh, 2 * sw, 3, 2, 1))
            if bottleneck:
                shapes.append(LayerShape(f"{prefix}_1x1_{width}_{2 * sh}x{2 * sw}", "conv", batch, width, width,
                                         2 * sh, 2 * sw))
        shapes.append(LayerShape(f"{prefix}_3x3_{width}_{sh}x{sw}", "conv", batch, width, width, sh, sw, 3, 1, 1))
        if bottleneck:
            shapes.append(LayerShape(f"{prefix}_1x1_{width}_{sh}x{sw}", "conv", batch, width, width, sh, sw))
    return shapes


BIDRN_LAYERS: list[LayerShape] = [
    *_resnet("body", 1, 64, 48, bottleneck=True),
    *_resnet("hand", 2, 64, 64, bottleneck=True),
    *_resnet("face", 1, 48, 48, bottleneck=False),
    LayerShape("boxnet_deconv_2248_8x6", "conv_transpose", 1, 2248, 256, 8, 6, 4, 2, 1),
    LayerShape("boxnet_deconv_256_16x12", "conv_transpose", 1, 256, 256, 16, 12, 4, 2, 1),
    LayerShape("boxnet_linear_256", "linear", 3, 256, 256),
]


def _block_residuals(prefix: str, batch: int, h: int, w: int, bottleneck: bool) -> list[LayerShape]:
    """The 1 x 1 convs of eq. 11's block residuals: stage 1 only in a bottleneck (64 -> 256 at stride 1),
    then each stage's first block at stride 2 from the previous stage's resolution."""
    expansion = 4 if bottleneck else 1
    shapes, in_ch = [], 64
    for stage, width in enumerate((64, 128, 256, 512)):
        out_ch, stride = width * expansion, 1 if stage == 0 else 2
        if in_ch != out_ch or stride != 1:
            sh, sw = (h >> stage) * stride, (w >> stage) * stride
            shapes.append(LayerShape(f"br_{prefix}_{in_ch}_{out_ch}_{sh}x{sw}", "int8_pointwise", batch, in_ch,
                                     out_ch, sh, sw, 1, stride))
        in_ch = out_ch
    return shapes


BLOCK_RESIDUALS: list[LayerShape] = [
    *_block_residuals("body", 1, 64, 48, bottleneck=True),
    *_block_residuals("hand", 2, 64, 64, bottleneck=True),
    *_block_residuals("face", 1, 48, 48, bottleneck=False),
]

# BoxNet's full-precision deconv3 (k4 s2 p1, 256 -> 256 at 32 x 24), which --int8 runs as
# bidrn::int8_conv_transpose2d (export.Int8ConvTranspose).
INT8_DECONV = LayerShape("int8_deconv3_256_32x24", "int8_conv_transpose", 1, 256, 256, 32, 24, 4, 2, 1)


def benchmark_layers() -> list[LayerShape]:
    """The reference layer first, then BiDRN's binary layers, then the int8 block residuals and deconv3."""
    return [REFERENCE, *BIDRN_LAYERS, *BLOCK_RESIDUALS, INT8_DECONV]
