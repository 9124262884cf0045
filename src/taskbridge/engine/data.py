"""The recipe's `data:` section -> training dataset (+ the held-out validation part).

Two sources:

* `source: folders` (default): `train_A` / `train_B` are folders, globs or lists of files relative
  to `root`; `UnpairedDataset` pairs them. `split: {fractions: {train: 0.8, val: 0.2}, seed, file}`
  carves a validation part out of A (stored as JSON, by default `<output_dir>/split_A.json`, so
  a resumed or re-evaluated run uses the same files); `val_A` names an explicit held-out set instead.
  `degrade_A: {type: lowlight, ...}` makes A by degrading clean photos (synthetic settings such as
  darkened COCO): every A file keeps one fixed degraded version (seeded by run seed and file), so
  the translator sees a stable degraded set, as it would a real one.
* `source: cifar_npz` (classification track): one labelled .npz; `split.fractions` cuts disjoint
  index pools `A`, `B` and `val`; A is degraded once by `degradation: {type: lowlight, ...}`
  under the run seed, B stays clean; `val` keeps labels for validation.

`root` defaults to `$TASKBRIDGE_DATA`, else `../shared/data` relative to the working directory when it
exists, else the cache's data folder; a registered data set absent from the root is fetched on first use.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from taskbridge.config import ConfigError
from taskbridge.data.unpaired import EpochDataset
from taskbridge.run_config import CifarData, FoldersData, parse_data


def data_root(cfg: FoldersData | CifarData) -> Path:
    from taskbridge.data.root import data_root as _root

    return _root(cfg.root)


def resolve_source(spec: Any, root: Path, where: str) -> list[Path]:
    """Folder (recursive), glob pattern or list of files, each relative to `root` unless absolute."""
    from taskbridge.data.io import IMAGE_SUFFIXES, list_images
    from taskbridge.data.root import under_root

    if spec is None:
        raise ConfigError(f"data.{where}: missing (a folder, glob or list of image files relative to {root})")
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    files: list[Path] = []
    for item in items:
        p = under_root(root, Path(str(item)).expanduser())  # a registered data set absent: fetched first
        if any(ch in str(item) for ch in "*?["):
            hits = sorted(Path(h) for h in glob.glob(str(p), recursive=True) if Path(h).suffix.lower() in IMAGE_SUFFIXES)
            if not hits:
                raise ConfigError(f"data.{where}: pattern {p} matches no images")
            files += hits
        elif p.is_dir():
            files += list_images(p)
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"data.{where}: {p} does not exist (paths are relative to data.root={root})")
    return files


@dataclass
class DataPlan:
    """What the recipe's data section resolves to; `describe()` goes into the run summary."""

    source: str
    train: Dataset
    collate: Callable[[list[Any]], Any] | None
    root: Path  # where relative paths of the data (and of val.data) point
    val_files: list[Path] | None = None  # folder source: held-out A files
    val_arrays: Any = None  # cifar source: ClassificationArrays of the val pool (clean, labelled)
    degradation: Any = None  # cifar source: the module that made A (validation degrades with it too)
    info: dict[str, Any] = field(default_factory=dict)


def plan_data(cfg: FoldersData | CifarData | dict[str, Any], seed: int, output_dir: Path | None = None) -> DataPlan:
    """The training set (and held-out parts) of a `data:` section (validated here when given as a mapping)."""
    if not isinstance(cfg, (FoldersData, CifarData)):
        cfg = parse_data(cfg)
    if isinstance(cfg, CifarData):
        return _plan_cifar(cfg, seed, output_dir)
    return _plan_folders(cfg, seed, output_dir)


def _plan_folders(cfg: FoldersData, seed: int, output_dir: Path | None) -> DataPlan:
    from taskbridge.data.splits import load_or_create_split, split_paths
    from taskbridge.data.unpaired import UnpairedDataset, unpaired_collate

    root = data_root(cfg)
    a_files = resolve_source(cfg.train_A, root, "train_A")
    b_files = resolve_source(cfg.train_B, root, "train_B")
    val_files = None
    info: dict[str, Any] = {"root": str(root)}
    if cfg.split is not None:
        if cfg.val_A:
            raise ConfigError("data: give either split (carve val out of train_A) or val_A, not both")
        fractions = dict(cfg.split.fractions or {"train": 0.8, "val": 0.2})
        s_seed = cfg.split.seed if cfg.split.seed is not None else seed
        if "train" not in fractions or "val" not in fractions:
            raise ConfigError(f"data.split.fractions needs 'train' and 'val' parts, got {fractions}")
        a_root = Path(os.path.commonpath([str(f.parent) for f in a_files]))
        path = Path(cfg.split.file) if cfg.split.file else (output_dir or Path(".")) / "split_A.json"
        parts = split_paths(load_or_create_split(path, a_files, fractions, s_seed, root=a_root), a_root)
        a_files, val_files = parts["train"], parts["val"]
        if not a_files or not val_files:
            raise ConfigError(f"data.split: fractions {fractions} leave an empty train or val part of {len(a_files) + len(val_files or [])} A images")
        info["split_file"] = str(path)
    elif cfg.val_A:
        val_files = resolve_source(cfg.val_A, root, "val_A")
        overlap = {f.resolve() for f in val_files} & {f.resolve() for f in a_files}
        if overlap:
            raise ConfigError(f"data: val_A and train_A share {len(overlap)} file(s), e.g. {sorted(overlap)[0]}")
    ds: Dataset = UnpairedDataset(
        a_files, b_files, size=cfg.size, resize=cfg.resize, crop=cfg.crop, crop_scale=cfg.crop_scale, flip=cfg.flip, seed=seed,
        on_error=cfg.on_error, keep_aspect=cfg.keep_aspect, repair_each_epoch=cfg.repair_each_epoch,
    )
    info.update(train_A=len(a_files), train_B=len(b_files), val_A=len(val_files) if val_files else 0)
    degradation = None
    if cfg.degrade_A is not None:
        from taskbridge.config import build
        from taskbridge.registry import DEGRADATIONS

        degradation = build(DEGRADATIONS, cfg.degrade_A, "data.degrade_A")
        ds = DegradedA(ds, degradation, seed)
        info["degrade_A"] = repr(degradation)
    return DataPlan("folders", ds, unpaired_collate, root, val_files=val_files, degradation=degradation, info=info)


