"""Mobile export of BiDRN: the bidrn:: binary-layer ops (:mod:`mobile_export.ops`), their C++ ExecuTorch
kernels (``mobile_export/kernels``, loaded by :mod:`mobile_export.kernel_library`) and benchmarks."""
