"""The rasterizer against images whose pixels follow from the pinhole model by hand."""
import torch

from bidrn.render import Camera, rasterize, render

CAMERA = Camera(focal=(100.0, 100.0), principal=(32.0, 24.0), height=48, width=64)


def square(z: float, half: float, colour: float = 1.0):
    """A camera-facing square of side 2*half at depth z (two triangles, counter-clockwise on screen)."""
    verts = torch.tensor([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]])
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    return verts, faces, torch.full((4, 3), colour)


def test_square_covers_the_pixels_its_projection_covers():
    # Side 0.2 m at 2 m with f = 100 px: 10 px wide, centred on the principal point (27..37 x 19..29).
    verts, faces, colours = square(2.0, 0.1)
    image = render(verts[None], faces, colours, CAMERA, supersample=1, ambient=1.0)
    alpha = image[0, ..., 3]
    assert alpha.sum() == 100
    assert alpha[19:29, 27:37].all()


def test_nearer_surface_wins_the_depth_test():
    far, faces, _ = square(3.0, 0.3)
    near, _, _ = square(2.0, 0.1)
    verts = torch.cat([far, near])[None]
    both = torch.cat([faces, faces + 4])
    ids = rasterize(torch.cat([verts[..., :2] / verts[..., 2:] * 100 + torch.tensor([32.0, 24.0]),
                               verts[..., 2:]], -1), both, 48, 64)
    assert set(ids[0, 24, 32:33].tolist()) <= {2, 3}  # the near square's triangles
    # The far square spans 22..42 px, the near one 27..37 px: column 24 sees only the far one.
    assert ids[0, 24, 24].item() in (0, 1)


def test_lambert_shading_of_a_surface_facing_the_light():
    verts, faces, colours = square(2.0, 0.1, colour=0.5)
    image = render(verts[None], faces, colours, CAMERA, light_dir=(0.0, 0.0, 1.0), ambient=0.2, supersample=1)
    # Normal facing the light head on: colour * (ambient + (1 - ambient) * 1) = colour.
    assert torch.allclose(image[0, 24, 32, :3], torch.full((3,), 0.5), atol=1e-5)
    oblique = render(verts[None], faces, colours, CAMERA, light_dir=(0.0, 1.0, 1.0), ambient=0.2, supersample=1)
    expected = 0.5 * (0.2 + 0.8 * 2 ** -0.5)
    assert torch.allclose(oblique[0, 24, 32, :3], torch.full((3,), expected), atol=1e-5)


def test_supersampling_gives_fractional_coverage_on_edges():
    # Side 0.21 m: 10.5 px, so the boundary columns are half covered.
    verts, faces, colours = square(2.0, 0.105)
    alpha = render(verts[None], faces, colours, CAMERA, supersample=4)[0, ..., 3]
    assert torch.isclose(alpha.sum(), torch.tensor(10.5 * 10.5), atol=1.0)
    assert 0.0 < alpha[24, 26].item() < 1.0


def test_batch_renders_each_mesh_independently():
    a, faces, colours = square(2.0, 0.1)
    b = a + torch.tensor([0.3, 0.0, 0.0])  # 15 px to the right
    image = render(torch.stack([a, b]), faces, colours, CAMERA, supersample=1)
    assert image[0, 24, 32, 3] == 1 and image[0, 24, 47, 3] == 0
    assert image[1, 24, 47, 3] == 1 and image[1, 24, 32, 3] == 0


def test_back_faces_are_culled_when_asked():
    verts, faces, colours = square(2.0, 0.1)
    flipped = faces.flip(-1)
    assert render(verts[None], flipped, colours, CAMERA, supersample=1)[..., 3].sum() == 0
    assert render(verts[None], flipped, colours, CAMERA, supersample=1, cull_backfaces=False)[..., 3].sum() == 100
