"""In-place module rewrites shared by the export passes (deconv.py, stems.py)."""
from __future__ import annotations

from typing import Callable

from torch import nn


def replace_children(model: nn.Module, matches: Callable[[nn.Module], bool],
                     make: Callable[[nn.Module], nn.Module]) -> int:
    """Replace every submodule of ``model`` for which ``matches`` holds by ``make(submodule)``, in place;
    returns how many were replaced."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if matches(child):
                setattr(parent, name, make(child))
                count += 1
    return count
