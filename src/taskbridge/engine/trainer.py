"""One training loop for every method (VaT, CycleGAN, CUT, ...): the engine knows no method details.

Per step: `out = method.training_step(batch, step)`; then for each optimizer group in order:
zero the gradients of all groups, back-propagate `out["loss/<group>"]`, clip, step that group's
optimizer and (per-iteration) scheduler. Around it: AMP on CUDA, NaN/inf guard, logging,
validation with best-checkpoint selection on the validation split, periodic atomic checkpoints
and exact resume (model, optimizers, schedulers, scaler, every RNG and the data position).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from taskbridge import checkpoint as ckpt
from taskbridge.config import ConfigError
from taskbridge.engine.logging import RunLogger
from taskbridge.engine.optim import build_optimizer, build_scheduler, merge_group_spec
from taskbridge.engine.sampler import EpochBatchSampler
from taskbridge.engine.seed import capture_rng, derive_seed, restore_rng, seed_everything, worker_init_fn

#: top-level recipe keys the engine understands; anything else is a typo worth an error
RECIPE_KEYS = ("name", "seed", "output_dir", "data", "method", "optim", "schedule", "train", "val", "inference", "notes")

Validator = Callable[[nn.Module, int], Mapping[str, float]]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN/inf; the message names the step, the key and the saved last-good checkpoint."""


@dataclass
class TrainSpec:
    """The `train:` section of a recipe."""

    steps: int | None = None  # total optimisation steps (one batch each)
    epochs: int | None = None  # alternative to steps: steps = epochs * batches per epoch
    log_every: int = 50
    ckpt_every: int = 1000  # 0: only at the end
    val_every: int = 0  # 0: only at the end (when a validator exists)
    image_every: int = 500  # 0: never
    amp: bool | str = False  # false | true (bf16 if supported else fp16) | bf16 | fp16; CUDA only
    grad_clip: float | None = None  # max L2 norm per group
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    on_nan: str = "raise"  # raise (after saving last-good) | skip (drop the step's updates)
    max_nan_skips: int = 10  # consecutive skipped steps before giving up
    keep_last: int = 3  # periodic step_* checkpoints kept (0 = all)
    tensorboard: bool = True
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)
    progress: bool = True

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TrainSpec:
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"train: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
        spec = cls(**d)
        if spec.on_nan not in ("raise", "skip"):
            raise ConfigError(f"train.on_nan must be 'raise' or 'skip', got {spec.on_nan!r}")
        if spec.steps is None and spec.epochs is None:
            raise ConfigError("train: set 'steps' or 'epochs'")
        return spec


@dataclass
class SelectionSpec:
    """How validation picks the `best` checkpoint (recorded in its meta.json)."""

    metric: str | None = None
    mode: str = "max"
    split: str = "val"


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available; use device=cpu")
    return dev


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


