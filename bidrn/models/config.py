"""Configs are data: a named config reproduces a row of the paper's tables by itself (see registry.py)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

LCR_MODULES = ("dscr", "fur", "fdr", "dsar")  # BaseLCR is always on (Table 2a adds these one by one)


@dataclass(frozen=True)
class EncoderConfig:
    """One ResNet encoder (body, hand or face) and how it is binarized.

    method: "fp" (full precision), "bidrn" (BiDRB blocks), or a baseline from bidrn.nn.baselines.BASELINES.
    lcr: the LCR modules switched on for BiDRN (Table 2a); block_residual: "fp", "binary" or "none" (Table 2c).
    width/blocks shrink the network for the tiny configs; prune is Table 4's unstructured L1 pruning ratio.
    """

    depth: int = 50
    method: str = "fp"
    lcr: tuple[str, ...] = LCR_MODULES
    block_residual: str = "fp"
    pre_activation: str = "hardtanh"
    width: int = 64
    blocks: tuple[int, ...] | None = None
    prune: float = 0.0

    def __post_init__(self):
        if self.depth not in (18, 50):
            raise ValueError(f"encoder depth must be 18 or 50, got {self.depth}")
        if self.block_residual not in ("fp", "binary", "none"):
            raise ValueError(f"block_residual must be 'fp', 'binary' or 'none', got {self.block_residual!r}")
        unknown = set(self.lcr) - set(LCR_MODULES)
        if unknown:
            raise ValueError(f"unknown LCR modules {sorted(unknown)}; expected a subset of {LCR_MODULES}")
        if not 0.0 <= self.prune < 1.0:
            raise ValueError(f"prune must be in [0, 1), got {self.prune}")

    @property
    def stage_blocks(self) -> tuple[int, ...]:
        return self.blocks or {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[self.depth]

    @property
    def out_channels(self) -> int:
        return self.width * 8 * (4 if self.depth == 50 else 1)


@dataclass(frozen=True)
class PaperRow:
    """The paper's figures for a config: Params (M), OPs (G; None where no scheme reproduces them)."""

    table: str
    params_m: float
    ops_g: float | None
    ops_reproducible: bool = True
    note: str = ""


@dataclass(frozen=True)
class ModelConfig:
    """The whole-body network: Hand4Whole's layout (ARCHITECTURE.md) with per-part encoder choices."""

    name: str
    body: EncoderConfig = field(default_factory=EncoderConfig)
    hand: EncoderConfig = field(default_factory=EncoderConfig)
    face: EncoderConfig = field(default_factory=lambda: EncoderConfig(depth=18))
    boxnet: str = "fp"  # "fp" or "binary" (Binarized BoxNet, Sec. 3.2)
    input_size: tuple[int, int] = (512, 384)  # H x W of the input image
    body_input: tuple[int, int] = (256, 192)
    hand_input: tuple[int, int] = (256, 256)
    face_input: tuple[int, int] = (192, 192)
    heatmap_depth: int = 8
    boxnet_width: int = 256
    # None: encoder channels + J*D heatmap channels. Set only to reproduce a count that kept Hand4Whole's
    # hard-coded 2048 + 200 (Table 4's ResNet-18 row); the forward zero-pads the concat up to it.
    boxnet_in_channels: int | None = None
    rot_feat_channels: int = 512  # RotationNets' 1x1 conv width
    focal: tuple[float, float] = (5000.0, 5000.0)
    camera_3d_size: float = 2.5
    body_box_size: float = 2.0
    hand_box_size: float = 0.3
    face_box_size: float = 0.3
    roi_sampling_ratio: int = 1  # bidrn.models.ops.EXPORT_SAMPLING_RATIO: equals torchvision's adaptive grid here
    body_resize: str = "nearest"  # Hand4Whole resizes the image to body_input with F.interpolate's default
    description: str = ""
    paper: PaperRow | None = None

    def __post_init__(self):
        if self.boxnet not in ("fp", "binary"):
            raise ValueError(f"boxnet must be 'fp' or 'binary', got {self.boxnet!r}")

    def with_encoders(self, **kw) -> "ModelConfig":
        return replace(self, **kw)
