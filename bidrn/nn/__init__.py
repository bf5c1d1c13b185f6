"""Binarization primitives: quantizers, the binary layer, RPReLU and the Local Convolution Residual family."""
from bidrn.nn.layers import BinaryConv2d, BinaryConvTranspose2d, BinaryLayer, BinaryLinear, RPReLU
from bidrn.nn.quantizers import PiecewiseQuadraticSign, Quantizer, ScaledSignWeight, SteSign, sign

__all__ = [
    "BinaryConv2d", "BinaryConvTranspose2d", "BinaryLayer", "BinaryLinear", "RPReLU",
    "PiecewiseQuadraticSign", "Quantizer", "ScaledSignWeight", "SteSign", "sign",
]
