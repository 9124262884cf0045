"""One training loop for every method (VaT, CycleGAN, CUT, ...): the engine knows no method details.

Per step: `out = method.training_step(batch, step)`; then for each optimizer group in order: zero
the gradients of all groups, back-propagate `out["loss/<group>"]`, clip, step that group's
optimizer and (per-iteration) scheduler. Then the callbacks, in order: the method's own
(`Method.callbacks()`: EMA copies, statistics), the scalar log, image grids, validation with
best-checkpoint selection on the validation split (`engine.callbacks`); then the periodic atomic
checkpoint. Around it: AMP on CUDA (`engine.device`), a NaN/inf guard, and exact resume of model,
optimizers, schedulers, scaler, every RNG, the method's and the callbacks' state and the data
position (`engine.state`).
Under `torchrun` every rank runs this loop on its share of each global batch and the gradients of each
group are averaged over the ranks before its optimizer step (`engine.distributed`); rank 0 alone logs,
validates and writes checkpoints.
"""

from __future__ import annotations

import math
import signal
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from taskbridge import checkpoint as ckpt
from taskbridge.callbacks import Callback
from taskbridge.config import ConfigError
from taskbridge.data.unpaired import SKIP_LOG, EpochDataset, skipped_files
from taskbridge.engine import distributed
from taskbridge.engine import state as run_state
from taskbridge.engine.callbacks import ImageGrids, ScalarLog, Validation, Validator
from taskbridge.engine.device import amp_dtype, resolve_device, to_device
from taskbridge.engine.logging import RunLogger
from taskbridge.engine.optim import build_optimizer, build_scheduler, merge_group_spec, step_groups
from taskbridge.engine.sampler import EpochBatchSampler
from taskbridge.engine.seed import capture_rng, derive_seed, isolated_rng, seed_everything, worker_init_fn
from taskbridge.run_config import RunConfig

__all__ = ["NonFiniteLossError", "Trainer", "resolve_device"]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN/inf; the message names the step, the key and the saved last-good checkpoint."""


#: what a run writes into its folder; `--overwrite` removes these (and nothing else) before a fresh start
RUN_ARTIFACTS = ("checkpoints", "metrics.jsonl", "images", "tb", "report.json", "split_A.json", "split_pools.json",
                 SKIP_LOG, "report.html", "run_info.json")
#: recipe keys that may change when a run is resumed (how long, where and how it logs; not what it learns)
RESUMABLE_CHANGES = ("name", "notes", "output_dir", "train.steps", "train.epochs", "train.device", "train.progress",
                     "train.tensorboard", "train.log_every", "train.ckpt_every", "train.val_every", "train.val_at_start",
                     "train.image_every", "train.keep_last", "data.num_workers")


class _Plain(EpochDataset):
    """A dataset handed in without epoch handling (the trainer tells every training set its epoch)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.base[index]


