"""The typed run configuration: a recipe validated once, when it is loaded.

`RunConfig.from_dict(recipe)` checks every key's type and range (integer steps >= 1, batch size
>= 1, learning rates >= 0, known devices, ...) and raises one `ConfigError` line naming the key
and what it expects, e.g. ``train.steps: must be >= 1 (got -5)``. The engine, the data section,
validation and inference then read fields, not raw dicts. Registry sections (`method:`,
`val.task:`, `data.degrade_A:` ...) stay `{type: name, **options}` mappings: their options are
checked against the constructor they reach when it is built (`registry.validate_kwargs`).

A learning rate of 0 is accepted on purpose: the untrained controls (`recipes/controls/`) train
for one step at lr 0 to score the network as initialised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from taskbridge.bounds import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Unit
from taskbridge.config import ConfigError

Size = PositiveInt | tuple[PositiveInt, PositiveInt]
Section = dict[str, Any]  # a registry section {type: name, **options}, checked when built

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class _Strict(BaseModel):
    """Unknown keys are errors; values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _section(value: Any, where: str) -> Any:
    if value is not None and (not isinstance(value, Mapping) or "type" not in value):
        raise ValueError(f"must be a section {{type: <name>, ...}} (the registered {where}), got {value!r}")
    return value


# ----------------------------------------------------------------------------------------------- train


class TrainConfig(_Strict):
    """The `train:` section."""

    steps: PositiveInt | None = None  # total optimisation steps (one batch each)
    epochs: PositiveInt | None = None  # alternative to steps: steps = epochs x batches per epoch
    log_every: PositiveInt = 50
    ckpt_every: NonNegativeInt = 1000  # 0: only at the end
    val_every: NonNegativeInt = 0  # 0: only at the end (when there is validation)
    val_at_start: bool = False  # also score the network as built (step 0), so selection may keep it
    image_every: NonNegativeInt = 500  # 0: never
    amp: Literal[False, True, "auto", "bf16", "bfloat16", "fp16", "float16"] = False  # CUDA only
    grad_clip: Annotated[float, Field(gt=0)] | None = None  # max L2 norm per group
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    on_nan: Literal["raise", "skip"] = "raise"
    max_nan_skips: NonNegativeInt = 10
    keep_last: NonNegativeInt = 3  # periodic step_* checkpoints kept (0 = all)
    tensorboard: bool = True
    deterministic: bool = False
    progress: bool = True

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not DEVICE.match(str(v)):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return str(v)

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if self.steps is None and self.epochs is None:
            raise ValueError("set 'steps' or 'epochs'")
        return self


# ----------------------------------------------------------------------------------------------- data


class SplitConfig(_Strict):
    """`data.split`: named fractions carved out of train_A (folders) or of the .npz (cifar_npz)."""

    fractions: dict[str, NonNegativeFloat] | None = None
    seed: int | None = None  # default: the run seed
    file: str | None = None  # folders: where the split is stored (an existing file is reused as is)


