"""Table 1's evaluation: run a model over a data set and average the paper's metrics (mm)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from bidrn.eval.metrics import whole_body_metrics

TABLE1_COLUMNS = ("mpvpe_all", "mpvpe_hand", "mpvpe_face", "pa_mpvpe_all", "pa_mpvpe_hand", "pa_mpvpe_face",
                  "pa_mpjpe_body", "pa_mpjpe_hand")


def gt_vertices(batch: dict, body_model) -> torch.Tensor:
    """Ground-truth mesh (B x V x 3): the sample's ``mesh_cam`` if it has one, else SMPL-X of its parameters."""
    if "mesh_cam" in batch:
        return batch["mesh_cam"]
    return body_model(betas=batch["smplx_shape"], global_orient=batch["smplx_root_pose"],
                      body_pose=batch["smplx_body_pose"], left_hand_pose=batch["smplx_lhand_pose"],
                      right_hand_pose=batch["smplx_rhand_pose"], jaw_pose=batch["smplx_jaw_pose"],
                      expression=batch["smplx_expr"]).vertices


@torch.no_grad()
def evaluate(model, dataset, body_model, batch_size: int = 8, device=None, progress: bool = False) -> dict[str, float]:
    """Mean of every Table 1 column over ``dataset`` (samples in bidrn.data.sample's format)."""
    from tqdm import tqdm

    device = device or next(model.parameters()).device
    was_training, attached = model.training, model.body_model
    model.eval().attach_body_model(body_model)
    sums = dict.fromkeys(TABLE1_COLUMNS, 0.0)
    count = 0
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        for batch in tqdm(loader, disable=not progress, desc="eval", unit="batch"):
            batch = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
            pred = model(batch["img"])["vertices"]
            gt = gt_vertices(batch, body_model)
            gt = gt - body_model.regress_joints(gt)[:, :1]  # pelvis-relative, as the prediction
            for k, v in whole_body_metrics(pred, gt, body_model).items():
                sums[k] += float(v.sum())
            count += pred.shape[0]
    finally:
        model.attach_body_model(attached)
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluation data set is empty")
    return {k: v / count for k, v in sums.items()}


def format_table(name: str, metrics: dict[str, float]) -> str:
    head = ("MPVPE all", "hand", "face", "PA-MPVPE all", "hand", "face", "PA-MPJPE body", "hand")
    widths = [max(len(h), 7) for h in head]
    lines = [f"{name} (mm)", "  ".join(h.rjust(w) for h, w in zip(head, widths)),
             "  ".join(f"{metrics[c]:{w}.1f}" for c, w in zip(TABLE1_COLUMNS, widths))]
    return "\n".join(lines)
