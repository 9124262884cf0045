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

    check_kwargs(f, {"a": 1, "anything": 2}, "f")


def test_every_family_lists_without_error() -> None:
    for reg in FAMILIES.values():
        assert isinstance(reg.names(), list)
