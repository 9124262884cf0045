"""Registry, recipes and the weights hub: the pieces every family relies on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from taskbridge import hub
from taskbridge.config import ConfigError, build, load_recipe
from taskbridge.registry import FAMILIES, Registry, RegistryError, check_kwargs


def test_registry_create_and_unknown_names() -> None:
    reg = Registry("thing", "taskbridge.degrade")

    @reg.register("double")
    class Double:
        """Doubles a number."""

        def __init__(self, factor: int = 2) -> None:
            self.factor = factor

    assert reg.create("double", factor=3).factor == 3
    assert reg.describe()["double"] == "Doubles a number."
    with pytest.raises(RegistryError, match="unknown thing 'triple'.*double"):
        reg.get("triple")
    with pytest.raises(TypeError, match="unknown option.*facter.*accepted: factor"):
        reg.create("double", facter=3)
    with pytest.raises(RegistryError, match="registered twice"):
        reg.register("double")(type("Other", (), {}))


def test_check_kwargs_allows_var_keyword() -> None:
    def f(a: int, **rest: int) -> None: ...

    check_kwargs(f, {"a": 1, "anything": 2}, "f")


def test_every_family_lists_without_error() -> None:
    for reg in FAMILIES.values():
        assert isinstance(reg.names(), list)


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


def test_hub_resolves_shared_weights_and_checks_sha(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TASKBRIDGE_WEIGHTS", str(shared_data))
    path = hub.resolve("sci-medium", download=False)
    assert path.name == "medium.pt"
    state = hub.load_state("sci-medium", download=False)
    assert any(k.startswith("enhance.") for k in state)
    # a corrupted copy earlier on the search path is refused, naming the file
    bad = tmp_path / "medium.pt"
    bad.write_bytes(b"not the weights")
    monkeypatch.setenv("TASKBRIDGE_WEIGHTS", f"{tmp_path}:{shared_data}")
    with pytest.raises(hub.ChecksumError, match="medium.pt"):
        hub.resolve("sci-medium", download=False)


def test_hub_missing_weights_says_where_to_put_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TASKBRIDGE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TASKBRIDGE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(hub.WeightsNotFoundError, match="Place 'yolov5n_state_dict.pt'"):
        hub.resolve("yolov5n-coco")
    with pytest.raises(hub.WeightsNotFoundError, match="Downloads are disabled"):
        hub.resolve("aodnet", download=False)


def test_hub_registered_sha256_match_shared_files(shared_data: Path) -> None:
    for name in hub.weight_names():
        spec = hub.weight_spec(name)
        path = shared_data / spec.subdir / spec.filename
        assert path.is_file(), f"{name}: {path} missing"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256, name


def test_load_state_refuses_pickled_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, p)
    with pytest.raises(RuntimeError, match="weights_only=True"):
        hub.load_state(p)


@pytest.mark.parametrize("case", ["missing weights", "missing folder"])
def test_cli_user_errors_are_one_clear_line(case: str, shared_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import sys

    from taskbridge.cli import main

    monkeypatch.setenv("TASKBRIDGE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TASKBRIDGE_CACHE", str(tmp_path / "cache"))
    if case == "missing weights":  # yolov5n-coco declares no URL: no network is touched
        argv = ["evaluate", "--task", "yolov5n", "--data", str(shared_data / "coco8"), "--out", str(tmp_path / "o")]
        expected = "Place 'yolov5n_state_dict.pt'"
    else:
        argv = ["restore", "--restorer", "identity", "--in", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
        expected = "nope"
    monkeypatch.setattr(sys, "argv", ["taskbridge", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and expected in err and "Traceback" not in err
