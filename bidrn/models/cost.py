"""Params and OPs in the paper's convention, measured on the instantiated model (larq.models.summary's spirit).

Params = FP params + binary weights / 32 (Sec. 4.1). OPs = (FP MACs + binary MACs / 64 + 5 x BN output elements
+ SMPL-X layer MACs) / 2^30, which matches fvcore's FlopCountAnalysis in train mode. RoIAlign, softmax,
activations and element-wise adds are not counted. MACs are read by forward hooks on one batch-1 forward
through the real modules, run on the meta device (shapes only, no arithmetic, no weights allocated).

The paper's BiDRN OPs only fit if BoxNet's deconv3 is counted as binary while its Params need it full precision;
we build it full precision and report both accountings (``ops_g`` and ``ops_g_deconv3_binary``) for every
BiDRN-family config (Table 3's full-precision-BoxNet row only fits the same way).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from bidrn.models.config import ModelConfig
from bidrn.models.prune import kept_weights
from bidrn.nn.layers import BinaryLayer

SMPLX_LAYER_MACS = 27.0e6  # posedirs 15.27 M + skinning 9.22 M + J regressor 1.73 M + blend shapes 0.63 M + rest
BN_OPS_PER_ELEMENT = 5
PARTS = {"body_backbone": "body encoder", "hand_backbone": "hand encoder", "face_backbone": "face encoder",
         "box_net": "BoxNet"}
OTHER = "other heads"
DECONV3 = "box_net.deconv.6"


@dataclass
class PartCost:
    params_fp: int = 0
    params_bin: int = 0
    macs_fp: int = 0
    macs_bin: int = 0
    bn_elements: int = 0

    @property
    def params_m(self) -> float:
        return (self.params_fp + self.params_bin / 32) / 1e6

    @property
    def memory_mb(self) -> float:
        return (self.params_fp * 4 + self.params_bin / 8) / 2**20

    @property
    def ops_g(self) -> float:
        return (self.macs_fp + self.macs_bin / 64 + BN_OPS_PER_ELEMENT * self.bn_elements) / 2**30

    def add(self, other: "PartCost") -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


@dataclass
class ModelCost:
    name: str
    parts: dict[str, PartCost]
    ops_g_deconv3_binary: float | None  # only for the BiDRN family (see uses_deconv3_question)
    smplx_macs: float = SMPLX_LAYER_MACS
    total: PartCost = field(init=False)

    def __post_init__(self):
        self.total = PartCost()
        for p in self.parts.values():
            self.total.add(p)

    @property
    def params_m(self) -> float:
        return self.total.params_m

    @property
    def ops_g(self) -> float:
        return self.total.ops_g + self.smplx_macs / 2**30


def _part(name: str) -> str:
    return PARTS.get(name.split(".")[0], OTHER)


def _is_binary(m: nn.Module) -> bool:
    return isinstance(m, BinaryLayer) and m.is_binary


def _layer_macs(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(m, nn.ConvTranspose2d):  # fvcore counts a transposed conv from its input side
        kh, kw = m.kernel_size
        in_ch = getattr(m, "counted_in_channels", m.in_channels)
        return inp.numel() // m.in_channels * in_ch * m.out_channels * kh * kw // m.groups
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return out.numel() * (m.in_channels // m.groups) * kh * kw
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    return 0


def measure(model: nn.Module, input_size: tuple[int, int], binary_override: frozenset[str] = frozenset()) -> dict[str, PartCost]:
    """Per-part costs of ``model`` on one B=1 input; layers named in ``binary_override`` count as binary MACs."""
    parts: dict[str, PartCost] = defaultdict(PartCost)
    names = {m: n for n, m in model.named_modules()}

    for name, m in model.named_modules():
        cost = parts[_part(name)]
        if isinstance(m, parametrize.ParametrizationList):
            continue  # a pruned conv's dense latent weight: counted below as its surviving weights
        for pname, p in m.named_parameters(recurse=False):
            if pname == "weight" and _is_binary(m):
                cost.params_bin += p.numel()
            else:
                cost.params_fp += p.numel()
        kept = kept_weights(m)
        if kept is not None:  # a pruned conv: its parametrized weight lives in a child; count survivors only
            cost.params_fp += kept

    def hook(m, args, out):
        name = names[m]
        cost = parts[_part(name)]
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            cost.bn_elements += out.numel()
            return
        macs = _layer_macs(m, args[0], out)
        kept = kept_weights(m)
        if kept is not None:
            macs = macs * kept // m.weight.numel()
        if _is_binary(m) or name in binary_override:
            cost.macs_bin += macs
        else:
            cost.macs_fp += macs

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.modules.batchnorm._BatchNorm))]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return {part: parts[part] for part in list(PARTS.values()) + [OTHER] if part in parts}


def uses_deconv3_question(cfg: ModelConfig) -> bool:
    """The BiDRN-family rows (some encoder is BiDRN): the paper's OPs for these count deconv3 as binary."""
    return any(e.method == "bidrn" for e in (cfg.body, cfg.hand, cfg.face))


def model_cost(cfg: ModelConfig) -> ModelCost:
    """Build ``cfg`` on the meta device and measure it (seconds, no memory for weights)."""
    from bidrn.models.registry import create_model

    with torch.device("meta"):
        model = create_model(cfg).eval()
    parts = measure(model, cfg.input_size)
    alt = None
    if uses_deconv3_question(cfg):
        alt_parts = measure(model, cfg.input_size, frozenset({DECONV3}))
        alt = ModelCost(cfg.name, alt_parts, None).ops_g
    return ModelCost(cfg.name, parts, alt)
