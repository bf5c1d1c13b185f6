"""The project's renderer: a batched, vectorised triangle rasterizer in plain torch."""
from .rasterizer import Camera, benchmark, rasterize, render, vertex_normals

__all__ = ["Camera", "benchmark", "rasterize", "render", "vertex_normals"]
