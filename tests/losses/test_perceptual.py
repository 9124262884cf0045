"""Perceptual + Gram style loss: hand values, zero for identical images, gradcheck of the style term, layer maps."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from taskbridge.config import ConfigError
from taskbridge.losses.perceptual import (
    GFPGAN_LAYERS,
    PerceptualLoss,
    gram_matrix,
    perceptual_term,
    style_term,
)
from taskbridge.registry import LOSSES


class TinyFeatures(nn.Module):
    """Two conv + ReLU taps, called like a taskbridge feature network: net(images, names) -> list."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, stride=2, padding=1)

    def forward(self, images: Tensor, names: list[str]) -> list[Tensor]:
        f1 = torch.relu(self.c1(images))
        taps = {"relu1_1": f1, "relu2_1": torch.relu(self.c2(f1))}
        return [taps[n] for n in names]


def test_gram_matrix_is_normalised_by_chw() -> None:
    f = torch.arange(12.0).reshape(1, 2, 2, 3)
    flat = f.reshape(2, 6)
    assert torch.allclose(gram_matrix(f)[0], flat @ flat.T / 12)
    assert gram_matrix(torch.rand(3, 5, 4, 4)).shape == (3, 5, 5)


def test_terms_hand_values_and_weights() -> None:
    out = [torch.full((1, 2, 2, 2), 1.0), torch.full((1, 1, 1, 1), 3.0)]
    ref = [torch.zeros(1, 2, 2, 2), torch.full((1, 1, 1, 1), 1.0)]
    assert perceptual_term(out, ref, [0.1, 1.0]).item() == pytest.approx(0.1 * 1.0 + 1.0 * 2.0)
    assert perceptual_term(out, ref, [0.1, 1.0], "l2").item() == pytest.approx(0.1 * 1.0 + 1.0 * 4.0)
    # Gram of all-ones [2, 2x2] = 4 / 8 everywhere; of zeros 0; the 1x1 layer: 9 vs 1
    assert style_term(out, ref, [0.1, 1.0]).item() == pytest.approx(0.1 * 0.5 + 1.0 * 8.0)


def test_zero_for_identical_images_and_none_for_zero_weights() -> None:
    loss = PerceptualLoss(TinyFeatures(), {"relu1_1": 0.1, "relu2_1": 1.0}, perceptual_weight=1.0, style_weight=50.0)
    x = torch.rand(2, 3, 16, 16)
    percep, style = loss(x, x.clone())
    assert percep.item() == 0.0 and style.item() == 0.0
    y = torch.rand(2, 3, 16, 16, requires_grad=True)
    percep, style = loss(y, x)
    assert percep > 0 and style > 0
    (percep + style).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.features.parameters())  # frozen
    loss.train()
    assert not loss.features.training
    only_style = PerceptualLoss(TinyFeatures(), {"relu1_1": 1.0}, perceptual_weight=0.0, style_weight=1.0)
    assert only_style(y, x)[0] is None and only_style(y, x)[1] is not None
    assert PerceptualLoss(TinyFeatures(), {"relu1_1": 1.0}, style_weight=0.0)(y, x)[1] is None


def test_gradcheck_style_and_perceptual_terms() -> None:
    g = torch.Generator().manual_seed(0)
    ref = [torch.rand(1, 3, 3, 3, generator=g, dtype=torch.float64), torch.rand(1, 2, 2, 2, generator=g, dtype=torch.float64)]
    out = [(r + 0.3 * torch.rand(r.shape, generator=g, dtype=torch.float64)).requires_grad_() for r in ref]
    assert torch.autograd.gradcheck(lambda a, b: style_term([a, b], ref, [0.1, 1.0]), tuple(out))
    assert torch.autograd.gradcheck(lambda a, b: style_term([a, b], ref, [0.1, 1.0], "l2"), tuple(out))
    assert torch.autograd.gradcheck(lambda a: gram_matrix(a), (out[0],))
    assert torch.autograd.gradcheck(lambda a, b: perceptual_term([a, b], ref, [0.1, 1.0], "l2"), tuple(out))


def test_registry_and_layer_maps() -> None:
    loss = LOSSES.create("perceptual", features=TinyFeatures(), layer_weights={"relu2_1": 1.0})
    assert isinstance(loss, PerceptualLoss) and (loss.perceptual_weight, loss.style_weight) == (1.0, 50.0)
    # GFP-GAN's conv1_2, conv2_2, conv3_4, conv4_4, conv5_4 on the ReLU taps of each VGG
    assert list(GFPGAN_LAYERS["vgg19"]) == ["relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4"]
    assert list(GFPGAN_LAYERS["vgg16-shift-tolerant"].values()) == [0.1, 0.1, 1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="needs layer_weights"):
        PerceptualLoss(TinyFeatures())
    with pytest.raises(ConfigError, match="no GFP-GAN layer map"):
        PerceptualLoss({"type": "yolov5n-backbone"})
    with pytest.raises(TypeError, match="criterion"):
        LOSSES.create("perceptual", features=TinyFeatures(), layer_weights={"relu1_1": 1.0}, criterion="fro")


def test_default_offline_network_reaches_the_mapped_layers() -> None:
    loss = PerceptualLoss()  # vgg16-shift-tolerant from the stlpips wheel, built up to relu5_3
    assert loss.layer_weights == GFPGAN_LAYERS["vgg16-shift-tolerant"]
    x = torch.rand(1, 3, 32, 32)
    percep, style = loss(x, x)
    assert percep.item() == 0.0 and style.item() == 0.0