class Trainer:
    """Builds optimizers/schedulers for a method and runs the loop; see module docstring.

    `config` is the whole recipe as a plain dict. `method`, `train_data` (+ `collate_fn`) and
    `validator` may be given directly (tests, notebooks); otherwise they are built from the recipe.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        method: nn.Module | None = None,
        train_data: Dataset | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        validator: Validator | None = None,
        output_dir: str | Path | None = None,
        device: str | None = None,
    ) -> None:
        self.config = _plain(config)
        unknown = sorted(set(self.config) - set(RECIPE_KEYS))
        if unknown:
            raise ConfigError(f"recipe: unknown top-level key(s) {', '.join(unknown)}; accepted: {', '.join(RECIPE_KEYS)}")
        self.name = str(self.config.get("name") or "run")
        self.seed = int(self.config.get("seed", 0))
        self.spec = TrainSpec.from_dict(self.config.get("train"))
        if device is not None:
            self.spec.device = device
        self.device = resolve_device(self.spec.device)
        self.output_dir = Path(output_dir or self.config.get("output_dir") or Path("runs") / self.name)
        self.ckpt_root = self.output_dir / "checkpoints"
        self.config["output_dir"] = str(self.output_dir)  # what checkpoints record is what ran
        self.config.setdefault("train", {})["device"] = str(self.spec.device)

        seed_everything(self.seed, self.spec.deterministic)
        if method is None:
            from taskbridge.inference.load import build_method

            method = build_method(self.config)
        self.method = method.to(self.device)
        self.groups = self._groups()

        data_cfg = dict(self.config.get("data") or {})
        self.data_plan = None
        if train_data is None:
            from taskbridge.engine.data import plan_data

            self.data_plan = plan_data(data_cfg, seed=self.seed, output_dir=self.output_dir)
            train_data, collate_fn = self.data_plan.train, self.data_plan.collate
        self.train_data = train_data
        self.collate_fn = collate_fn
        self.batch_size = int(data_cfg.get("batch_size", 1))
        self.num_workers = int(data_cfg.get("num_workers", 0))
        self.sampler = EpochBatchSampler(len(train_data), self.batch_size, shuffle=bool(data_cfg.get("shuffle", True)), seed=self.seed)
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        self.total_steps = int(self.spec.steps if self.spec.steps is not None else self.spec.epochs * self.steps_per_epoch)

        self.validator, self.selection = validator, SelectionSpec()
        val_cfg = dict(self.config.get("val") or {})
        self.selection.metric = val_cfg.pop("metric", None)
        self.selection.mode = str(val_cfg.pop("mode", "max"))
        self.selection.split = str(val_cfg.pop("split_name", "val"))
        if self.selection.mode not in ("max", "min"):
            raise ConfigError(f"val.mode must be 'max' or 'min', got {self.selection.mode!r}")
        if self.validator is None and val_cfg.get("type", "none") not in (None, "none"):
            from taskbridge.engine.validation import build_validator

            if self.data_plan is None:
                raise ConfigError("val: a recipe validator needs the data built from the recipe; pass validator= instead")
            self.validator = build_validator(val_cfg, data_cfg, self.data_plan, seed=self.seed, device=self.device)
        self.best_value: float | None = None

        self._build_optim()
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.nan_skips = 0
        self.last_metrics: dict[str, float] = {}
        self._stop_requested = False
        self.logger: RunLogger | None = None

    # ------------------------------------------------------------------ construction

    def _groups(self) -> dict[str, list[nn.Parameter]]:
        groups = dict(self.method.optim_groups())
        if not groups:
            raise ConfigError("method.optim_groups() returned no groups")
        seen: dict[int, str] = {}
        for g, params in groups.items():
            params = list(params)
            groups[g] = params
            for p in params:
                if id(p) in seen:
                    raise ConfigError(f"a parameter is in optimizer groups '{seen[id(p)]}' and '{g}'")
                seen[id(p)] = g
        return groups

    def _build_optim(self) -> None:
        optim_cfg = dict(self.config.get("optim") or {})
        unknown = sorted(set(optim_cfg) - set(self.groups))
        if unknown:
            raise ConfigError(f"optim: no method group(s) {', '.join(unknown)}; the method has {', '.join(self.groups)}")
        defaults = self.method.default_optim() if hasattr(self.method, "default_optim") else {}
        run_sched = dict(self.config.get("schedule") or {})
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.intervals: dict[str, str] = {}
        self.schedule_types: dict[str, str] = {}
        for g, params in self.groups.items():
            spec = merge_group_spec(defaults.get(g), optim_cfg.get(g))
            sched_spec = dict(spec.pop("schedule", None) or run_sched)
            self.optimizers[g] = build_optimizer(params, spec, where=f"optim.{g}")
            interval = str(sched_spec.get("interval", "step"))
            total = self.total_steps if interval == "step" else max(1, math.ceil(self.total_steps / self.steps_per_epoch))
            self.schedule_types[g] = str(sched_spec.get("type", "constant"))
            self.schedulers[g], self.intervals[g] = build_scheduler(self.optimizers[g], sched_spec, total, where=f"schedule ({g})")

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.spec.amp
        if amp in (False, None, "false", "no", "off"):
            return None
        if self.device.type != "cuda":
            warnings.warn(f"train.amp={amp!r} ignored on {self.device.type}: AMP is used on CUDA only", stacklevel=2)
            return None
        if amp in (True, "true", "auto"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
        if amp not in table:
            raise ConfigError(f"train.amp must be false, true, bf16 or fp16, got {amp!r}")
        return table[amp]

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """Everything besides weights that exact resume needs.

        A method with state outside its state dict (e.g. CycleGAN's image pool and its private
        `random.Random`) can expose it through `training_state()` / `load_training_state(state)`
        (nested dicts/lists/tuples of tensors and plain values); it is stored here too.
        """
        out = {
            "optim": {g: o.state_dict() for g, o in self.optimizers.items()},
            "sched": {g: s.state_dict() for g, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng(),
        }
        if callable(getattr(self.method, "training_state", None)):
            out["method"] = self.method.training_state()
        return out

    def meta(self, **extra: Any) -> dict[str, Any]:
        return {
            "name": self.name,
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "total_steps": self.total_steps,
            "seed": self.seed,
            "config": self.config,
            "data": {
                "position": self.step,
                "steps_per_epoch": self.steps_per_epoch,
                "train_size": len(self.train_data),
                "batch_size": self.batch_size,
            },
            "metrics": self.last_metrics,
            "best": {"metric": self.selection.metric, "mode": self.selection.mode, "value": self.best_value},
            "nan_skips": self.nan_skips,
            "torch": torch.__version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **extra,
        }

    def save(self, name: str | None = None, state: dict[str, Any] | None = None, **extra: Any) -> Path:
        """Write `checkpoints/<name>` (default `step_XXXXXXX`, which also moves the LAST pointer)."""
        periodic = name is None
        name = name or ckpt.step_dir_name(self.step)
        path = ckpt.save_checkpoint(self.ckpt_root / name, self.method, state or self.state(), self.meta(**extra))
        if periodic:
            ckpt.write_last_pointer(self.ckpt_root, name)
            ckpt.prune_checkpoints(self.ckpt_root, self.spec.keep_last)
        return path

    def load(self, path: str | Path) -> Path:
        """Restore everything from a checkpoint (run dir, checkpoints dir or step dir)."""
        directory = ckpt.resolve_checkpoint(path, prefer="last")
        model, state, meta = ckpt.load_checkpoint(directory)
        ckpt.load_trainable_state(self.method, model, str(directory))
        data = meta.get("data", {})
        if data.get("steps_per_epoch") not in (None, self.steps_per_epoch) or data.get("train_size") not in (None, len(self.train_data)):
            warnings.warn(
                f"{directory}: the training data changed since this checkpoint (train size "
                f"{data.get('train_size')} -> {len(self.train_data)}, batches/epoch {data.get('steps_per_epoch')} -> "
                f"{self.steps_per_epoch}); the data order will not match the original run",
                stacklevel=2,
            )
        if set(state["optim"]) != set(self.optimizers):
            raise ckpt.CheckpointError(f"{directory}: optimizer groups {sorted(state['optim'])} != method groups {sorted(self.optimizers)}")
        for g, o in self.optimizers.items():
            o.load_state_dict(state["optim"][g])
            self.schedulers[g].load_state_dict(state["sched"][g])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if "method" in state and callable(getattr(self.method, "load_training_state", None)):
            self.method.load_training_state(state["method"])
        self.step = int(meta["step"])
        self.nan_skips = int(meta.get("nan_skips", 0))
        self.last_metrics = dict(meta.get("metrics") or {})
        best = meta.get("best") or {}
        self.best_value = best.get("value")
        restore_rng(state["rng"])
        return directory

    # ------------------------------------------------------------------ loop

    def summary(self) -> str:
        lines = [f"run '{self.name}' -> {self.output_dir}", f"device {self.device}, amp {self.amp_dtype}, seed {self.seed}"]
        for g, params in self.groups.items():
            n = sum(p.numel() for p in params if p.requires_grad)
            o = self.optimizers[g]
            lines.append(f"group {g}: {n:,} trainable params, {type(o).__name__} lr {o.param_groups[0]['lr']:g}, "
                         f"schedule {self.schedule_types[g]} per {self.intervals[g]}")
        frozen = sum(p.numel() for p in self.method.parameters() if not p.requires_grad)
        lines.append(f"frozen params: {frozen:,}")
        sizes = getattr(self.train_data, "sizes", None)
        size_txt = f" ({sizes})" if sizes else ""
        lines.append(f"train data: {len(self.train_data)} items{size_txt}, batch {self.batch_size}, "
                     f"{self.steps_per_epoch} batches/epoch, {self.total_steps} steps")
        lines.append(f"validation: {'none' if self.validator is None else self.selection.metric or 'metrics only'}")
        return "\n".join(lines)

    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        self.sampler.set_epoch(epoch, start_batch)
        if hasattr(self.train_data, "set_epoch"):
            self.train_data.set_epoch(epoch)
        return DataLoader(
            self.train_data,
            batch_sampler=self.sampler,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            worker_init_fn=worker_init_fn,
            # own generator: worker seeds never draw from (and so never shift) the global torch RNG
            generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch, 0xD7)),
            pin_memory=self.device.type == "cuda",
        )

    def fit(self, resume: str | Path | None = None, until: int | None = None) -> dict[str, Any]:
        """Train to `train.steps` (or stop after step `until`, saving a checkpoint there).

        `resume`: a checkpoint path, or "auto" (the run's LAST checkpoint if there is one).
        """
        if resume == "auto":
            try:
                resume = ckpt.resolve_checkpoint(self.output_dir, prefer="last")
            except ckpt.CheckpointError:
                resume = None
        resumed_from = self.load(resume) if resume is not None else None
        stop_at = self.total_steps if until is None else min(int(until), self.total_steps)
        self.logger = RunLogger(self.output_dir, tensorboard=self.spec.tensorboard)
        if resumed_from is not None:
            self.logger.text("resume", f"resumed from {resumed_from} at step {self.step}", self.step)
        old_handler = self._install_sigint()
        bar = None
        try:
            if self.spec.progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=stop_at, initial=self.step, desc=self.name, unit="step", dynamic_ncols=True)
            self.method.train()
            while self.step < stop_at and not self._stop_requested:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                for batch in self._loader(epoch, start):
                    self._one_step(batch)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix({k.removeprefix("loss/"): f"{v:.4g}" for k, v in self._bar_values().items()}, refresh=False)
                    self._after_step(batch, stop=self.step >= stop_at, final=self.step >= self.total_steps)
                    if self.step >= stop_at or self._stop_requested:
                        break
            if self._stop_requested or (self.step >= stop_at and not self._saved_at_current_step()):
                self.save()
        finally:
            if bar is not None:
                bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            self.logger.close()
        return {
            "step": self.step,
            "output_dir": str(self.output_dir),
            "last": str(self.ckpt_root / ckpt.step_dir_name(self.step)),
            "best": str(self.ckpt_root / ckpt.BEST_DIR) if (self.ckpt_root / ckpt.BEST_DIR).is_dir() else None,
            "best_value": self.best_value,
            "metrics": self.last_metrics,
            "interrupted": self._stop_requested,
            "resumed_from": str(resumed_from) if resumed_from is not None else None,
        }

    def _install_sigint(self) -> Any:
        """First Ctrl-C: finish the current step, save, stop. Second: abort immediately."""
        try:
            previous = signal.getsignal(signal.SIGINT)

            def handler(signum: int, frame: Any) -> None:
                if self._stop_requested:
                    raise KeyboardInterrupt
                self._stop_requested = True
                warnings.warn("interrupt: saving a checkpoint after this step (Ctrl-C again to abort)", stacklevel=1)

            signal.signal(signal.SIGINT, handler)
            return previous
        except ValueError:  # not the main thread
            return None

    def _saved_at_current_step(self) -> bool:
        return (self.ckpt_root / ckpt.step_dir_name(self.step) / "meta.json").is_file()

    def _bar_values(self) -> dict[str, float]:
        out = getattr(self, "_out", {}) or {}
        return {k: float(v.detach().float()) for k, v in out.items()
                if k.startswith("loss/") and isinstance(v, Tensor) and v.numel() == 1}

    def _one_step(self, batch: Any) -> None:
        step = self.step
        rng_before = capture_rng()
        batch = _to_device(batch, self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out = self.method.training_step(batch, step)
        keys = [f"loss/{g}" for g in self.groups]
        missing = [k for k in keys if k not in out]
        if missing:
            raise KeyError(f"{type(self.method).__name__}.training_step returned no {', '.join(missing)} (keys: {', '.join(out)})")
        bad = [k for k, v in out.items() if k.startswith("loss/") and isinstance(v, Tensor) and not bool(torch.isfinite(v.detach()).all())]
        if bad:
            self._non_finite(step, bad, out, rng_before)
        else:
            self.nan_skips = 0
            self._update(out)
            self._out = out
        self.step = step + 1
        if self.step % self.steps_per_epoch == 0:
            for g, s in self.schedulers.items():
                if self.intervals[g] == "epoch":
                    s.step()

    def _update(self, out: dict[str, Any]) -> None:
        """Backward and optimizer step of every group, in the method's group order."""
        n = len(self.groups)
        for i, (g, params) in enumerate(self.groups.items()):
            for o in self.optimizers.values():
                o.zero_grad(set_to_none=True)
            loss = out[f"loss/{g}"]
            opt = self.optimizers[g]
            if loss.requires_grad:
                self.scaler.scale(loss.float()).backward(retain_graph=i < n - 1)
                if self.spec.grad_clip:
                    self.scaler.unscale_(opt)
                    norm = torch.nn.utils.clip_grad_norm_(params, float(self.spec.grad_clip))
                    out[f"grad_norm/{g}"] = norm
                self.scaler.step(opt)
            if self.intervals[g] == "step":
                self.schedulers[g].step()
        for o in self.optimizers.values():
            o.zero_grad(set_to_none=True)
        self.scaler.update()

    def _non_finite(self, step: int, bad: list[str], out: Mapping[str, Any], rng_before: dict[str, Any]) -> None:
        values = ", ".join(f"{k}={float(out[k].detach().float().mean()):g}" for k in bad)
        for o in self.optimizers.values():
            o.zero_grad(set_to_none=True)
        if self.spec.on_nan == "skip" and self.nan_skips < self.spec.max_nan_skips:
            self.nan_skips += 1
            warnings.warn(f"step {step}: non-finite loss ({values}); step skipped ({self.nan_skips} in a row)", stacklevel=2)
            self._out = {"nan_skipped": torch.tensor(1.0)}
            return
        state = self.state()
        state["rng"] = rng_before  # resuming from last-good replays this very step
        path = self.save(ckpt.LAST_GOOD_DIR, state=state, reason=f"non-finite {', '.join(bad)} at step {step}")
        raise NonFiniteLossError(
            f"step {step}: non-finite loss {values}. State before this step saved to {path}. "
            f"Lower the learning rate, enable train.grad_clip, or set train.on_nan=skip."
        )

    def _after_step(self, batch: Any, stop: bool, final: bool) -> None:
        """Log, draw, validate, checkpoint. Everything here depends only on the step number (never on
        where this process started), so an interrupted-and-resumed run sees the same RNG draws."""
        s = self.spec
        step = self.step
        if s.log_every and (step % s.log_every == 0 or stop or step == 1):
            values = dict(getattr(self, "_out", {}))
            for g, o in self.optimizers.items():
                values[f"lr/{g}"] = o.param_groups[0]["lr"]
            values["epoch"] = step / self.steps_per_epoch
            self.last_metrics.update(self.logger.scalars(step, values, kind="train"))
        elif hasattr(self, "_out"):
            self.last_metrics.update({k: float(v.detach().float()) for k, v in self._out.items()
                                      if k.startswith("loss/") and isinstance(v, Tensor) and v.numel() == 1})
        if s.image_every and (step % s.image_every == 0 or step == 1) and hasattr(self.method, "visuals"):
            self.method.eval()
            with torch.no_grad():
                vis = self.method.visuals(_to_device(batch, self.device))
            self.method.train()
            if vis:
                self.logger.images(step, vis)
        improved = False
        if self.validator is not None and ((s.val_every and step % s.val_every == 0) or final):
            improved = self._validate(step)
        periodic = s.ckpt_every and step % s.ckpt_every == 0
        if periodic or stop or self._stop_requested:
            self.save()
        if improved:
            self.save(ckpt.BEST_DIR, selected_by={
                "split": self.selection.split, "metric": self.selection.metric, "mode": self.selection.mode,
                "value": self.best_value, "step": step,
            })
        self._out = {}

    def _validate(self, step: int) -> bool:
        from taskbridge.inference import InferenceModel, Pipeline
        from taskbridge.inference.load import inference_settings

        self.method.eval()
        model = InferenceModel(self.method, **inference_settings(self.config)).eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in dict(self.validator(Pipeline([model]).eval(), step)).items()}
        self.method.train()
        self.logger.scalars(step, {f"val/{k}": v for k, v in metrics.items()}, kind="val")
        self.last_metrics.update({f"val/{k}": v for k, v in metrics.items()})
        key = self.selection.metric
        if key is None:
            return False
        if key not in metrics:
            raise KeyError(f"val.metric '{key}' is not among the validation metrics: {', '.join(metrics)}")
        value = metrics[key]
        if not math.isfinite(value):
            return False
        better = self.best_value is None or (value > self.best_value if self.selection.mode == "max" else value < self.best_value)
        if better:
            self.best_value = value
        return better


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    from taskbridge.config import to_dict

    return to_dict(cfg) if not isinstance(cfg, dict) else _deepcopy_plain(cfg)


def _deepcopy_plain(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy_plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_deepcopy_plain(v) for v in d]
    return d
