"""Read a run folder (what `taskbridge fit` wrote) into one typed summary the HTML page is drawn from.

Every part is optional except that the folder must look like a run (metrics.jsonl or checkpoints/):
a run cut by a crash still gets a page, with a note for each part that is missing or damaged.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
IMAGES = "images"
BEFORE_AFTER = "report.json"  # the before/after validation table `fit --report` saves
RUN_INFO = "run_info.json"  # environment and per-invocation timings (`taskbridge.report.runinfo`)
_IMAGE_NAME = re.compile(r"^step_(\d+)_(.+)\.png$")


class NotARunError(ValueError):
    """The folder holds none of what `taskbridge fit` writes; the message names the folder and what is missing."""


@dataclass
class ImageStep:
    """The image grids logged at one step: visual name -> PNG path."""

    step: int
    grids: dict[str, Path]


@dataclass
class Checkpoint:
    name: str
    step: int | None
    saved_at: str | None
    selected_by: dict[str, Any] | None = None


@dataclass
class RunSummary:
    """Everything the page shows; `notes` says what was missing or damaged (shown, never raised)."""

    run_dir: Path
    name: str
    records: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None  # the newest checkpoint's meta.json, without its tensor index
    checkpoints: list[Checkpoint] = field(default_factory=list)
    best: Checkpoint | None = None
    images: list[ImageStep] = field(default_factory=list)  # oldest first
    before_after: dict[str, dict[str, float]] | None = None
    run_info: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def rows(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]

    @property
    def last_step(self) -> int | None:
        steps = [int(r["step"]) for r in self.records if isinstance(r.get("step"), int)]
        if self.meta and isinstance(self.meta.get("step"), int):
            steps.append(int(self.meta["step"]))
        return max(steps) if steps else None

    @property
    def is_vat(self) -> bool:
        method = (self.config or {}).get("method") or {}
        return method.get("type") == "vat" or any("gate/mean" in r for r in self.records)


def is_run(folder: Path) -> bool:
    return (folder / METRICS).is_file() or (folder / CHECKPOINTS).is_dir()


def check_run(folder: str | Path) -> Path:
    """The folder as a Path, or NotARunError naming it and what is missing."""
    path = Path(folder)
    if not path.exists():
        raise NotARunError(f"{path}: no such folder")
    if not path.is_dir():
        raise NotARunError(f"{path}: not a folder (give the run folder that `taskbridge fit -o` wrote)")
    if not is_run(path):
        raise NotARunError(f"{path}: not a training run (no {METRICS} and no {CHECKPOINTS}/ in it)")
    return path


def read_metrics(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl; unreadable lines (a crash mid-write) are skipped and counted in `notes`."""
    if not path.is_file():
        notes.append(f"no {METRICS}: no curves")
        return []
    records, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            bad += 1
            continue
        records.append(row)
    if bad:
        notes.append(f"{METRICS}: {bad} unreadable line(s) skipped (cut by a crash or an interrupted write?)")
    if not records:
        notes.append(f"{METRICS} holds no readable rows: no curves")
    return records


def value(v: Any) -> float:
    """A logged value as a float; non-finite values are logged as strings ('nan', 'inf')."""
    if isinstance(v, bool):
        return math.nan
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return math.nan
    return math.nan


def _read_json(path: Path, notes: list[str]) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        notes.append(f"{path.name}: unreadable ({type(err).__name__}); left out")
        return None


def _checkpoint(directory: Path, notes: list[str]) -> tuple[Checkpoint, dict[str, Any]] | None:
    meta = _read_json(directory / "meta.json", notes) if (directory / "meta.json").is_file() else None
    if not isinstance(meta, dict):
        return None
    meta.pop("state", None)  # the tensor index of the training state: large and of no use here
    meta.pop("model_extra", None)
    step = meta.get("step") if isinstance(meta.get("step"), int) else None
    return Checkpoint(directory.name, step, meta.get("saved_at"), meta.get("selected_by")), meta


def read_checkpoints(run: Path, summary: RunSummary) -> None:
    root = run / CHECKPOINTS
    if not root.is_dir():
        summary.notes.append("no checkpoints/: the recipe and the best checkpoint are not recorded")
        return
    newest: tuple[int, dict[str, Any]] | None = None
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        got = _checkpoint(d, summary.notes)
        if got is None:
            continue
        ck, meta = got
        if d.name == "best":
            summary.best = ck
        else:
            summary.checkpoints.append(ck)
        rank = ck.step if ck.step is not None else -1
        if newest is None or rank >= newest[0]:
            newest = (rank, meta)
    if newest is None:
        summary.notes.append("checkpoints/ holds no readable meta.json: the recipe is not recorded")
        return
    summary.meta = newest[1]
    config = newest[1].get("config")
    summary.config = config if isinstance(config, dict) else None


def read_images(run: Path) -> list[ImageStep]:
    by_step: dict[int, dict[str, Path]] = {}
    folder = run / IMAGES
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            m = _IMAGE_NAME.match(p.name)
            if m and p.is_file():
                by_step.setdefault(int(m.group(1)), {})[m.group(2)] = p
    return [ImageStep(s, by_step[s]) for s in sorted(by_step)]


def collect(run_dir: str | Path) -> RunSummary:
    """Read everything a run folder holds (NotARunError when it is not one)."""
    run = check_run(run_dir)
    summary = RunSummary(run_dir=run, name=run.name)
    summary.records = read_metrics(run / METRICS, summary.notes)
    read_checkpoints(run, summary)
    if summary.meta and isinstance(summary.meta.get("name"), str):
        summary.name = summary.meta["name"]
    summary.images = read_images(run)
    if (run / BEFORE_AFTER).is_file():
        table = _read_json(run / BEFORE_AFTER, summary.notes)
        if isinstance(table, dict) and all(isinstance(v, dict) for v in table.values()):
            summary.before_after = table
    if (run / RUN_INFO).is_file():
        info = _read_json(run / RUN_INFO, summary.notes)
        summary.run_info = info if isinstance(info, dict) else None
    return summary


def checkpoint_rate(checkpoints: list[Checkpoint]) -> tuple[float, int, float] | None:
    """(steps/s, steps, seconds) between the first and the last periodic checkpoint, from their saved_at
    stamps: a coarse timing for runs that did not record run_info.json (one second resolution)."""
    stamped = []
    for c in checkpoints:
        if c.step is None or not c.saved_at:
            continue
        try:
            stamped.append((c.step, datetime.fromisoformat(c.saved_at)))
        except ValueError:
            continue
    if len(stamped) < 2:
        return None
    stamped.sort()
    (s0, t0), (s1, t1) = stamped[0], stamped[-1]
    seconds = (t1 - t0).total_seconds()
    if seconds <= 0 or s1 <= s0:
        return None
    return (s1 - s0) / seconds, s1 - s0, seconds
