"""Loaders for the real data sets in the formats Hand4Whole reads (docs/data.md): training on Human3.6M, MSCOCO
whole-body and MPII with NeuralAnnot SMPL-X pseudo-GT; evaluation on EHF and AGORA."""
from .agora import AGORA
from .base import DatasetFormatError, RealDataset, SkipReport, process_bbox, smplx_hands_mean
from .ehf import EHF
from .human36m import Human36M
from .mpii import MPII
from .mscoco import MSCOCO

__all__ = ["AGORA", "EHF", "Human36M", "MPII", "MSCOCO", "DatasetFormatError", "RealDataset", "SkipReport",
           "process_bbox", "smplx_hands_mean"]
