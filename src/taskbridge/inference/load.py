"""Build inference models from run folders and pipelines from what the user names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from taskbridge import checkpoint as ckpt
from taskbridge.inference.model import InferenceModel
from taskbridge.inference.stages import Pipeline, RestorerStage
from taskbridge.run_config import InferenceConfig


class PipelineError(ValueError):
    """Stages that cannot be combined; the message says which and what to do."""


def build_method(config: Mapping[str, Any]) -> nn.Module:
    """The method of a recipe (or of a checkpoint's recorded recipe), built through the registry; data paths
    in its method section resolve against the recipe's `data.root` when it sets one."""
    from taskbridge.config import build
    from taskbridge.data.root import recipe_data_root
    from taskbridge.registry import METHODS

    if not isinstance(config.get("method"), Mapping):
        raise ckpt.CheckpointError("the recipe has no 'method' section")
    data = config.get("data")
    with recipe_data_root(data.get("root") if isinstance(data, Mapping) else None):
        return build(METHODS, config["method"], "method")


def load_inference_model(path: str | os.PathLike[str], device: str | torch.device = "cpu", prefer: str = "best",
                         working_size: int | None = -1, residual: bool | None = None) -> InferenceModel:
    """Rebuild a trained run's method from its checkpoint and wrap it as an `InferenceModel`.

    Frozen parts (restorer, task model) come back from the weights hub through the method's own
    constructor; only trainable state is read from the checkpoint (safetensors, nothing unpickled).
    `prefer` chooses `best` or `last` for a run folder. The working size and residual mode are the
    run's own (`inference:` in its recipe) unless given: `working_size=None` or 0 = native resolution,
    -1 = the run's.
    """
    directory = ckpt.resolve_checkpoint(path, prefer=prefer)
    meta = ckpt.read_meta(directory)
    config = meta.get("config") or {}
    method = build_method(config)
    model_state, _ = ckpt.load_model_state(directory)
    ckpt.load_trainable_state(method, model_state, str(directory))
    settings = InferenceConfig.model_validate(config.get("inference") or {})  # the recipe's, with its defaults
    if working_size != -1:
        settings.working_size = working_size or None
    if residual is not None:
        settings.residual = residual
    info = {k: meta.get(k) for k in ("step", "epoch", "name", "selected_by")}
    info.update(path=str(directory), method=(config.get("method") or {}).get("type"))
    return InferenceModel(method, settings.working_size, settings.residual, info).to(device).eval()


def build_pipeline(restorer: str | nn.Module | None = None, model: str | InferenceModel | None = None,
                   device: str | torch.device = "cpu", **model_options: Any) -> Pipeline | None:
    """Restorer (registry name or module) then inference model (run folder or model); None if neither.

    A model that owns a restorer already applies it: naming another one in front is refused, so no
    photo is ever restored twice.
    """
    stages: list[nn.Module] = []
    if isinstance(model, (str, os.PathLike)):
        model = load_inference_model(model, device=device, **model_options)
    if restorer is not None:
        if model is not None and model.restorer is not None:
            owned = model.owns()["restorer"]
            given = restorer if isinstance(restorer, str) else type(restorer).__name__
            raise PipelineError(
                f"--restorer {given}: the translator {model.meta.get('path', '')} already applies its own "
                f"restorer ({owned}) inside; drop --restorer (its restorer-alone row is reported with the baseline)")
        if isinstance(restorer, str):
            from taskbridge.registry import RESTORERS

            name, restorer = restorer, RESTORERS.create(restorer)
            stages.append(RestorerStage(restorer, name))
        else:
            stages.append(RestorerStage(restorer))
    if model is not None:
        stages.append(model)
    return Pipeline(stages).to(device).eval() if stages else None
