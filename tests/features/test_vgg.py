"""Feature networks: the offline shift-tolerant VGG-16 loads strictly from its wheel and stays frozen; VGG-19's
torchvision weights are checked against the published hash prefix and pinned on first use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from taskbridge.features.vgg import VGG19, FeatureNet, vgg_layers
from taskbridge.hub import ChecksumError, WeightsNotFoundError
from taskbridge.registry import FEATURES


def test_shift_tolerant_vgg16_taps_and_frozen() -> None:
    net = FEATURES.create("vgg16-shift-tolerant")
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    f11, f21, f31, f41 = net(x, ["relu1_1", "relu2_1", "relu3_1", "relu4_1"])
    assert [t.shape[1:] for t in (f11, f21, f31, f41)] == [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8)]
    assert all(not p.requires_grad for p in net.parameters()) and not net.train().training
    assert min(t.min() for t in (f11, f41)) >= 0  # ReLU outputs
    f41.sum().backward()  # gradients flow to the image, not to the frozen weights
    assert x.grad is not None and x.grad.abs().sum() > 0
    # a tapped ReLU is not overwritten by a later in-place one
    (again,) = net(x.detach(), ["relu1_1"])
    assert torch.allclose(again, f11.detach())
    with pytest.raises(ValueError, match="no layer \\['relu9_9'\\]"):
        net(x, ["relu9_9"])


def test_vgg19_weights_missing_say_what_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKBRIDGE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TASKBRIDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("taskbridge.hub._download", lambda *a: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(WeightsNotFoundError, match="vgg19-dcbb9e9d.pth.*") as err:
        FEATURES.create("vgg19")
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in str(err.value)


def test_vgg19_refuses_a_file_without_the_published_hash_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layers, _ = vgg_layers(VGG19, "relu4_1")
    torch.save({f"features.{k}": v for k, v in layers.state_dict().items()}, tmp_path / "vgg19-dcbb9e9d.pth")
    monkeypatch.setenv("TASKBRIDGE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TASKBRIDGE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ChecksumError, match="does not start with the published dcbb9e9d"):
        FEATURES.create("vgg19")


def test_feature_net_stops_at_the_deepest_tap() -> None:
    layers, taps = vgg_layers(VGG19, "relu4_1")
    assert list(taps)[:3] == ["relu1_1", "relu1_2", "relu2_1"] and taps["relu4_1"] == len(layers) - 1
    calls = []
    net = FeatureNet(layers, taps, (0, 0, 0), (1, 1, 1), "t")
    for i, layer in enumerate(net.layers):
        layer.register_forward_hook(lambda *_, i=i: calls.append(i))
    net(torch.rand(1, 3, 16, 16), ["relu1_2"])
    assert max(calls) == taps["relu1_2"]


def test_yolov5n_backbone_taps_equal_the_detectors_own_features() -> None:
    from taskbridge.registry import TASKS

    net = FEATURES.create("yolov5n-backbone")
    task = TASKS.create("yolov5n")
    x = torch.rand(1, 3, 64, 64)
    p3, p4 = net(x, ["p3", "p4"])
    feats, y = [], x
    with torch.no_grad():
        for layer in task.model.model[:7]:  # the detector's backbone is a plain chain up to here
            y = layer(y)
            feats.append(y)
    assert torch.allclose(p3, feats[4], atol=1e-5) and torch.allclose(p4, feats[6], atol=1e-5)
    assert p4.shape[-1] == 64 // 16 and all(not p.requires_grad for p in net.parameters())


def test_vgg19_layout_is_torchvisions() -> None:
    """Our VGG-19 up to relu4_1 takes torchvision's `features.N` weights strictly and computes the same."""
    import torchvision

    from taskbridge.features.vgg import IMAGENET_MEAN, IMAGENET_STD, _load_layers

    tv = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"]).eval()
    layers, taps = vgg_layers(VGG19, "relu4_1")
    net = FeatureNet(layers, taps, IMAGENET_MEAN, IMAGENET_STD, "vgg19")
    _load_layers(net, {f"features.{k}": v for k, v in tv.state_dict().items()}, {"features.": ""}, "test")
    x = torch.rand(1, 3, 32, 32)
    norm = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        assert torch.allclose(net(x, ["relu4_1"])[0], tv[:21](norm), atol=1e-5)
