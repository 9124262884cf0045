"""Recipes: base inheritance, overrides, errors, sections built through registries."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskbridge.config import ConfigError, build, load_recipe
from taskbridge.registry import Registry


def test_recipe_base_inheritance_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "parent.yaml").write_text("seed: 1\nmethod:\n  type: cut\n  lambda_nce: 1.0\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nmethod:\n  lambda_nce: 10.0\n")
    cfg = load_recipe(tmp_path / "child.yaml", ["seed=7", "method.flip=true"])
    assert cfg.seed == 7 and cfg.method.type == "cut" and cfg.method.lambda_nce == 10.0 and cfg.method.flip


def test_recipe_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "ok.yaml").write_text("x: 1\n")
    with pytest.raises(ConfigError, match="key=value"):
        load_recipe(tmp_path / "ok.yaml", ["novalue"])


def test_recipe_schema_rejects_unknown_key(tmp_path: Path) -> None:
    from dataclasses import dataclass

    @dataclass
    class Schema:
        seed: int = 0

    (tmp_path / "r.yaml").write_text("seed: 3\nsede: 4\n")
    with pytest.raises(ConfigError, match="sede"):
        load_recipe(tmp_path / "r.yaml", schema=Schema)


def test_build_requires_type() -> None:
    reg = Registry("thing", "taskbridge.degrade")
    with pytest.raises(ConfigError, match="missing 'type'"):
        build(reg, {"x": 1}, "section")
