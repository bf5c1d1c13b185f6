"""`bidrn body info | verify | render`: look at the body model the project loads."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("body", help="inspect, verify and draw the SMPL-X body model")
    sub = parser.add_subparsers(dest="body_command", metavar="SUBCOMMAND", required=True)
    model_help = "SMPL-X .npz file or folder holding SMPLX_NEUTRAL.npz (default: $BIDRN_BODY_MODEL, then the embedded model)"

    info = sub.add_parser("info", help="describe the loaded body model")
    info.add_argument("--model", type=Path, help=model_help)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_info)

    verify = sub.add_parser("verify", help="compare with the smplx package on random parameters")
    verify.add_argument("--model", type=Path, help=model_help)
    verify.add_argument("--batch", type=int, default=16)
    verify.add_argument("--seed", type=int, default=0)
    verify.set_defaults(func=_verify)

    compare = sub.add_parser("compare", help="the same poses on this model and a reference SMPL-X file, side by side")
    compare.add_argument("--reference", type=Path, required=True,
                         help="the reference model, e.g. the official SMPLX_NEUTRAL.npz")
    compare.add_argument("--model", type=Path, help=model_help)
    compare.add_argument("--out", type=Path, default=Path("compare.png"))
    compare.add_argument("--size", type=int, default=384, help="height of each panel in pixels")
    compare.set_defaults(func=_compare)

    render = sub.add_parser("render", help="draw the model at rest and in an expressive pose (front and side)")
    render.add_argument("--model", type=Path, help=model_help)
    render.add_argument("--out", type=Path, default=Path("body.png"))
    render.add_argument("--size", type=int, default=512, help="height of each panel in pixels")
    render.set_defaults(func=_render)


def describe(layer) -> dict:
    return {
        "path": str(layer.path),
        "source": layer.source,
        "license": layer.license,
        "vertices": layer.num_vertices,
        "faces": int(layer.faces.shape[0]),
        "skeleton_joints": len(layer.chain.parents),
        "output_joints": len(layer.joint_names),
        "betas": layer.num_betas,
        "expression": layer.num_expression,
        "pose_correctives": layer.has_pose_correctives,
        "hand_vertices": [int(layer.lhand_vertex_idx.numel()), int(layer.rhand_vertex_idx.numel())],
        "face_vertices": int(layer.face_vertex_idx.numel()),
    }


def _info(args) -> int:
    from . import load_body_model

    info = describe(load_body_model(args.model))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>17}: {value}")
    return 0


def _verify(args) -> int:
    from . import load_body_model
    from .verify import TOLERANCE_M, check_parity

    report = check_parity(load_body_model(args.model), batch=args.batch, seed=args.seed)
    print(f"model: {report.path}")
    print(f"max vertex difference vs smplx: {report.max_vertex_error_m:.3e} m")
    print(f"max joint difference vs smplx:  {report.max_joint_error_m:.3e} m")
    print(f"{'PASS' if report.ok else 'FAIL'} (tolerance {TOLERANCE_M:.0e} m)")
    return 0 if report.ok else 1


def expressive_pose(layer) -> dict[str, torch.Tensor]:
    """A readable pose: waving right arm, left hand on hip side, a step, a fist, open jaw and a smile."""
    body = torch.zeros(21, 3)
    names = list(layer.joint_names[1:22])

    def set_(joint: str, aa: tuple[float, float, float]) -> None:
        body[names.index(joint)] = torch.tensor(aa)
    # SMPL-X arms lie along +-X, so a rotation about Z raises the left arm (+) and lowers the right one (+).
    set_("right_shoulder", (0.0, 0.0, -0.9))  # arm up
    set_("right_elbow", (0.0, 1.2, 0.0))  # forearm bent forward
    set_("left_shoulder", (0.0, 0.0, -1.1))  # arm down
    set_("left_elbow", (0.0, -0.8, 0.0))
    set_("left_hip", (-0.5, 0.0, 0.1))  # step forward
    set_("left_knee", (0.6, 0.0, 0.0))
    set_("spine2", (0.0, 0.2, 0.0))
    set_("neck", (0.1, -0.3, 0.0))
    curl = torch.zeros(15, 3)
    curl[:, 2] = -0.8  # the left fingers curl towards the palm about -z (the mirrored right hand about +z)
    curl[12:, :] = torch.tensor([0.3, 0.3, 0.0])  # thumb
    expression = torch.zeros(1, layer.num_expression)
    expression[0, :3] = torch.tensor([2.0, -1.5, 1.0])
    return {
        "body_pose": body.reshape(1, 63), "left_hand_pose": curl.reshape(1, 45),
        "right_hand_pose": (curl * torch.tensor([1.0, -1.0, -1.0])).reshape(1, 45),
        "jaw_pose": torch.tensor([[0.3, 0.0, 0.0]]), "expression": expression,
    }


def body_images(layer, size: int = 512) -> torch.Tensor:
    """Rest and posed model, each from the front and the side: 4 x size x (3/4 size) x 4 images."""
    from bidrn.render import Camera, render

    with torch.no_grad():
        rest = layer().vertices[0]
        posed = layer(**expressive_pose(layer)).vertices[0]
    meshes = []
    for verts in (rest, posed):
        centre = (verts.max(0).values + verts.min(0).values) / 2
        for yaw in (0.0, torch.pi / 2):
            c, s = torch.cos(torch.tensor(yaw)), torch.sin(torch.tensor(yaw))
            v = verts - centre
            x, z = c * v[:, 0] + s * v[:, 2], -s * v[:, 0] + c * v[:, 2]
            # SMPL-X (Y up, +Z towards the viewer) to the OpenCV camera: x right, y down, z away.
            meshes.append(torch.stack([x, -v[:, 1], 4.0 - z], -1))
    height, width = size, size * 3 // 4
    camera = Camera(focal=(size * 2.0, size * 2.0), principal=(width / 2, height / 2), height=height, width=width)
    colors = torch.tensor([0.80, 0.62, 0.50]).expand(1, layer.num_vertices, 3)
    return render(torch.stack(meshes), layer.faces, colors, camera, supersample=3)


def _save_rows(rows: list[torch.Tensor], out: Path) -> None:
    """Image rows (each N x H x W x C) -> one PNG: the panels of a row side by side, rows stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = torch.cat([torch.cat(list(r[..., :3]), dim=1) for r in rows], dim=0).clamp(0, 1).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(out, grid)


