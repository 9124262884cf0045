"""The registry: create by name, errors that name the key, every family importable."""

from __future__ import annotations

import pytest

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

    def g(a: int) -> None: ...

    assert check_kwargs(f, {"a": 1, "anything": 2}, "f") is None
    with pytest.raises(TypeError, match="g: unknown option.*anything; accepted: a"):
        check_kwargs(g, {"a": 1, "anything": 2}, "g")


def test_every_family_lists_without_error() -> None:
    """Every plugin module of every family imports (all extras are installed where the tests run): a plugin
    that fails to import would silently drop its entries from `taskbridge list`, so it fails here."""
    expected = {"degradation": {"haze", "lowlight", "face"}, "restorer": {"identity", "dcp", "aodnet", "sci-medium", "gfpgan"},
                "task": {"yolov5n", "cifar-resnet20", "clip-zero-shot", "torchvision-detector"},
                "translator": {"vat", "resnet-generator", "hierarchy-flow", "gfpgan-clean"}, "discriminator": {"patchgan", "stylegan2", "facial-component"},
                "loss": {"gan", "patchnce", "dwfc", "aligned-style", "adain-content", "perceptual", "identity"},
                "method": {"vat", "cyclegan", "cut", "fastcut", "odcr", "hierarchy-flow", "gfpgan"},
                "metric": {"voc-ap", "psnr", "niqe", "stlpips"}, "feature": {"vgg19", "vgg16-shift-tolerant"},
                "face-detector": {"retinaface", "mtcnn"}}
    assert set(FAMILIES) == set(expected)
    for family, reg in FAMILIES.items():
        names = reg.names()
        assert reg.failed() == {}, f"{family}: plugins failed to import: {reg.failed()}"
        assert expected[family] <= set(names), (family, names)


def test_a_plugin_that_fails_to_import_is_reported(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "tb_plugins_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('PLUGINS = ("good", "broken")\n')
    (pkg / "good.py").write_text("from taskbridge_demo_registry import REG\n@REG.register('ok')\nclass Ok: ...\n")
    (pkg / "broken.py").write_text("import a_module_that_does_not_exist\n")
    (tmp_path / "taskbridge_demo_registry.py").write_text(
        "from taskbridge.registry import Registry\nREG = Registry('demo', 'tb_plugins_demo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from taskbridge_demo_registry import REG

    assert REG.names() == ["ok"]
    assert list(REG.failed()) == ["broken"] and "a_module_that_does_not_exist" in REG.failed()["broken"]
    with pytest.raises(RegistryError, match="broken: No module named 'a_module_that_does_not_exist'"):
        REG.get("missing")
