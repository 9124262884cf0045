"""Any timm or torchvision image classifier as a frozen `ClassificationTask`, created by name.

The backend is imported only when a model is created, so neither timm nor a particular torchvision
version is needed to import taskbridge. Inputs are RGB [0, 1]; the adapter resizes (optional,
bilinear, differentiable) and normalises with the model's own mean/std (timm's pretrained config,
ImageNet statistics for torchvision) so a translator never has to know them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from taskbridge.registry import TASKS
from taskbridge.tasks.base import ClassificationTask

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _build_timm(name: str, pretrained: bool, num_classes: int | None, kwargs: dict[str, Any]):
    try:
        import timm
    except ImportError as err:
        raise ImportError("source='timm' needs timm: pip install 'taskbridge[timm]'") from err
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    return model, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)), (tuple(size[-2:]) if size else None)


def _build_torchvision(name: str, pretrained: bool, num_classes: int | None, kwargs: dict[str, Any]):
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"'{name}' is not a torchvision classifier; see torchvision.models.list_models()")
    if pretrained:
        kwargs["weights"] = "DEFAULT"
    elif num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = torchvision.models.get_model(name, **kwargs)
    return model, IMAGENET_MEAN, IMAGENET_STD, None


class ClassifierAdapter(ClassificationTask):
    """A frozen image classifier from timm or torchvision; `raw` returns its logits."""

    def __init__(self, name: str, source: str = "auto", pretrained: bool = False, weights: str | None = None,
                 num_classes: int | None = None, class_names: list[str] | None = None,
                 input_size: int | tuple[int, int] | None = None, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, **model_kwargs: Any) -> None:
        super().__init__()
        if source == "auto":
            import torchvision

            source = "torchvision" if name in torchvision.models.list_models(module=torchvision.models) else "timm"
        if source == "timm":
            model, m, s, size = _build_timm(name, pretrained, num_classes, dict(model_kwargs))
        elif source == "torchvision":
            model, m, s, size = _build_torchvision(name, pretrained, num_classes, dict(model_kwargs))
        else:
            raise ValueError(f"source must be 'auto', 'timm' or 'torchvision', got '{source}'")
        if weights:
            from taskbridge import hub

            state = hub.load_state(weights)
            if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
                state = state["state_dict"]
            try:
                model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
            except RuntimeError as err:
                raise RuntimeError(f"{weights}: does not fit {source} model '{name}' ({err})") from err
        self.model = model
        self.source, self.arch = source, name
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else (input_size or size)
        self.register_buffer("mean", torch.tensor(mean or m, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or s, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        n = self._num_outputs()
        if class_names is not None and len(class_names) != n:
            raise ValueError(f"class_names has {len(class_names)} entries but '{name}' has {n} outputs")
        self.class_names = list(class_names) if class_names else self._default_names(n)
        self.freeze()

    def _num_outputs(self) -> int:
        with torch.no_grad():
            size = self.input_size or (64, 64)
            return int(self.model.eval()(torch.zeros(1, 3, *size)).shape[1])

    def _default_names(self, n: int) -> list[str]:
        if self.source == "torchvision" and n == 1000:
            try:
                import torchvision

                return list(torchvision.models.get_model_weights(self.arch).DEFAULT.meta["categories"])
            except (ValueError, KeyError, AttributeError):
                pass
        return [f"class_{i}" for i in range(n)]

    def raw(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W] in [0, 1], got {tuple(images.shape)}")
        if self.input_size and tuple(images.shape[-2:]) != tuple(self.input_size):
            images = F.interpolate(images, size=self.input_size, mode="bilinear", align_corners=False)
        return self.model((images - self.mean) / self.std)


@TASKS.register("classifier")
def classifier(name: str, source: str = "auto", pretrained: bool = False, weights: str | None = None,
               num_classes: int | None = None, class_names: list[str] | None = None,
               input_size: int | None = None, **model_kwargs: Any) -> ClassifierAdapter:
    """A timm or torchvision classifier by name (e.g. name=resnet18); weights from the user or pretrained=True."""
    return ClassifierAdapter(name, source, pretrained, weights, num_classes, class_names, input_size, **model_kwargs)
