"""Shipped recipes: `base:` lists, the comparison setting, synthetic degraded A folders, and a 5-step
smoke fit of every main VaT recipe at tiny sizes (real data, real frozen models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from taskbridge.config import ConfigError, load_recipe, to_dict
from taskbridge.engine.data import plan_data
from taskbridge.engine.trainer import Trainer
from taskbridge.registry import RegistryError

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
SETTING = RECIPES / "compare" / "dehaze-det-160.yaml"
GAN_SIZE = RECIPES / "compare" / "gan-small.yaml"
CLS_SETTING = RECIPES / "compare" / "lowlight-cls-32.yaml"
UNTRAINED = RECIPES / "controls" / "untrained.yaml"


def test_base_list_merges_in_order(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("x: 1\ny: {p: 1, q: 1}\n")
    (tmp_path / "b.yaml").write_text("y: {q: 2}\nz: 2\n")
    (tmp_path / "r.yaml").write_text("base: [a.yaml, b.yaml]\nz: 3\n")
    cfg = to_dict(load_recipe(tmp_path / "r.yaml"))
    assert cfg == {"x": 1, "y": {"p": 1, "q": 2}, "z": 3}
    (tmp_path / "c.yaml").write_text("base: [a.yaml, r.yaml, c.yaml]\n")
    with pytest.raises(ConfigError, match="circular"):
        load_recipe(tmp_path / "c.yaml")


@pytest.mark.parametrize("method", ["cyclegan", "cut", "fastcut", "odcr"])
def test_comparison_recipes_take_method_from_its_recipe_and_setting_from_the_fragment(method: str) -> None:
    cfg = to_dict(load_recipe(RECIPES / "compare" / f"{method}-dehaze-det.yaml"))
    own = to_dict(load_recipe(RECIPES / f"{method}.yaml"))
    setting = {**to_dict(load_recipe(SETTING)), **to_dict(load_recipe(GAN_SIZE))}
    assert cfg["method"]["type"] == own["method"]["type"] == method
    for key, value in own["method"].items():  # published losses and weights kept ...
        if key not in setting["method"]:
            assert cfg["method"][key] == value, key
    for key, section in setting["method"].items():  # ... networks resized, their other options kept
        assert cfg["method"][key] == {**own["method"].get(key, {}), **section}, key
    for section in ("data", "schedule", "val"):
        assert cfg[section] == {**own.get(section, {}), **setting[section]} or cfg[section] == setting[section]
    assert cfg["train"]["steps"] == 400 and cfg["train"]["epochs"] is None
    vat = to_dict(load_recipe(RECIPES / "dehaze-det-vat.yaml"))
    assert cfg["data"]["split"] == vat["data"]["split"] and cfg["data"]["size"] == vat["data"]["size"]
    assert {k: v for k, v in cfg["val"].items() if k != "split_name"} == {k: v for k, v in vat["val"].items()
                                                                          if k != "split_name"}


@pytest.mark.parametrize("method", ["cyclegan", "cut", "fastcut", "odcr"])
def test_dark_cifar_comparison_uses_the_vat_pools_and_fits(method: str, shared_data: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The GAN recipes on dark CIFAR-10: the method's own folder keys are unset (null) by the setting,
    so the cifar source accepts them; pools, degradation and validation are those of the VaT recipe."""
    monkeypatch.chdir(REPO)
    cfg = to_dict(load_recipe(RECIPES / "compare" / f"{method}-lowlight-cls.yaml"))
    vat = to_dict(load_recipe(RECIPES / "lowlight-cls-vat.yaml"))
    assert cfg["method"]["type"] == method and cfg["data"]["train_A"] is None
    assert cfg["val"] == vat["val"]
    for key in ("source", "path", "split", "degradation"):
        assert cfg["data"][key] == vat["data"][key], key
    plan = plan_data({**cfg["data"], "root": str(shared_data)}, seed=0)
    assert (plan.info["A"], plan.info["B"], plan.info["val"]) == (356, 254, 153)
    with pytest.raises(ConfigError, match="unknown key"):  # a non-null folder key is still an error
        plan_data({**cfg["data"], "root": str(shared_data), "train_A": "x"}, seed=0)
    over = [f"data.root={shared_data}", "data.batch_size=2", "train.steps=2", "train.val_every=2",
            "train.ckpt_every=0", "train.image_every=0", "train.device=cpu", "train.progress=false",
            "train.tensorboard=false", f"output_dir={tmp_path}"]
    trainer = Trainer(to_dict(load_recipe(RECIPES / "compare" / f"{method}-lowlight-cls.yaml", over)))
    trainer.fit()
    val = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"val"' in r]
    # the logged value is the trained generator, applied by hand to the degraded val pool
    from taskbridge.evaluation import evaluate_classification
    from taskbridge.registry import TASKS

    trainer.method.eval()
    direct = evaluate_classification(TASKS.create("cifar-resnet20"), trainer.data_plan.val_arrays,
                                     lambda x: trainer.method.translate(x).clamp(0, 1), degrade=trainer.data_plan.degradation,
                                     seed=0, progress=False)
    assert len(val) == 1 and val[0]["val/top1"] == direct["top1"] and val[0]["step"] == 2