class Trainer:
    """Builds optimizers/schedulers/callbacks for a method and runs the loop; see the module docstring.

    `config` is the recipe (a `RunConfig` or a plain mapping, validated here). `method`,
    `train_data` (+ `collate_fn`) and `validator` may be given directly (tests, notebooks); otherwise
    they are built from the recipe. `Trainer.from_recipe(path, overrides)` loads a YAML recipe.
    """

    BEST = ckpt.BEST_DIR

    def __init__(
        self,
        config: RunConfig | Mapping[str, Any],
        method: nn.Module | None = None,
        train_data: Dataset | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        validator: Validator | None = None,
        output_dir: str | Path | None = None,
        device: str | None = None,
        overwrite: bool = False,
    ) -> None:
        self.cfg = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
        if device is not None:
            self.cfg.train.device = device
        self.spec = self.cfg.train
        self.name, self.seed = self.cfg.name, self.cfg.seed
        self.device = resolve_device(self.spec.device)
        self.dist = distributed.from_environment(self.device)
        self.device = distributed.rank_device(self.device, self.dist)
        self.output_dir = Path(output_dir or self.cfg.output_dir or Path("runs") / self.name)
        self.cfg.output_dir = str(self.output_dir)  # what checkpoints record is what ran
        self.ckpt_root = self.output_dir / "checkpoints"
        if overwrite:  # before the data plan, which would otherwise reuse the old run's split files
            with self.dist.main_first():
                if self.dist.is_main:
                    self._remove_previous_run()

        seed_everything(self.seed, self.spec.deterministic)
        if method is None:
            from taskbridge.inference.load import build_method

            method = build_method(self.cfg.to_dict())
        self.method = distributed.sync_batchnorm(method, self.device, self.dist).to(self.device)
        distributed.broadcast_module(self.method, self.dist)
        self.groups = self._groups()

        self.data_plan = None
        if train_data is None:
            if self.cfg.data is None:
                raise ConfigError("recipe: no 'data' section (or pass train_data=)")
            from taskbridge.engine.data import plan_data

            with self.dist.main_first():  # rank 0 writes the split files the others then read
                self.data_plan = plan_data(self.cfg.data, seed=self.seed, output_dir=self.output_dir)
            train_data, collate_fn = self.data_plan.train, self.data_plan.collate
        self.train_data = train_data if isinstance(train_data, EpochDataset) else _Plain(train_data)
        self.collate_fn = collate_fn
        data = self.cfg.data
        self.batch_size = data.batch_size if data is not None else 1  # the global batch, over all ranks
        self.local_batch_size = distributed.local_batch_size(self.batch_size, self.dist)
        self.num_workers = data.num_workers if data is not None else 0
        shuffle = data.shuffle if data is not None else True
        self.sampler = EpochBatchSampler(len(self.train_data), self.batch_size, shuffle=shuffle, seed=self.seed)
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        self.total_steps = int(self.spec.steps if self.spec.steps is not None else self.spec.epochs * self.steps_per_epoch)

        with isolated_rng(self.device):  # built by rank 0 only: the ranks' random streams must stay equal
            self.validation = self._validation(validator) if self.dist.is_main else None
        self._build_optim()
        self.amp_dtype = amp_dtype(self.spec.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.callbacks: list[Callback] = list(self.method.callbacks())
        if self.dist.is_main:  # the other ranks hold the same weights: logs, grids and checkpoints come from rank 0
            self.callbacks += [ScalarLog(), ImageGrids(self.spec.image_every)]
        if self.validation is not None:
            self.callbacks.append(self.validation)
        names = [cb.name for cb in self.callbacks]
        if len(set(names)) != len(names):
            raise ConfigError(f"callbacks need unique names, got {names}")
        self.step = 0
        self.nan_skips = 0
        self.last_metrics: dict[str, float] = {}
        self.pending_scalars: dict[str, float] = {}
        self.log_due = False
        self._out: dict[str, Any] = {}
        self._stop_requested = False
        self.logger: RunLogger | None = None

    @classmethod
    def from_recipe(cls, path: str | Path, overrides: Sequence[str] = (), **kwargs: Any) -> Trainer:
        """Load a YAML recipe (with `base:` parents and `key=value` overrides), validate it, build the trainer."""
        from taskbridge.config import load_recipe, to_dict

        return cls(RunConfig.from_dict(to_dict(load_recipe(path, overrides)), str(path)), **kwargs)

    # ------------------------------------------------------------------ construction

    @property
    def config(self) -> dict[str, Any]:
        """The validated recipe with every default, as JSON-able data (what checkpoints record)."""
        return self.cfg.to_dict()

    @property
    def best_value(self) -> float | None:
        return self.validation.best_value if self.validation is not None else None

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

    def _validation(self, validator: Validator | None) -> Validation | None:
        val = self.cfg.val
        if validator is None and val.type != "none":
            from taskbridge.engine.validation import build_validator

            if self.data_plan is None:
                raise ConfigError("val: a recipe validator needs the data built from the recipe; pass validator= instead")
            validator = build_validator(val, self.data_plan, seed=self.seed, device=self.device)
        if validator is None:
            return None
        from taskbridge.inference import InferenceModel, Pipeline

        inference = self.cfg.inference

        def as_stage(method: nn.Module) -> nn.Module:
            return Pipeline([InferenceModel(method, inference.working_size, inference.residual)]).eval()

        return Validation(validator, self.spec.val_every, val.metric, val.mode, val.split_name, as_stage,
                          at_start=self.spec.val_at_start)

    def _build_optim(self) -> None:
        optim_cfg = self.cfg.optim
        unknown = sorted(set(optim_cfg) - set(self.groups))
        if unknown:
            raise ConfigError(f"optim: no method group(s) {', '.join(unknown)}; the method has {', '.join(self.groups)}")
        defaults = self.method.default_optim()
        subsets = self.method.param_subsets()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.intervals: dict[str, str] = {}
        self.schedule_types: dict[str, str] = {}
        for g, params in self.groups.items():
            group = optim_cfg.get(g)
            spec = merge_group_spec(defaults.get(g), group.spec() if group is not None else None)
            schedule = (group.schedule if group is not None else None) or self.cfg.schedule
            self.optimizers[g] = build_optimizer(params, spec, where=f"optim.{g}", subsets=subsets.get(g))
            total = self.total_steps if schedule.interval == "step" else max(1, math.ceil(self.total_steps / self.steps_per_epoch))
            self.schedule_types[g] = schedule.type
            self.schedulers[g], self.intervals[g] = build_scheduler(self.optimizers[g], schedule, total, where=f"schedule ({g})")

    # ------------------------------------------------------------------ what callbacks use

    def log_scalars(self, values: Mapping[str, Any], kind: str = "train") -> dict[str, float]:
        """`train` values join this step's log row; other kinds are written at once."""
        if kind == "train":
            self.pending_scalars.update(values)
            return dict(values)
        assert self.logger is not None
        return self.logger.scalars(self.step, values, kind=kind)

    def log_images(self, visuals: Mapping[str, Any]) -> None:
        assert self.logger is not None
        self.logger.images(self.step, dict(visuals))

    # ------------------------------------------------------------------ state

    def state(self, rng: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything besides weights that exact resume needs (`engine.state`)."""
        return run_state.capture(self.optimizers, self.schedulers, self.scaler, self.method, self.callbacks, rng)

    def meta(self, **extra: Any) -> dict[str, Any]:
        v = self.validation
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
            "best": {"metric": v.metric if v else None, "mode": v.mode if v else "max", "value": self.best_value,
                     "step": v.best_step if v else None},
            "nan_skips": self.nan_skips,
            "world_size": self.dist.world_size,
            "torch": torch.__version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **extra,
        }

    def save(self, name: str | None = None, state: dict[str, Any] | None = None, **extra: Any) -> Path:
        """Write `checkpoints/<name>` (default `step_XXXXXXX`, which also moves the LAST pointer)."""
        periodic = name is None
        name = name or ckpt.step_dir_name(self.step)
        if not self.dist.is_main:  # every rank holds the same weights; rank 0 writes them
            return self.ckpt_root / name
        path = ckpt.save_checkpoint(self.ckpt_root / name, self.method, state or self.state(), self.meta(**extra))
        if periodic:
            ckpt.write_last_pointer(self.ckpt_root, name)
            ckpt.prune_checkpoints(self.ckpt_root, self.spec.keep_last)
        return path

    def _remove_previous_run(self) -> None:
        import shutil

        for name in RUN_ARTIFACTS:
            target = self.output_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    def _refuse_mixing_runs(self) -> None:
        """A fresh fit never writes into a folder that holds another run's checkpoints."""
        try:
            previous = ckpt.resolve_checkpoint(self.output_dir, prefer="last")
        except ckpt.CheckpointError:
            return
        step = ckpt.read_meta(previous).get("step")
        raise ConfigError(f"{self.output_dir} already holds a run (checkpoint {previous.name}, step {step}): continue it "
                          "with --resume auto, write to another folder with -o, or start over with --overwrite")

    def _check_same_recipe(self, meta: Mapping[str, Any], directory: Path, force: bool) -> None:
        """Resuming with another recipe or other overrides would mix two runs: refuse, naming what changed."""
        try:
            before = RunConfig.from_dict(meta.get("config") or {}).to_dict()
        except ConfigError as err:
            warnings.warn(f"{directory}: its recorded recipe does not validate any more ({err}); not compared",
                          stacklevel=2)
            return
        changed = [f"{k}: {a!r} -> {b!r}" for k, a, b in _differences(before, self.config) if k not in RESUMABLE_CHANGES
                   and not k.startswith("output_dir")]
        if changed and not force:
            raise ckpt.CheckpointError(f"{directory}: the recipe differs from the one this run started with "
                                       f"({'; '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}); resume with the "
                                       "same recipe and overrides, or pass --force to continue with the new ones")
        if changed:
            warnings.warn(f"resuming with a changed recipe (--force): {'; '.join(changed)}", stacklevel=2)

    def load(self, path: str | Path, force: bool = False) -> Path:
        """Restore everything from a checkpoint (run dir, checkpoints dir or step dir)."""
        directory = ckpt.resolve_checkpoint(path, prefer="last")
        model, state, meta = ckpt.load_checkpoint(directory)
        self._check_same_recipe(meta, directory, force)
        ckpt.load_trainable_state(self.method, model, str(directory))
        data = meta.get("data", {})
        if data.get("steps_per_epoch") not in (None, self.steps_per_epoch) or data.get("train_size") not in (None, len(self.train_data)):
            warnings.warn(
                f"{directory}: the training data changed since this checkpoint (train size "
                f"{data.get('train_size')} -> {len(self.train_data)}, batches/epoch {data.get('steps_per_epoch')} -> "
                f"{self.steps_per_epoch}); the data order will not match the original run",
                stacklevel=2,
            )
        self.step = int(meta["step"])
        self.nan_skips = int(meta.get("nan_skips", 0))
        self.last_metrics = dict(meta.get("metrics") or {})
        if self.validation is not None:
            best = meta.get("best") or {}
            self.validation.best_value, self.validation.best_step = best.get("value"), best.get("step")
        run_state.restore(state, self.optimizers, self.schedulers, self.scaler, self.method, self.callbacks, str(directory))
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
        sizes = f" ({self.data_plan.info})" if self.data_plan is not None else ""
        lines.append(f"train data: {len(self.train_data)} items{sizes}, batch {self.batch_size}, "
                     f"{self.steps_per_epoch} batches/epoch, {self.total_steps} steps")
        if self.dist.enabled:
            lines.append(f"distributed: {self.dist.world_size} processes ({'nccl' if self.device.type == 'cuda' else 'gloo'}), "
                         f"{self.local_batch_size} images per process and step")
        v = self.validation
        lines.append(f"validation: {'none' if v is None else v.metric or 'metrics only'}")
        extra = [cb.name for cb in self.method.callbacks()]
        if extra:
            lines.append(f"method callbacks: {', '.join(extra)}")
        return "\n".join(lines)

    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        self.sampler.set_epoch(epoch, start_batch)
        self.train_data.set_epoch(epoch)
        return DataLoader(
            self.train_data,
            batch_sampler=distributed.ShardedBatches(self.sampler, self.dist) if self.dist.enabled else self.sampler,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            worker_init_fn=worker_init_fn,
            # own generator: worker seeds never draw from (and so never shift) the global torch RNG
            generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch, 0xD7)),
            pin_memory=self.device.type == "cuda",
        )

    def fit(self, resume: str | Path | None = None, until: int | None = None, force: bool = False) -> dict[str, Any]:
        """Train to `train.steps` (or stop after step `until`, saving a checkpoint there).

        `resume`: a checkpoint path, or "auto" (the run's LAST checkpoint if there is one). Without it, a
        folder that holds another run is refused. `force`: resume although the recipe changed.
        """
        if resume == "auto":
            try:
                resume = ckpt.resolve_checkpoint(self.output_dir, prefer="last")
            except ckpt.CheckpointError:
                resume = None
        elif resume is None:
            self._refuse_mixing_runs()
        resumed_from = self.load(resume, force) if resume is not None else None
        first_step = self.step  # the resumed checkpoint may be pruned (keep_last) before the run ends
        stop_at = self.total_steps if until is None else min(int(until), self.total_steps)
        main = self.dist.is_main
        if resumed_from is not None and main:  # rows logged after the checkpoint belong to a future this run replays
            _truncate_log(self.output_dir / "metrics.jsonl", self.step)
        self.logger = RunLogger(self.output_dir, tensorboard=self.spec.tensorboard) if main else None
        self.train_data.skip_log = self.output_dir / SKIP_LOG
        if resumed_from is not None and self.logger is not None:
            self.logger.text("resume", f"resumed from {resumed_from} at step {self.step}", self.step)
        old_handlers = self._install_stop_handlers()
        bar = None
        try:
            for cb in self.callbacks:
                cb.on_fit_start(self)
            if self.spec.progress and main:
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
                    self._after_step(batch, stop=self.step >= stop_at)
                    if self.step >= stop_at or self._stop_requested:
                        break
            if self._stop_requested or (self.step >= stop_at and not self._saved_at_current_step()):
                self.save()
            for cb in self.callbacks:
                cb.on_fit_end(self)
        finally:
            if bar is not None:
                bar.close()
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            if self.logger is not None:
                self.logger.close()
        self.dist.barrier()  # rank 0 has written the last checkpoint before any rank moves on
        return {
            "step": self.step,
            "output_dir": str(self.output_dir),
            "last": str(self.ckpt_root / ckpt.step_dir_name(self.step)),
            "best": str(self.ckpt_root / ckpt.BEST_DIR) if (self.ckpt_root / ckpt.BEST_DIR).is_dir() else None,
            "best_value": self.best_value,
            "metrics": self.last_metrics,
            "interrupted": self._stop_requested,
            "resumed_from": str(resumed_from) if resumed_from is not None else None,
            "first_step": first_step,
            "skipped": skipped_files(self.output_dir / SKIP_LOG),
        }

    def _install_stop_handlers(self) -> dict[int, Any]:
        """First Ctrl-C or SIGTERM (a scheduler stopping the job): finish the current step, save, stop.
        A second one aborts immediately."""

        def handler(signum: int, frame: Any) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            name = signal.Signals(signum).name
            warnings.warn(f"{name}: saving a checkpoint after this step (again to abort)", stacklevel=1)

        previous: dict[int, Any] = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[signum] = signal.getsignal(signum)
                signal.signal(signum, handler)
            except ValueError:  # not the main thread
                previous.pop(signum, None)
        return previous

    def _saved_at_current_step(self) -> bool:
        return (self.ckpt_root / ckpt.step_dir_name(self.step) / "meta.json").is_file()

    def _bar_values(self) -> dict[str, float]:
        return {k: float(v.detach().float()) for k, v in self._out.items()
                if k.startswith("loss/") and isinstance(v, Tensor) and v.numel() == 1}

    def _one_step(self, batch: Any) -> None:
        step = self.step
        rng_before = capture_rng()
        batch = to_device(batch, self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out = self.method.training_step(batch, step)
        keys = [f"loss/{g}" for g in self.groups]
        missing = [k for k in keys if k not in out]
        if missing:
            raise KeyError(f"{type(self.method).__name__}.training_step returned no {', '.join(missing)} (keys: {', '.join(out)})")
        bad = [k for k, v in out.items() if k.startswith("loss/") and isinstance(v, Tensor) and not bool(torch.isfinite(v.detach()).all())]
        if distributed.any_rank(bool(bad), self.dist, self.device):  # every rank skips (or stops) together
            self._non_finite(step, bad or ["a loss on another rank"], out, rng_before)
        else:
            self.nan_skips = 0
            self._update(out)
            self._out = {**out, **distributed.mean_scalars(
                {k: v for k, v in out.items() if k.startswith("loss/") and isinstance(v, Tensor) and v.numel() == 1}, self.dist)}
        self.step = step + 1
        if self.dist.enabled:  # a stop signal reaches the ranks at different steps: stop all at the same one
            self._stop_requested = distributed.any_rank(self._stop_requested, self.dist, self.device)
        if self.step % self.steps_per_epoch == 0:
            for g, s in self.schedulers.items():
                if self.intervals[g] == "epoch":
                    s.step()

    def _update(self, out: dict[str, Any]) -> None:
        """Backward and optimizer step of every group, in the method's group order, then the
        per-iteration schedulers (each moves only its own group's learning rate)."""
        step_groups(self.groups, self.optimizers, out, self.scaler, self.spec.grad_clip,
                    partial(distributed.average_gradients, ctx=self.dist))
        for g, scheduler in self.schedulers.items():
            if self.intervals[g] == "step":
                scheduler.step()

    def _non_finite(self, step: int, bad: list[str], out: Mapping[str, Any], rng_before: dict[str, Any]) -> None:
        values = ", ".join(f"{k}={float(out[k].detach().float().mean()):g}" if k in out else k for k in bad)
        for o in self.optimizers.values():
            o.zero_grad(set_to_none=True)
        if self.spec.on_nan == "skip" and self.nan_skips < self.spec.max_nan_skips:
            self.nan_skips += 1
            warnings.warn(f"step {step}: non-finite loss ({values}); step skipped ({self.nan_skips} in a row)", stacklevel=2)
            self._out = {"nan_skipped": torch.tensor(1.0)}
            return
        # the state before this step (RNG included), so resuming from last-good replays this very step
        path = self.save(ckpt.LAST_GOOD_DIR, state=self.state(rng=rng_before), reason=f"non-finite {', '.join(bad)} at step {step}")
        raise NonFiniteLossError(
            f"step {step}: non-finite loss {values}. State before this step saved to {path}. "
            f"Lower the learning rate, enable train.grad_clip, or set train.on_nan=skip."
        )

    def _after_step(self, batch: Any, stop: bool) -> None:
        """Callbacks, then the periodic checkpoint; all keyed on the step number alone (exact resume)."""
        self.log_due = self.step % self.spec.log_every == 0 or stop or self.step == 1
        batch = to_device(batch, self.device)
        for cb in self.callbacks:
            cb.on_step_end(self, batch, self._out)
        s = self.spec
        if (s.ckpt_every and self.step % s.ckpt_every == 0) or stop or self._stop_requested:
            self.save()
        self._out = {}


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf that differs between two nested dicts."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def _truncate_log(path: Path, step: int) -> None:
    """Keep the rows of metrics.jsonl up to `step` (a resumed run logs the later steps again)."""
    import json

    from taskbridge.data.io import atomic_write_text

    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                keep.append(line)
        except (ValueError, AttributeError):  # a line cut by a crash mid-write
            continue
    atomic_write_text(path, "".join(f"{line}\n" for line in keep))
