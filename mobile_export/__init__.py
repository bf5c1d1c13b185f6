"""Mobile export of BiDRN: the bidrn:: binary-layer ops (:mod:`mobile_export.ops`), their C++ ExecuTorch
kernels (``mobile_export/kernels``, loaded by :mod:`mobile_export.kernel_library`) and benchmarks.

Importing it silences three messages of the pinned upstream versions (torch 2.13, executorch 1.5.1, torchao
0.18) that every export and benchmark printed and that say nothing about the user's model: torchao's
"Failed to load .../torchao/_C_*.so" for its CUDA-only extensions on a CPU torch, torch's pytree warning
that torchao registers an Enum as a constant, and torch's FutureWarning about ``LeafSpec`` raised from
``copy.deepcopy`` inside executorch's lowering. Only those exact messages: any other warning still shows.
"""
import logging as _logging
import warnings as _warnings


class _DropKnown(_logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: _logging.LogRecord) -> bool:
        message = record.getMessage()
        return not all(fragment in message for fragment in self.fragments)


_logging.getLogger("torchao").addFilter(_DropKnown("Failed to load", "/torchao/_C", ".so"))
_logging.getLogger("torch.utils._pytree").addFilter(
    _DropKnown("is an Enum subclass and is now natively supported by torch.compile"))
_warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                         category=FutureWarning)
