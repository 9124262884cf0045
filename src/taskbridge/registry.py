"""One small registry class, one instance per family.

Families are populated from an explicit lazy plugin list (the `PLUGINS` tuple in each family
package's ``__init__``), never by star-imports, so an optional dependency of one plugin cannot
break `taskbridge list` or any other plugin.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """Unknown or duplicate name; the message lists what is available."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0]) if self.args else ""


class Registry:
    """Name -> constructor map for one family (degradation, restorer, task, translator, method, ...)."""

    def __init__(self, family: str, package: str) -> None:
        self.family = family
        self.package = package
        self._entries: dict[str, Callable[..., Any]] = {}
        self._docs: dict[str, str] = {}
        self._loaded = False
        self._failed: dict[str, str] = {}

    def register(self, name: str, doc: str | None = None) -> Callable[[T], T]:
        """Decorator: `@RESTORERS.register("dcp")` on a class or factory function."""

        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise RegistryError(f"{self.family} '{name}' is registered twice")
            self._entries[name] = obj  # type: ignore[assignment]
            text = doc or inspect.getdoc(obj) or ""
            self._docs[name] = text.strip().splitlines()[0] if text.strip() else ""
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for mod in getattr(pkg, "PLUGINS", ()):
            try:
                importlib.import_module(f"{self.package}.{mod}")
            except ImportError as err:  # optional dependency missing: keep the rest usable
                self._failed[mod] = str(err)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        self._load()
        return {n: self._docs[n] for n in sorted(self._entries)}

    def get(self, name: str) -> Callable[..., Any]:
        self._load()
        if name not in self._entries:
            hint = ""
            if self._failed:
                hint = " (plugins that failed to import: " + "; ".join(
                    f"{m}: {e}" for m, e in self._failed.items()
                ) + ")"
            raise RegistryError(
                f"unknown {self.family} '{name}'. Available: {', '.join(self.names()) or 'none'}{hint}"
            )
        return self._entries[name]

    def create(self, name: str, /, **kwargs: Any) -> Any:
        """Build `name` with keyword arguments; an unknown keyword is an error that names it."""
        factory = self.get(name)
        check_kwargs(factory, kwargs, f"{self.family} '{name}'")
        return factory(**kwargs)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries


def check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], where: str) -> None:
    """Fail early with the offending key instead of a TypeError deep inside a constructor."""
    sig = inspect.signature(fn)
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    allowed.discard("self")
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(
            f"{where}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(allowed))}"
        )


DEGRADATIONS = Registry("degradation", "taskbridge.degrade")
RESTORERS = Registry("restorer", "taskbridge.restorers")
TASKS = Registry("task", "taskbridge.tasks")
TRANSLATORS = Registry("translator", "taskbridge.translators")
DISCRIMINATORS = Registry("discriminator", "taskbridge.discriminators")
LOSSES = Registry("loss", "taskbridge.losses")
METHODS = Registry("method", "taskbridge.methods")
METRICS = Registry("metric", "taskbridge.metrics")

FAMILIES: dict[str, Registry] = {
    r.family: r for r in (DEGRADATIONS, RESTORERS, TASKS, TRANSLATORS, DISCRIMINATORS, LOSSES, METHODS, METRICS)
}
