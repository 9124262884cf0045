"""CLIP zero-shot classification through open_clip (optional dependency, imported on creation).

Class scores are `logit_scale * cos(image embedding, text embedding of "a photo of a {class}.")`
(text embeddings averaged over `templates`, computed once at construction, then frozen). Images
in RGB [0, 1] are resized (bilinear, differentiable) to the model's input size and normalised with
its own mean/std inside `raw`. Weights come from the user: `pretrained=` an open_clip tag (which
open_clip downloads) or a local checkpoint file; `model_cfg=` builds an arbitrary (e.g. tiny,
random) CLIP architecture for tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from taskbridge.registry import TASKS
from taskbridge.tasks.base import ClassificationTask

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _open_clip():
    try:
        import open_clip
    except ImportError as err:
        raise ImportError("clip-zero-shot needs open_clip: pip install 'taskbridge[clip]' (open-clip-torch)") from err
    return open_clip


class ClipZeroShot(ClassificationTask):
    """Frozen CLIP image tower scored against fixed text embeddings of the class prompts."""

    def __init__(self, class_names: Sequence[str], model_name: str = "ViT-B-32", pretrained: str | None = None,
                 templates: Sequence[str] = ("a photo of a {}.",), model_cfg: dict[str, Any] | None = None) -> None:
        super().__init__()
        if not class_names:
            raise ValueError("clip-zero-shot needs class_names (the prompts are built from them)")
        oc = _open_clip()
        if model_cfg is not None:
            from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

            cfg = dict(model_cfg)
            model = CLIP(cfg.pop("embed_dim"), CLIPVisionCfg(**cfg.pop("vision_cfg")), CLIPTextCfg(**cfg.pop("text_cfg")), **cfg)
            tokenizer = oc.tokenizer.SimpleTokenizer(context_length=model.context_length)
        else:
            model = oc.create_model(model_name, pretrained=pretrained)
            tokenizer = oc.get_tokenizer(model_name)
        model.eval()
        pcfg = getattr(model.visual, "preprocess_cfg", None) or {}
        size = getattr(model.visual, "image_size", 224)
        self.input_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self.register_buffer("mean", torch.tensor(pcfg.get("mean", OPENAI_MEAN)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pcfg.get("std", OPENAI_STD)).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            embs = []
            for name in class_names:
                t = model.encode_text(tokenizer([tpl.format(name) for tpl in templates]))
                t = F.normalize(t, dim=-1).mean(0)
                embs.append(F.normalize(t, dim=0))
        self.register_buffer("text_embeddings", torch.stack(embs), persistent=False)
        self.visual = model.visual
        self.register_buffer("logit_scale", model.logit_scale.detach().exp().clone(), persistent=False)
        self.class_names = list(class_names)
        self.model_name, self.pretrained, self.templates = model_name, pretrained, list(templates)
        self.freeze()

    def raw(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W] in [0, 1], got {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != self.input_size:
            images = F.interpolate(images, size=self.input_size, mode="bilinear", align_corners=False)
        feats = self.visual((images - self.mean) / self.std)
        if isinstance(feats, tuple):  # towers that also return tokens
            feats = feats[0]
        return self.logit_scale * F.normalize(feats, dim=-1) @ self.text_embeddings.t()


@TASKS.register("clip-zero-shot")
def clip_zero_shot(class_names: list[str], model_name: str = "ViT-B-32", pretrained: str | None = None,
                   templates: list[str] | None = None, model_cfg: dict[str, Any] | None = None) -> ClipZeroShot:
    """CLIP zero-shot classifier (open_clip); weights from the user via `pretrained` (tag or file)."""
    return ClipZeroShot(class_names, model_name, pretrained, templates or ("a photo of a {}.",), model_cfg)
