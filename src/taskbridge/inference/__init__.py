"""Inference: what a trained run applies to a photo, and the evaluation pipeline of stages.

`InferenceModel` (model.py) states what it owns (restorer, translator, working size) and runs a
trained method on photos of any size; `Pipeline` (stages.py) chains stages (a restorer, an
inference model) that each run once; `load_inference_model` / `build_pipeline` (load.py) build
them from a run folder and registry names. The training engine, `taskbridge evaluate`,
`taskbridge translate` and the fit report all use these, so a number means the same everywhere.
"""

from taskbridge.inference.load import PipelineError, build_pipeline, load_inference_model
from taskbridge.inference.model import InferenceModel
from taskbridge.inference.stages import Pipeline, RestorerStage

__all__ = ["InferenceModel", "Pipeline", "PipelineError", "RestorerStage", "build_pipeline", "load_inference_model"]