def _render(args) -> int:
    from . import load_body_model

    layer = load_body_model(args.model)
    _save_rows([body_images(layer, args.size)], args.out)
    print(f"wrote {args.out}: rest front, rest side, posed front, posed side ({layer.source})")
    return 0


def rest_joint_offsets(layer, reference) -> dict[str, float]:
    """Distance (cm) between the two models' rest-pose skeleton joints, pelvis on pelvis, for the 25 body joints."""
    from .joint_sets import SKELETON_JOINTS

    with torch.no_grad():
        a, b = layer().joints[0, :25], reference().joints[0, :25]
    d = ((a - a[:1]) - (b - b[:1])).norm(dim=-1) * 100
    return dict(zip(SKELETON_JOINTS[:25], d.tolist()))


def _compare(args) -> int:
    from . import load_body_model

    layer, reference = load_body_model(args.model), load_body_model(args.reference)
    _save_rows([body_images(layer, args.size), body_images(reference, args.size)], args.out)
    print(f"wrote {args.out}: top {layer.source}; bottom {reference.source} (rest front/side, posed front/side)")
    print("rest-pose joint offsets, pelvis aligned (cm):")
    for name, cm in rest_joint_offsets(layer, reference).items():
        print(f"  {name:16s} {cm:6.1f}")
    return 0