class DegradedA(EpochDataset):
    """Degrades the A side of an `UnpairedDataset` item; the seed depends on the A file only."""

    def __init__(self, base: Dataset, degradation: Callable[..., Any], seed: int) -> None:
        self.base, self.degradation, self.seed = base, degradation, int(seed)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:  # pair_indices, files ... of the wrapped set
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from taskbridge.degrade.base import run_degradation
        from taskbridge.engine.seed import derive_seed

        item = dict(self.base[index])
        ia = self.base.pair_indices(index)[0]  # type: ignore[attr-defined]
        with torch.no_grad():
            item["A"] = run_degradation(self.degradation, item["A"][None], derive_seed(self.seed, ia, 11))[0].clamp(0, 1)
        return item


class UnpairedTensors(EpochDataset):
    """In-memory unpaired A/B images with the same pairing rule as `UnpairedDataset`:
    item i of epoch e = (A[i mod |A|], B[perm_e[i mod |B|]]), perm_e drawn from (seed, e)."""

    def __init__(self, a: Tensor, b: Tensor, seed: int = 0, flip: bool = False, repair_each_epoch: bool = True,
                 a_labels: Tensor | None = None) -> None:
        self.a, self.b, self.seed, self.flip, self.repair = a, b, int(seed), flip, repair_each_epoch
        self.a_labels = a_labels  # carried only for an oracle ceiling (data.labels_A); VaT itself never reads them
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        from taskbridge.engine.seed import derive_seed

        self.epoch = int(epoch)
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch if self.repair else 0, 7))
        self.perm = torch.randperm(len(self.b), generator=g)

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def __getitem__(self, i: int) -> dict[str, Any]:
        from taskbridge.engine.seed import derive_seed

        ia, ib = i % len(self.a), int(self.perm[i % len(self.b)])
        a, b = self.a[ia], self.b[ib]
        if self.flip:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, i, 3))
            flips = torch.rand(2, generator=g) < 0.5
            a = a.flip(-1) if flips[0] else a
            b = b.flip(-1) if flips[1] else b
        item = {"A": a, "B": b, "A_path": f"A[{ia}]", "B_path": f"B[{ib}]"}
        if self.a_labels is not None:
            item["A_label"] = int(self.a_labels[ia])
        return item


def _plan_cifar(cfg: CifarData, seed: int, output_dir: Path | None = None) -> DataPlan:
    from taskbridge.config import build
    from taskbridge.data.splits import split_indices
    from taskbridge.data.unpaired import unpaired_collate
    from taskbridge.evaluation.datasets import ClassificationArrays, load_cifar_npz
    from taskbridge.registry import DEGRADATIONS

    root = data_root(cfg)
    path = Path(cfg.path)
    path = path if path.is_absolute() else root / path
    if not path.exists():
        raise ConfigError(f"data.path: {path} does not exist (relative to data.root={root})")
    arrays = load_cifar_npz(path)
    split = cfg.split
    fractions = dict((split.fractions if split is not None else None) or {"A": 0.4, "B": 0.4, "val": 0.2})
    s_seed = split.seed if split is not None and split.seed is not None else seed
    if split is not None and split.file is not None:
        raise ConfigError("data.split.file: applies to the folders source only (cifar pools are written to split_pools.json)")
    if not {"A", "B"} <= set(fractions):
        raise ConfigError(f"data.split.fractions needs disjoint pools 'A' and 'B' (and 'val'), got {fractions}")
    named = split_indices(len(arrays), fractions, s_seed)
    if output_dir is not None:  # the pools as a split file: `taskbridge evaluate --subset <file>:test`
        from taskbridge.data.splits import save_split

        save_split(named, Path(output_dir) / "split_pools.json", seed=s_seed, fractions=fractions)
    parts = {k: torch.tensor([int(n) for n in v], dtype=torch.long) for k, v in named.items()}
    degradation = build(DEGRADATIONS, cfg.degradation, "data.degradation")
    clean_a = arrays.images[parts["A"]]
    with torch.no_grad():
        out = degradation(clean_a, generator=torch.Generator().manual_seed(seed))
    degraded = (out[0] if isinstance(out, tuple) else out).clamp(0, 1)
    ds = UnpairedTensors(degraded, arrays.images[parts["B"]], seed=seed, flip=cfg.flip,
                         repair_each_epoch=cfg.repair_each_epoch,
                         a_labels=arrays.labels[parts["A"]] if cfg.labels_A else None)
    val = None
    if "val" in parts and len(parts["val"]):
        val = ClassificationArrays(arrays.images[parts["val"]], arrays.labels[parts["val"]], arrays.class_names)
    info = {"source": str(path), "A": len(parts["A"]), "B": len(parts["B"]), "val": len(parts.get("val", []))}
    return DataPlan("cifar_npz", ds, unpaired_collate, root, val_arrays=val, degradation=degradation, info=info)


def file_names(files: Sequence[Path]) -> set[str]:
    return {str(Path(f).resolve()) for f in files}
