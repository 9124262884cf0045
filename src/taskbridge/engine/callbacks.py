"""The engine's own training callbacks: the scalar log, image grids, and validation with best-checkpoint selection.

The trainer runs, after every step: the method's callbacks (`Method.callbacks()`), then these in
this order, then the periodic checkpoint. Everything here depends only on the step number (never on
where this process started), so an interrupted-and-resumed run makes the same RNG draws.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from taskbridge.callbacks import Callback
from taskbridge.engine.seed import isolated_rng

Validator = Callable[[nn.Module | None, int], Mapping[str, float]]


class ScalarLog(Callback):
    """Losses, learning rates and whatever earlier callbacks added, on the steps `run.log_due` names."""

    name = "log"

    def on_step_end(self, run: Any, batch: Any, outputs: Mapping[str, Any]) -> None:
        step = run.step
        if run.log_due or run.pending_scalars:
            values = {**dict(outputs), **run.pending_scalars}
            for g, o in run.optimizers.items():
                values[f"lr/{g}"] = o.param_groups[0]["lr"]
            values["epoch"] = step / run.steps_per_epoch
            run.last_metrics.update(run.logger.scalars(step, values, kind="train"))
        else:
            run.last_metrics.update({k: float(v.detach().float()) for k, v in outputs.items()
                                     if k.startswith("loss/") and isinstance(v, Tensor) and v.numel() == 1})
        run.pending_scalars.clear()


class ImageGrids(Callback):
    """`method.visuals(batch)` as image grids (TensorBoard + PNG) every `every` steps and at step 1."""

    name = "images"

    def __init__(self, every: int) -> None:
        self.every = int(every)

    def on_step_end(self, run: Any, batch: Any, outputs: Mapping[str, Any]) -> None:
        if not self.every or not (run.step % self.every == 0 or run.step == 1):
            return
        run.method.eval()
        with torch.no_grad(), isolated_rng(run.device):
            vis = run.method.visuals(batch)
        run.method.train()
        if vis:
            run.log_images(vis)


class Validation(Callback):
    """Scores the method as an inference model on the validation split; keeps `best` by `metric`/`mode`.

    Runs every `every` steps (0: never in between) and after the last step of the run; with `at_start`
    also before the first step of a fresh run, so that a training that only makes the network worse
    on validation selects the network as built (an honest "training added nothing").
    """

    name = "validation"

    def __init__(self, validator: Validator, every: int, metric: str | None, mode: str, split: str,
                 model_factory: Callable[[nn.Module], nn.Module], at_start: bool = False) -> None:
        self.validator, self.every, self.at_start = validator, int(every), at_start
        self.metric, self.mode, self.split = metric, mode, split
        self.model_factory = model_factory
        self.best_value: float | None = None
        self.best_step: int | None = None  # when `best_value` was reached (None after resuming an older run)

    def on_fit_start(self, run: Any) -> None:
        if self.at_start and run.step == 0:  # a resumed run validated its start already
            self._validate_and_keep(run, 0)

    def on_step_end(self, run: Any, batch: Any, outputs: Mapping[str, Any]) -> None:
        step = run.step
        if (self.every and step % self.every == 0) or step >= run.total_steps:
            self._validate_and_keep(run, step)

    def _validate_and_keep(self, run: Any, step: int) -> None:
        if self.validate(run, step):
            run.save(run.BEST, selected_by={"split": self.split, "metric": self.metric, "mode": self.mode,
                                             "value": self.best_value, "step": step})

    def validate(self, run: Any, step: int) -> bool:
        """Log the validation metrics; True when `metric` improved on the best so far."""
        run.method.eval()
        probe = getattr(run.method, "validation_probe", None)  # the method's own statistics (VaT: its gate)
        with torch.no_grad(), isolated_rng(run.device), (probe() if probe else contextlib.nullcontext({})) as probed:
            metrics = {k: float(v) for k, v in dict(self.validator(self.model_factory(run.method), step)).items()}
        metrics.update(probed)
        run.method.train()
        run.log_scalars({f"val/{k}": v for k, v in metrics.items()}, kind="val")
        run.last_metrics.update({f"val/{k}": v for k, v in metrics.items()})
        if self.metric is None:
            self._announce(step, metrics)
            return False
        if self.metric not in metrics:
            raise KeyError(f"val.metric '{self.metric}' is not among the validation metrics: {', '.join(metrics)}")
        value = metrics[self.metric]
        better = math.isfinite(value) and (
            self.best_value is None or (value > self.best_value if self.mode == "max" else value < self.best_value))
        if better:
            self.best_value, self.best_step = value, step
        self._announce(step, metrics)
        return better

    def _announce(self, step: int, metrics: Mapping[str, float]) -> None:
        """One console line per validation (`step 200  val mAP50 0.412 (best 0.415 @ 150)`), so a person
        watching a long run sees how it goes without opening TensorBoard; above the progress bar, not in it.
        Only rank 0 holds a `Validation`, so only it speaks."""
        import sys

        from tqdm import tqdm

        shown = [self.metric] if self.metric is not None else list(metrics)[:4]
        text = "  ".join(f"{k} {metrics[k]:.4g}" for k in shown)
        if self.metric is not None and self.best_value is not None:
            at = f" @ {self.best_step}" if self.best_step is not None else ""
            text += f" (best {self.best_value:.4g}{at})"
        tqdm.write(f"step {step}  val {text}", file=sys.stderr)