def test_degrade_a_fixes_one_degraded_version_per_file(shared_data: Path) -> None:
    cfg = {"root": str(shared_data), "train_A": "coco8/images/train", "train_B": "coco8/images/val",
           "size": 48, "resize": [48, 48], "crop": "none", "degrade_A": {"type": "lowlight"}}
    plan = plan_data(cfg, seed=5)
    clean = plan_data({k: v for k, v in cfg.items() if k != "degrade_A"}, seed=5).train
    ds = plan.train
    assert plan.degradation is not None and "LowLight" in plan.info["degrade_A"]
    ref = clean[0]
    assert ds[0]["A"].mean() < 0.8 * ref["A"].mean() and torch.equal(ds[0]["B"], ref["B"])  # B stays clean
    brightness = [float(ds[i]["A"].mean() / clean[i]["A"].mean()) for i in range(len(ds))]
    assert max(brightness) - min(brightness) > 0.05  # each file draws its own gamma
    first = {ds[i]["A_path"]: ds[i]["A"] for i in range(len(ds))}
    ds.set_epoch(3)
    for i in range(len(ds)):
        item = ds[i]
        assert torch.equal(item["A"], first[item["A_path"]])  # the same dark version every epoch
    with pytest.raises(RegistryError, match="unknown degradation 'nosuch'"):
        plan_data({**cfg, "degrade_A": {"type": "nosuch"}}, seed=0)


TINY = {
    "dehaze-det-vat": ["data.resize=[64,64]", "data.size=64", "method.nuq_fit.size=64", "val.limit=2",
                       "val.min_boxes=1"],
    "lowlight-det-vat": ["data.resize=[64,64]", "data.size=64", "method.nuq_fit.size=64", "val.limit=2"],
    "lowlight-cls-vat": ["data.batch_size=8"],
}


@pytest.mark.parametrize("recipe", sorted(TINY))
def test_main_vat_recipes_fit_five_steps(recipe: str, shared_data: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # split files in the recipes are relative to the repository
    over = [f"data.root={shared_data}", "train.steps=5", "train.val_every=5", "train.ckpt_every=0",
            "train.image_every=0", "train.device=cpu", "train.progress=false", "train.tensorboard=false",
            f"output_dir={tmp_path}", *TINY[recipe]]
    trainer = Trainer(to_dict(load_recipe(RECIPES / f"{recipe}.yaml", over)))
    trainer.fit()
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "train" for r in rows) >= 1
    val = [r for r in rows if r["kind"] == "val"]
    assert len(val) == 1 and val[0]["step"] == 5
    assert all(torch.isfinite(torch.tensor(v)) for k, v in val[0].items() if k.startswith("val/"))
    assert 0 < val[0]["val/gate_mean"] < 1 and val[0]["val/gate_std"] > 0  # VaT's gate over the val photos
    assert (tmp_path / "checkpoints" / "best").is_dir()
    if "val.min_boxes=1" in TINY[recipe]:  # per-class APs logged, and their mean over the classes present
        aps = [v for k, v in val[0].items() if k.startswith("val/ap_")]
        assert aps and val[0]["val/map50_common"] == pytest.approx(sum(aps) / len(aps))


FRAGMENTS = {SETTING, GAN_SIZE, CLS_SETTING, UNTRAINED}


@pytest.mark.parametrize("path", sorted(p for p in RECIPES.rglob("*.yaml") if p not in FRAGMENTS),
                         ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_shipped_recipe_names_known_method_options(path: Path) -> None:
    """A typo in any recipe (or a renamed option) fails here, not after minutes of training."""
    from taskbridge.registry import METHODS, check_kwargs

    cfg = to_dict(load_recipe(path))
    method = dict(cfg["method"])
    check_kwargs(METHODS.get(method.pop("type")), method, f"{path.name}: method")
    assert cfg["name"] and (cfg["train"].get("steps") or cfg["train"].get("epochs"))


def test_hierarchy_flow_rows_share_the_settings_of_the_rows_they_are_compared_with() -> None:
    """Fog: the comparison fragment's data, validation and inference; dark: lowlight-det-vat's, except batch 1
    with flips (Hierarchy Flow's published batch). The method keeps its own published settings."""
    fog = to_dict(load_recipe(RECIPES / "compare" / "hflow-dehaze-det.yaml"))
    setting = to_dict(load_recipe(SETTING))
    assert "method" not in setting  # the GAN network sizes live in gan-small.yaml
    for section in ("data", "val", "inference"):
        assert fog[section] == setting[section], section
    assert fog["train"]["steps"] == 400 and fog["schedule"] == {"type": "cosine", "interval": "step", "n_constant": None,
                                                                "n_decay": None}
    own = to_dict(load_recipe(RECIPES / "hierarchy-flow.yaml"))
    assert fog["method"] == own["method"] and fog["optim"] == own["optim"] == {"G": {"type": "adam", "lr": 1e-4}}
    dark = to_dict(load_recipe(RECIPES / "compare" / "hflow-lowlight-det.yaml"))
    vat = to_dict(load_recipe(RECIPES / "lowlight-det-vat.yaml"))
    assert dark["val"] == vat["val"] and dark["inference"] == vat["inference"]
    assert {k: v for k, v in dark["data"].items() if k not in ("batch_size", "flip")} == \
        {k: v for k, v in vat["data"].items() if k not in ("batch_size", "flip", "nuq_fit")}
    assert dark["train"]["steps"] == 400 and dark["method"] == own["method"]