class FoldersData(_Strict):
    """`data:` with `source: folders` (default): unpaired image folders A (degraded) and B (clean)."""

    source: Literal["folders"] = "folders"
    root: str | None = None
    train_A: str | list[str] | None = None  # required when the trainer builds the data from the recipe
    train_B: str | list[str] | None = None
    val_A: str | list[str] | None = None
    split: SplitConfig | None = None
    degrade_A: Section | None = None
    size: Size = 256
    resize: Size | None = None
    crop: Literal["random", "center", "none", "random_resized"] = "random"
    crop_scale: tuple[Unit, Unit] = (0.25, 1.0)  # random_resized: share of the photo's area a crop covers
    flip: bool = False
    keep_aspect: bool = False
    repair_each_epoch: bool = True
    batch_size: PositiveInt = 1
    num_workers: NonNegativeInt = 0
    shuffle: bool = True
    on_error: Literal["skip", "raise"] = "skip"

    _degrade = field_validator("degrade_A")(lambda v: _section(v, "degradation"))

    @field_validator("crop_scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError("must be [low, high] with 0 < low <= high <= 1")
        return v

    @field_validator("train_A", "train_B")
    @classmethod
    def _given(cls, v: Any) -> Any:
        if v == "???":
            raise ValueError("missing: a folder, glob or list of images (e.g. data.train_A=DIR on the command line)")
        return v


class CifarData(_Strict):
    """`data:` with `source: cifar_npz`: disjoint pools of one labelled .npz (classification track)."""

    source: Literal["cifar_npz"]
    root: str | None = None
    path: str
    split: SplitConfig | None = None
    degradation: Section
    flip: bool = False
    repair_each_epoch: bool = True
    labels_A: bool = False  # pool A's classes in every batch: only method.oracle_labels: data reads them
    batch_size: PositiveInt = 1
    num_workers: NonNegativeInt = 0
    shuffle: bool = True

    _degradation = field_validator("degradation")(lambda v: _section(v, "degradation"))


DataConfig = Annotated[FoldersData | CifarData, Field(discriminator="source")]


def parse_data(section: Mapping[str, Any]) -> FoldersData | CifarData:
    """A `data:` section on its own (null values count as not set), with `data.`-prefixed one-line errors."""
    doc = {k: v for k, v in dict(section).items() if v is not None}
    doc.setdefault("source", "folders")
    try:
        return TypeAdapter(DataConfig).validate_python(doc)
    except ValidationError as err:
        raise ConfigError(f"data.{describe_errors(err)}") from None


# ----------------------------------------------------------------------------------------------- optim


class ScheduleConfig(_Strict):
    """`schedule:` (run-wide) or `optim.<group>.schedule` (one group)."""

    type: Literal["constant", "cosine", "cosine_warm_restarts", "linear_decay", "multistep"] = "constant"
    interval: Literal["step", "epoch"] = "step"
    T_0: PositiveInt | None = None  # cosine_warm_restarts (default 2000)
    T_mult: PositiveInt | None = None  # cosine_warm_restarts (default 1)
    eta_min: NonNegativeFloat | None = None  # cosine, cosine_warm_restarts (default 0)
    n_constant: NonNegativeInt | None = None  # linear_decay (default: half the run)
    n_decay: NonNegativeInt | None = None  # linear_decay (default: the other half)
    final: Unit | None = None  # linear_decay: last factor (default 0)
    milestones: list[PositiveInt] | None = None  # multistep: steps (or epochs) where lr is multiplied by gamma
    gamma: PositiveFloat | None = None  # multistep (default 0.5, GFP-GAN's)

    @model_validator(mode="after")
    def _applicable(self) -> ScheduleConfig:
        own = {"cosine": {"eta_min"}, "cosine_warm_restarts": {"T_0", "T_mult", "eta_min"}, "linear_decay": {"n_constant", "n_decay", "final"},
               "multistep": {"milestones", "gamma"}, "constant": set()}[self.type]
        foreign = sorted(k for k in ("T_0", "T_mult", "eta_min", "n_constant", "n_decay", "final", "milestones", "gamma")
                         if getattr(self, k) is not None and k not in own)
        if foreign:
            raise ValueError(f"{', '.join(foreign)} do(es) not apply to a '{self.type}' schedule")
        return self

    def options(self) -> dict[str, Any]:
        """The scheduler's own options (set ones only)."""
        return {k: v for k, v in self.model_dump().items() if v is not None and k not in ("type", "interval")}


class OptimizerConfig(BaseModel):
    """`optim.<group>`: merged over the method's `default_optim()`; other keys go to the torch optimizer."""

    model_config = ConfigDict(extra="allow")

    type: Literal["adam", "adamw", "sgd"] | None = None
    lr: NonNegativeFloat | None = None
    weight_decay: NonNegativeFloat | None = None
    betas: tuple[Unit, Unit] | None = None
    momentum: NonNegativeFloat | None = None
    # per named parameter subset of the group (the method's `param_subsets()`), e.g. {gate: {lr: 1.0e-2}};
    # a subset at lr 0 is frozen (no gradient, no step), unless every part of the group is at lr 0
    param_groups: dict[str, dict[str, Any]] | None = None
    schedule: ScheduleConfig | None = None

    def spec(self) -> dict[str, Any]:
        """The set options as a plain dict (what `engine.optim.merge_group_spec` merges)."""
        return self.model_dump(exclude_unset=True, exclude={"schedule"})


# ----------------------------------------------------------------------------------------------- val


class _Selection(_Strict):
    metric: str | None = None  # the validation result that selects `best` (None: log only)
    mode: Literal["max", "min"] = "max"
    split_name: str = "val"  # recorded in best/meta.json


class NoValidation(_Selection):
    """No validation; other keys are ignored, so `val.type=none` switches a recipe's validation off."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["none"] = "none"


class DetectionValidation(_Selection):
    """`val: {type: detection}`: mAP of a frozen detector on held-out labelled photos (never the test split)."""

    type: Literal["detection"]
    task: Section
    data: str
    img_size: PositiveInt = 640
    conf_thres: Unit = 0.001
    iou_thres: Unit = 0.6
    class_map: Any = None
    max_det: PositiveInt = 300
    multi_label: bool = False
    letterbox_mode: Literal["min", "square", "rect"] = "min"
    resize: Literal["cv2", "bilinear", "antialias"] = "cv2"
    limit: PositiveInt | None = None
    label_format: Literal["auto", "voc", "dawn-yolo", "yolo"] = "auto"
    split: str | None = None
    subset: str | None = None
    degrade: Section | None = None
    seed: int = 0
    # > 0: also `map50_common`, the mean AP over the classes with at least this many ground-truth boxes on the
    # validation photos (a class with 4 boxes moves mAP50 by 6 points per detection; docs/results.md §3.1)
    min_boxes: NonNegativeInt = 0

    _task = field_validator("task")(lambda v: _section(v, "task"))
    _degrade = field_validator("degrade")(lambda v: _section(v, "degradation"))

    @model_validator(mode="after")
    def _common_needs_min_boxes(self) -> DetectionValidation:
        if self.metric == "map50_common" and self.min_boxes == 0:
            raise ValueError("val.metric map50_common needs val.min_boxes (e.g. 10): the classes it averages")
        return self

    def protocol_options(self) -> dict[str, Any]:
        """Keyword arguments of `evaluate_detection` (and the degradation seed)."""
        keys = ("img_size", "conf_thres", "iou_thres", "class_map", "max_det", "multi_label", "letterbox_mode",
                "resize", "limit")
        return {k: getattr(self, k) for k in keys if k != "class_map" or self.class_map is not None}


class ClassificationValidation(_Selection):
    """`val: {type: classification}`: top-1 of a frozen classifier on the data section's val pool."""

    type: Literal["classification"]
    task: Section
    batch_size: PositiveInt = 256
    class_map: dict[str, str] | None = None
    seed: int | None = None  # default: the run seed

    _task = field_validator("task")(lambda v: _section(v, "task"))


ValConfig = Annotated[NoValidation | DetectionValidation | ClassificationValidation, Field(discriminator="type")]


# ----------------------------------------------------------------------------------------------- run


class InferenceConfig(_Strict):
    """`inference:`: how the trained run is applied to photos (validation, evaluate, translate)."""

    working_size: Size | None = None  # None: the photo's own resolution
    residual: bool = True  # add the upsampled change to the full-resolution photo


class RunConfig(_Strict):
    """A whole recipe. `data` may be absent when the caller hands the trainer its own dataset."""

    name: str = "run"
    seed: int = 0
    output_dir: str | None = None
    notes: str | None = None
    data: DataConfig | None = None
    method: Section
    optim: dict[str, OptimizerConfig] = Field(default_factory=dict)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig
    val: ValConfig = Field(default_factory=NoValidation)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)

    _method = field_validator("method")(lambda v: _section(v, "method"))

    @classmethod
    def from_dict(cls, recipe: Mapping[str, Any], where: str = "recipe") -> RunConfig:
        """Validate a recipe (a plain mapping); every problem in one `ConfigError` line naming its keys."""
        doc = dict(recipe)
        if isinstance(doc.get("data"), Mapping):  # in data, null means "not set" (a setting can unset a parent's key)
            doc["data"] = {k: v for k, v in doc["data"].items() if v is not None}
            doc["data"].setdefault("source", "folders")
        if isinstance(doc.get("optim"), Mapping):  # optim.<group>: null drops a group a base recipe set
            doc["optim"] = {k: v for k, v in doc["optim"].items() if v is not None}
        if doc.get("val") is None or (isinstance(doc["val"], Mapping) and doc["val"].get("type") is None):
            doc["val"] = {**dict(doc.get("val") or {}), "type": "none"}
        try:
            return cls.model_validate(doc)
        except ValidationError as err:
            raise ConfigError(f"{where}: {describe_errors(err)}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with every default filled in: what checkpoints record as the run's configuration."""
        return self.model_dump(mode="json")


def describe_errors(err: ValidationError | list[Any]) -> str:
    """pydantic's errors as `key.path: what is expected (got value)`, joined on one line."""
    parts = []
    for e in (err.errors() if isinstance(err, ValidationError) else err):
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
        msg = e["msg"].removeprefix("Value error, ")
        msg = {"Extra inputs are not permitted": "unknown key", "Field required": "missing"}.get(msg, msg)
        msg = msg.replace("Input should be", "must be")
        for words, sign in (("greater than or equal to", ">="), ("less than or equal to", "<="),
                            ("greater than", ">"), ("less than", "<")):
            msg = msg.replace(words, sign)
        got = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, Mapping) else f" (got {got!r})"
        parts.append(f"{loc or 'top level'}: {msg}{shown}")
    return "; ".join(dict.fromkeys(parts))


# discriminated-union tags pydantic puts into error locations
_UNION_TAGS = {"folders", "cifar_npz", "none", "detection", "classification"}
