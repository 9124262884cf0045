"""Alignment to the FFHQ template and paste-back: exact geometry, untouched pixels away from the face."""

from __future__ import annotations

import math

import pytest
import torch

from taskbridge.data.io import read_image
from taskbridge.faces import align


def rotation(angle: float, scale: float, shift: tuple[float, float]) -> torch.Tensor:
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return torch.tensor([[c, -s, shift[0]], [s, c, shift[1]]])


def apply(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return torch.cat([points, torch.ones(len(points), 1)], dim=1) @ matrix.T


def test_similarity_recovers_a_known_transform() -> None:
    src = torch.tensor([[100.0, 120.0], [160.0, 118.0], [130.0, 150.0], [108.0, 180.0], [155.0, 181.0]])
    truth = rotation(0.3, 1.7, (12.0, -40.0))
    est = align.similarity_transform(src, apply(truth, src))
    assert torch.allclose(est, truth, atol=1e-4)
    assert torch.allclose(align.invert_affine(est) @ torch.cat([est, torch.tensor([[0.0, 0, 1]])]),
                          torch.eye(3)[:2], atol=1e-5)


def test_aligned_landmarks_land_on_the_template(shared_data) -> None:
    image = read_image(shared_data / "faces_fairface" / "images" / "fairface_0001.jpg")
    landmarks = align.template(448) * 0.55 + torch.tensor([95.0, 80.0])
    face, matrix = align.align_face(image, landmarks, 256)
    assert face.shape == (3, 256, 256)
    assert torch.allclose(apply(matrix, landmarks), align.template(256), atol=1e-3)


def test_a_point_moves_with_the_image() -> None:
    """Pixel-coordinate convention: a bright dot at (x, y) is found at M(x, y) after the warp."""
    image = torch.zeros(3, 200, 300)
    image[:, 80, 140] = 1.0
    matrix = rotation(0.2, 1.3, (-20.0, 10.0))
    out = align.warp(image, matrix, (260, 320))
    y, x = divmod(int(out[0].argmax()), out.shape[-1])
    expect = apply(matrix, torch.tensor([[140.0, 80.0]]))[0]
    assert abs(x - float(expect[0])) <= 1 and abs(y - float(expect[1])) <= 1


def test_paste_back_leaves_pixels_outside_the_mask_untouched(shared_data) -> None:
    image = read_image(shared_data / "faces_fairface" / "images" / "fairface_0002.jpg")
    canvas = torch.nn.functional.pad(image, (100, 100, 60, 60))  # the face in a larger photo
    landmarks = align.template(448) * 0.5 + torch.tensor([210.0, 170.0])
    face, matrix = align.align_face(canvas, landmarks, 512)
    out, mask = align.paste_face(canvas, torch.rand_like(face), matrix)
    assert out.shape == canvas.shape
    assert torch.equal(out[:, mask[0] == 0], canvas[:, mask[0] == 0])
    assert (mask == 0).float().mean() > 0.5 and (mask > 0.99).any()
    # the unchanged face pasted back is (almost) the photo itself: only resampling differs
    same, _ = align.paste_face(canvas, face, matrix)
    assert (same - canvas).abs().mean() < 2e-3


@pytest.mark.parametrize("scale", [2])
def test_paste_back_at_a_larger_scale(scale: int) -> None:
    canvas = torch.zeros(3, 120 * scale, 160 * scale)
    landmarks = align.template(120) * 0.6 + torch.tensor([30.0, 20.0])
    matrix = align.similarity_transform(landmarks, align.template(64))
    out, mask = align.paste_face(canvas, torch.ones(3, 64, 64), matrix, scale=float(scale))
    ys, xs = torch.nonzero(mask[0] > 0.5, as_tuple=True)
    # the face covers the landmarks' neighbourhood, scaled
    centre = landmarks.mean(0) * scale
    assert abs(float(xs.float().mean()) - float(centre[0])) < 10 * scale
    assert abs(float(ys.float().mean()) - float(centre[1])) < 15 * scale
    assert out.max() <= 1.0


def test_small_crops_are_antialiased_and_still_aligned(shared_data) -> None:
    image = read_image(shared_data / "faces_fairface" / "images" / "fairface_0003.jpg")
    landmarks = align.template(448) * 0.8 + torch.tensor([40.0, 30.0])
    small, matrix = align.align_face(image, landmarks, 64)
    assert torch.allclose(apply(matrix, landmarks), align.template(64), atol=1e-3)
    # closer than a plain bilinear warp to the crop made at 512 and shrunk with antialiasing
    big, _ = align.align_face(image, landmarks, 512)
    ref = torch.nn.functional.interpolate(big[None], size=(64, 64), mode="bilinear", antialias=True)[0]
    direct = align.warp(image, matrix, (64, 64), tuple(c / 255 for c in align.BORDER_RGB))
    assert (small - ref).abs().mean() < 0.8 * (direct - ref).abs().mean()
