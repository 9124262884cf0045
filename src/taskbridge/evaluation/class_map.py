"""Explicit mapping between a dataset's class names, a model's class names and the evaluated classes.

Nothing is matched implicitly by position: the evaluated classes are listed by name, and each side
(dataset labels, model outputs) maps its own names onto them. Names not mapped are not evaluated
(e.g. DAWN `truck` boxes, or the 75 COCO classes a 5-class benchmark ignores). A mapping file is
YAML or JSON: `{classes: [...], dataset: {name: class}, model: {name: class}}`; omitted maps are
identity on `classes`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

PRESETS: dict[str, dict] = {
    # RTTS / DAWN / VOC-haze benchmark classes, COCO spelling; DAWN's `truck` is deliberately absent.
    "rtts5": {"classes": ["person", "bicycle", "car", "motorcycle", "bus"],
              "dataset": {"motorbike": "motorcycle"}},
    "vat-voc10": {"classes": ["bicycle", "boat", "bottle", "bus", "car", "cat", "chair", "dog", "motorcycle", "person"],
                  "dataset": {"motorbike": "motorcycle"}},
}


@dataclass
class ClassMap:
    """Evaluated classes plus dataset-name and model-name maps onto them."""

    classes: list[str]
    dataset: dict[str, str] = field(default_factory=dict)
    model: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.classes = list(self.classes)
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class map: duplicate evaluated classes in {self.classes}")
        for side in ("dataset", "model"):
            m = {str(k): str(v) for k, v in (getattr(self, side) or {}).items()}
            bad = sorted({v for v in m.values() if v not in self.classes})
            if bad:
                raise ValueError(f"class map '{side}' maps onto {bad}, which are not in classes {self.classes}")
            for c in self.classes:  # identity for every evaluated class not mapped otherwise
                m.setdefault(c, c)
            setattr(self, side, m)

    def index(self, name: str, side: str) -> int:
        """Evaluated index of a dataset/model class name, or -1 if it is not evaluated."""
        target = getattr(self, side).get(name)
        return self.classes.index(target) if target is not None else -1

    def model_lookup(self, model_names: Sequence[str]) -> list[int]:
        """Model class index -> evaluated index (-1 = dropped); errors if an evaluated class has no model class."""
        lut = [self.index(n, "model") for n in model_names]
        covered = {i for i in lut if i >= 0}
        missing = [c for i, c in enumerate(self.classes) if i not in covered]
        if missing:
            raise ValueError(
                f"the model has no class for {missing} (model classes start {list(model_names)[:8]}...). "
                "Add them to the class map's 'model' section, e.g. --map-model 'motorbike=motorcycle'."
            )
        return lut

    def map_labels(self, labels: Tensor, names: Sequence[str], side: str) -> Tensor:
        """Relabel indices into `names` to evaluated indices (-1 where not evaluated)."""
        lut = [self.index(n, side) for n in names]
        return labels.new_tensor([lut[i] for i in labels.tolist()]) if len(labels) else labels.clone()

    def to_dict(self) -> dict:
        return {"classes": self.classes, "dataset": self.dataset, "model": self.model}

    @staticmethod
    def from_any(spec: ClassMap | Mapping | Sequence[str] | str | os.PathLike[str] | None,
                 default: Sequence[str] | None = None) -> ClassMap:
        """From a ClassMap, a dict, a list of names, a preset name, a YAML/JSON file, or None (= `default`)."""
        if isinstance(spec, ClassMap):
            return spec
        if spec is None:
            if default is None:
                raise ValueError("no class map given and no default classes known; pass class_map=[names]")
            return ClassMap(list(default))
        if isinstance(spec, (str, os.PathLike)):
            if str(spec) in PRESETS:
                return ClassMap(**PRESETS[str(spec)])
            path = Path(spec)
            if not path.is_file():
                raise ValueError(f"class map '{spec}' is neither a preset ({', '.join(PRESETS)}) nor a file")
            if path.suffix == ".json":
                data = json.loads(path.read_text())
            else:
                from omegaconf import OmegaConf
                data = OmegaConf.to_container(OmegaConf.load(path))
            if not isinstance(data, Mapping) or "classes" not in data:
                raise ValueError(f"{path}: a class map needs a 'classes' list (and optional 'dataset'/'model' maps)")
            unknown = set(data) - {"classes", "dataset", "model"}
            if unknown:
                raise ValueError(f"{path}: unknown class map key(s) {sorted(unknown)}; allowed: classes, dataset, model")
            return ClassMap(**data)  # type: ignore[arg-type]
        if isinstance(spec, Mapping):
            return ClassMap(**spec)  # type: ignore[arg-type]
        return ClassMap(list(spec))
