"""Evaluation: the paper's whole-body mesh metrics (MPVPE, PA-MPVPE, PA-MPJPE)."""
from .metrics import (
    align_anchor,
    mean_point_error,
    mpvpe,
    pa_error,
    procrustes_align,
    whole_body_metrics,
)

__all__ = ["align_anchor", "mean_point_error", "mpvpe", "pa_error", "procrustes_align", "whole_body_metrics"]
