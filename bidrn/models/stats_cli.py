"""`bidrn stats`: the paper's Params/OPs table, measured on the real modules, per config and per part."""
from __future__ import annotations

import json

from bidrn.models.cost import ModelCost, model_cost
from bidrn.models.registry import get_config, list_models


def paper_ops(cost: ModelCost) -> float:
    """The OPs figure comparable with the paper's: deconv3 counted binary for the BiDRN family (cost.py)."""
    return cost.ops_g if cost.ops_g_deconv3_binary is None else cost.ops_g_deconv3_binary


def cost_record(name: str) -> dict:
    cfg = get_config(name)
    cost = model_cost(cfg)
    row = {
        "name": name, "params_m": round(cost.params_m, 4), "ops_g": round(cost.ops_g, 4),
        "ops_g_deconv3_binary": None if cost.ops_g_deconv3_binary is None else round(cost.ops_g_deconv3_binary, 4),
        "memory_mb": round(cost.total.memory_mb, 3),
        "fp32_memory_mb": round((cost.total.params_fp + cost.total.params_bin) * 4 / 2**20, 3),
        "paper": None, "description": cfg.description,
        "parts": {part: {"params_fp": p.params_fp, "params_bin": p.params_bin, "params_m": round(p.params_m, 4),
                         "memory_mb": round(p.memory_mb, 3), "macs_fp": p.macs_fp, "macs_bin": p.macs_bin,
                         "bn_elements": p.bn_elements, "ops_g": round(p.ops_g, 4)}
                  for part, p in cost.parts.items()},
        "smplx_macs": cost.smplx_macs,
    }
    if cfg.paper is not None:
        ops_cmp = paper_ops(cost)
        row["paper"] = {"table": cfg.paper.table, "params_m": cfg.paper.params_m, "ops_g": cfg.paper.ops_g,
                        "params_diff": round(cost.params_m - cfg.paper.params_m, 4),
                        "ops_diff": round(ops_cmp - cfg.paper.ops_g, 4) if cfg.paper.ops_g is not None else None,
                        "ops_reproducible": cfg.paper.ops_reproducible, "note": cfg.paper.note}
    return row


def _fmt(v, spec="8.3f"):
    return f"{v:{spec}}" if v is not None else " " * (int(spec.split(".")[0]) - 1) + "-"


def format_summary(rows: list[dict]) -> str:
    head = (f"{'config':28s} {'table':9s} {'Params M':>8s} {'paper':>7s} {'diff':>7s}   {'OPs G':>7s} "
            f"{'d3-bin':>7s} {'paper':>7s} {'diff':>7s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        p = r["paper"] or {}
        flag = "" if p.get("ops_reproducible", True) else "  (OPs: see note)"
        lines.append(f"{r['name']:28s} {p.get('table', ''):9s} {r['params_m']:8.3f} {_fmt(p.get('params_m'), '7.2f')} "
                     f"{_fmt(p.get('params_diff'), '+7.3f')}   {r['ops_g']:7.3f} {_fmt(r['ops_g_deconv3_binary'], '7.3f')} "
                     f"{_fmt(p.get('ops_g'), '7.2f')} {_fmt(p.get('ops_diff'), '+7.3f')}{flag}")
    lines.append("")
    lines.append("Params = FP + binary/32 (M = 1e6); OPs = (FP MACs + binary MACs/64 + 5 x BN outputs + 27.0 M SMPL-X "
                 "MACs) / 2^30. d3-bin: OPs with BoxNet deconv3 counted binary, the accounting the paper's BiDRN-family "
                 "OPs fit (the diff uses it for those rows).")
    return "\n".join(lines)


def format_parts(r: dict) -> str:
    head = (f"{'part':14s} {'1-bit params':>13s} {'32-bit params':>14s} {'Params M':>9s} {'memory MB':>10s} "
            f"{'1-bit MACs':>14s} {'32-bit MACs':>14s} {'OPs G':>7s}")
    lines = [f"{r['name']}: {r['description']}", head, "-" * len(head)]
    for part, p in r["parts"].items():
        lines.append(f"{part:14s} {p['params_bin']:13,d} {p['params_fp']:14,d} {p['params_m']:9.3f} "
                     f"{p['memory_mb']:10.3f} {p['macs_bin']:14,d} {p['macs_fp']:14,d} {p['ops_g']:7.3f}")
    lines.append(f"{'SMPL-X layer':14s} {'':13s} {'':14s} {'':9s} {'':10s} {'':14s} {int(r['smplx_macs']):14,d} "
                 f"{r['smplx_macs'] / 2**30:7.3f}")
    ratio = r["fp32_memory_mb"] / r["memory_mb"]
    lines.append(f"total: {r['params_m']:.3f} M params, {r['ops_g']:.3f} G OPs, {r['memory_mb']:.2f} MB of weights "
                 f"({r['fp32_memory_mb']:.2f} MB as float32, {ratio:.1f}x smaller)")
    return "\n".join(lines)


def run(args) -> int:
    names = args.names or (list_models(paper_only=True) if not args.all else list_models())
    for n in names:
        get_config(n)  # fail early, with the list of known names
    rows = [cost_record(n) for n in names]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(format_summary(rows))
    if args.parts or args.names:
        for r in rows:
            print()
            print(format_parts(r))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("stats", help="Params/OPs per config and per part, beside the paper's figures",
                       description="Measure Params (M) and OPs (G) in the paper's convention on the instantiated "
                                   "models. With no NAME: every config that has a paper row.")
    p.add_argument("names", nargs="*", metavar="NAME", help="registered model names (default: the paper's rows)")
    p.add_argument("--all", action="store_true", help="every registered config, the tiny ones included")
    p.add_argument("--parts", action="store_true", help="also print the per-part breakdown for every config")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects (name, params_m, ops_g, ...)")
    p.set_defaults(func=run)
