"""Named configs: every row of the paper's Tables 1, 2a-2d, 3 and 4, plus scaled-down CPU variants.

``create_model(name)`` is the one way to get a network (timm's create_model idea). A config name reproduces its
paper row by itself; the paper's Params/OPs are attached so `bidrn stats` can print them side by side.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bidrn.models.config import EncoderConfig, ModelConfig, PaperRow

BASELINE_NAMES = ("bnn", "xnor", "dorefa", "bireal", "reactnet", "recu", "fda")

_R50 = EncoderConfig(depth=50)
_R18 = EncoderConfig(depth=18)
_FP = ModelConfig(name="hand4whole", body=_R50, hand=_R50, face=_R18)


def _all_encoders(cfg: ModelConfig, **kw) -> ModelConfig:
    """Apply the same encoder change to body, hand and face."""
    return replace(cfg, body=replace(cfg.body, **kw), hand=replace(cfg.hand, **kw), face=replace(cfg.face, **kw))


def _bidrn(name: str, paper: PaperRow | None, boxnet: str = "binary", description: str = "", **enc) -> ModelConfig:
    return _all_encoders(replace(_FP, name=name, boxnet=boxnet, paper=paper, description=description),
                         method="bidrn", **enc)


def _paper_configs() -> list[ModelConfig]:
    t1, t2a, t2c, t2d, t3, t4 = "Table 1", "Table 2a", "Table 2c", "Table 2d", "Table 3", "Table 4"
    cfgs = [
        replace(_FP, paper=PaperRow(t1, 77.84, 16.85), description="full-precision Hand4Whole (Moon et al. 2022)"),
        replace(_FP, name="hand4whole-r18", body=_R18, hand=_R18, boxnet_in_channels=2048 + 200,
                paper=PaperRow(t4, 49.46, 8.55, note="BoxNet deconv1 keeps Hand4Whole's 2248 input channels"),
                description="full-precision Hand4Whole with ResNet-18 body and hand encoders"),
    ]
    paper_t1 = {"bnn": (21.61, 2.63), "xnor": (21.61, 2.63), "dorefa": (21.61, 2.63), "bireal": (21.61, 2.63),
                "reactnet": (21.66, 2.63), "recu": (21.71, 2.65), "fda": (32.06, 2.81)}
    for name in BASELINE_NAMES:
        params, ops = paper_t1[name]
        row = PaperRow(t1, params, ops) if name != "fda" else PaperRow(
            t1, params, ops, ops_reproducible=False,
            note="FDA's extras are training-time or element-wise; no counted op explains +0.18 G (docs/cost.md)")
        cfgs.append(_all_encoders(replace(_FP, name=name, paper=row,
                                          description=f"Hand4Whole with {name} binary encoder convs"), method=name))
    cfgs.append(_bidrn("bidrn", PaperRow(t1, 17.22, 2.50), description="BiDRN (the paper's full model)"))
    ablation_2a = [("bidrn-baselcr", (), 17.05, 2.48), ("bidrn-baselcr-dscr", ("dscr",), 17.05, 2.48),
                   ("bidrn-baselcr-dscr-fur", ("dscr", "fur"), 17.14, 2.49),
                   ("bidrn-baselcr-dscr-fur-fdr", ("dscr", "fur", "fdr"), 17.21, 2.50)]
    for name, lcr, params, ops in ablation_2a:
        cfgs.append(_bidrn(name, PaperRow(t2a, params, ops), lcr=lcr,
                           description="Table 2a break-down: LCR modules " + (", ".join(("baselcr",) + lcr))))
    cfgs += [
        _bidrn("bidrn-no-br", PaperRow(t2c, 11.51, 1.25), block_residual="none", description="BiDRN without BR"),
        _bidrn("bidrn-binary-br", PaperRow(t2c, 11.68, 1.28), block_residual="binary",
               description="BiDRN with a binarized Block Residual (also Table 3, Binarized BoxNet)"),
        _bidrn("bidrn-binary-br-fp-boxnet", PaperRow(t3, 21.81, 1.87), boxnet="fp", block_residual="binary",
               description="Table 3: binarized BR with a full-precision BoxNet"),
    ]
    bidrn_enc = replace(_R50, method="bidrn")
    t2d_note = "the paper's OPs for Table 2d fit no counting scheme"
    for part, params, ops in (("body", 47.78, 7.45), ("hand", 47.78, 7.45), ("face", 57.08, 9.94)):
        enc = replace(bidrn_enc, depth=18) if part == "face" else bidrn_enc
        cfgs.append(replace(_FP, name=f"bidrn-{part}-only", boxnet="binary", **{part: enc},
                            paper=PaperRow(t2d, params, ops, ops_reproducible=False, note=t2d_note),
                            description=f"Table 2d: only the {part} encoder is BiDRN (with the Binarized BoxNet)"))
    cfgs.append(_all_encoders(replace(_FP, name="hand4whole-l1prune90", description="Table 4: 90% L1 unstructured "
                                      "pruning of the encoder convs",
                                      paper=PaperRow(t4, 25.51, 2.76, ops_reproducible=False,
                                                     note="sparse MACs; the paper's OPs rule for pruning is unstated")),
                              prune=0.9))
    for act in ("relu", "prelu"):
        cfgs.append(_bidrn(f"bidrn-preact-{act}", None, pre_activation=act,
                           description=f"Table 2b: {act} pre-activation instead of Hardtanh"))
    return cfgs


def tiny(cfg: ModelConfig) -> ModelConfig:
    """The same network scaled for CPU training and fast tests: width 16, one block per stage, 256 x 192 input."""
    cfg = _all_encoders(cfg, width=16, blocks=(1, 1, 1, 1), prune=0.0)
    return replace(cfg, name=f"{cfg.name}-tiny", input_size=(256, 192), body_input=(128, 96), hand_input=(128, 128),
                   face_input=(96, 96), boxnet_width=64, rot_feat_channels=128, boxnet_in_channels=None, paper=None,
                   description=f"{cfg.description} (tiny: width 16, 1 block per stage, 256x192 input)")


def _build_registry() -> dict[str, ModelConfig]:
    cfgs = _paper_configs()
    by_name = {c.name: c for c in cfgs}
    for name in ("hand4whole",) + BASELINE_NAMES + ("bidrn",):
        cfgs.append(tiny(by_name[name]))
    return {c.name: c for c in cfgs}


REGISTRY: dict[str, ModelConfig] = _build_registry()


def list_models(paper_only: bool = False) -> list[str]:
    return [n for n, c in REGISTRY.items() if c.paper is not None or not paper_only]


def get_config(name: str) -> ModelConfig:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}") from None


# Weights shipped inside the package (safetensors + a model card beside them): no network access needed.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
PRETRAINED = {"bidrn-tiny": "bidrn-tiny-synthetic.safetensors"}


def pretrained_path(name: str) -> Path:
    if name not in PRETRAINED:
        raise ValueError(f"no pretrained weights are shipped for {name!r}; available: {sorted(PRETRAINED)} "
                         "(train your own with `bidrn train`, see configs/)")
    path = WEIGHTS_DIR / PRETRAINED[name]
    if not path.is_file():
        raise FileNotFoundError(f"the shipped weights {path} are missing from this installation; reinstall "
                                "bidrn-mobile or train them with `bidrn train configs/bidrn-tiny-synthetic.yaml`")
    return path


def create_model(name: str | ModelConfig, pretrained: bool = False, body_model=None):
    """Build a registered network (or one from a ModelConfig); ``pretrained`` loads the shipped weights."""
    from bidrn.models.hand4whole import WholeBodyNet

    cfg = name if isinstance(name, ModelConfig) else get_config(name)
    model = WholeBodyNet(cfg, body_model=body_model)
    if any(e.prune for e in (cfg.body, cfg.hand, cfg.face)):
        from bidrn.models.prune import prune_encoders

        prune_encoders(model)
    if pretrained:
        from bidrn.train.checkpoint import load_weights

        load_weights(model, pretrained_path(cfg.name))
        model.eval()
    return model
