"""The typed run configuration: every bad value is one line naming the key and what it expects."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskbridge.config import ConfigError, load_recipe, to_dict
from taskbridge.run_config import CifarData, FoldersData, RunConfig

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes" / "smoke.yaml"


def _load(*over: str) -> RunConfig:
    return RunConfig.from_dict(to_dict(load_recipe(SMOKE, list(over))), "recipes/smoke.yaml")


@pytest.mark.parametrize(("override", "message"), [
    ("train.steps=-5", "train.steps: must be >= 1 (got -5)"),
    ("train.steps=0", "train.steps: must be >= 1 (got 0)"),
    ("train.steps=2.5", "train.steps: must be a valid integer, got a number with a fractional part (got 2.5)"),
    ("train.steps=abc", "train.steps: must be a valid integer, unable to parse string as an integer (got 'abc')"),
    ("train.ckpt_every=-1", "train.ckpt_every: must be >= 0 (got -1)"),
    ("train.log_every=0", "train.log_every: must be >= 1 (got 0)"),
    ("data.batch_size=0", "data.batch_size: must be >= 1 (got 0)"),
    ("optim.G.lr=-1", "optim.G.lr: must be >= 0 (got -1)"),
    ("train.device=gpu", "train.device: must be auto, cpu, cuda, cuda:N or mps (got 'gpu')"),
    ("train.stpes=3", "train.stpes: unknown key"),
    ("schedule.T_0=5", "schedule: T_0 do(es) not apply to a 'constant' schedule"),
    ("data.crop=middle", "data.crop: must be 'random', 'center', 'none' or 'random_resized' (got 'middle')"),
    ("data.crop_scale=[0.5,0.2]", "data.crop_scale: must be [low, high] with 0 < low <= high <= 1 (got [0.5, 0.2])"),
])
def test_bad_values_are_one_line_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(override)
    text = str(err.value)
    assert text == f"recipes/smoke.yaml: {message}" and "\n" not in text


def test_every_shipped_recipe_validates_and_fragments_are_not_recipes() -> None:
    fragments = {"compare/dehaze-det-160.yaml", "compare/gan-small.yaml", "compare/lowlight-cls-32.yaml",
                 "controls/untrained.yaml"}
    for path in sorted((REPO / "recipes").rglob("*.yaml")):
        rel = str(path.relative_to(REPO / "recipes"))
        if rel.startswith("splits/") or rel in fragments:
            continue
        cfg = to_dict(load_recipe(path))
        if rel in ("unpaired-generic.yaml", "hierarchy-flow.yaml", "hierarchy-flow-paper.yaml", "gfpgan.yaml"):  # the user names the folders
            with pytest.raises(ConfigError, match=r"data.train_A: missing: a folder.*data.train_B: missing"):
                RunConfig.from_dict(cfg, rel)
            continue
        run = RunConfig.from_dict(cfg, rel)
        assert isinstance(run.data, (FoldersData, CifarData)) and run.train.steps or run.train.epochs


def test_defaults_are_filled_and_recorded() -> None:
    run = _load()
    assert run.train.ckpt_every == 5 and run.train.keep_last == 3 and run.val.type == "none"
    assert run.inference.working_size is None and run.inference.residual is True
    doc = run.to_dict()
    assert doc["train"]["on_nan"] == "raise" and doc["data"]["source"] == "folders"
    again = RunConfig.from_dict(doc)
    assert again == run  # what a checkpoint records validates back to the same configuration


def test_null_unsets_a_data_key_and_val_none_ignores_the_rest() -> None:
    run = _load("data.resize=null", "val.type=none", "val.metric=map50")
    assert run.data.resize is None and run.val.type == "none"


def test_method_section_options_are_typed_when_built() -> None:
    from taskbridge.engine.trainer import Trainer

    with pytest.raises(ConfigError, match=r"^method.generator \(resnet-generator\): ngf: must be >= 1 \(got -8\)$"):
        Trainer.from_recipe(SMOKE, ["method.generator.ngf=-8"])
    with pytest.raises(ConfigError, match=r"^method.generator \(resnet-generator\): ngf: must be a valid integer"):
        Trainer.from_recipe(SMOKE, ["method.generator.ngf=abc"])
    with pytest.raises(ConfigError, match=r"^method \(cyclegan\): lambda_A: must be >= 0 \(got -1\)$"):
        Trainer.from_recipe(SMOKE, ["method.lambda_A=-1"])
    with pytest.raises(ConfigError, match=r"^method \(cyclegan\): .*\S$") as err:  # a constructor's ValueError
        Trainer.from_recipe(SMOKE, ["method.gan_mode=nonsense"])
    assert "\n" not in str(err.value)


def test_null_drops_an_optimizer_group_a_recipe_set() -> None:
    run = _load("optim.D=null")
    assert set(run.optim) == {"G"}
    assert set(_load().optim) == {"G", "D"}
