"""BiDRN Mobile: binarized 3D whole-body human mesh recovery (Binarized Dual Residual Network, SMPL-X)."""
from bidrn.models.registry import create_model, get_config, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "get_config", "list_models", "__version__"]
