"""One small registry class, one instance per family.

Families are populated from an explicit lazy plugin list (the `PLUGINS` tuple in each family
package's ``__init__``), never by star-imports, so an optional dependency of one plugin cannot
break `taskbridge list` or any other plugin.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import typing
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

    def failed(self) -> dict[str, str]:
        """Plugin modules that could not be imported (an optional dependency missing), with the reason."""
        self._load()
        return dict(self._failed)

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
        """Build `name` with keyword arguments; an unknown keyword or a value of the wrong type is an
        error that names it (values are checked against the constructor's annotations)."""
        factory = self.get(name)
        where = f"{self.family} '{name}'"
        check_kwargs(factory, kwargs, where)
        return factory(**validate_kwargs(factory, kwargs, where))

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
FEATURES = Registry("feature", "taskbridge.features")
FACE_DETECTORS = Registry("face-detector", "taskbridge.faces")

FAMILIES: dict[str, Registry] = {
    r.family: r for r in (DEGRADATIONS, RESTORERS, TASKS, TRANSLATORS, DISCRIMINATORS, LOSSES, METHODS, METRICS,
                                   FEATURES, FACE_DETECTORS)
}


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations of a factory function or of a class's constructors (presets included)."""
    sources = [vars(k)["__init__"] for k in reversed(fn.__mro__) if "__init__" in vars(k)] if inspect.isclass(fn) else [fn]
    hints: dict[str, Any] = {}
    for src in sources:
        try:
            hints.update(typing.get_type_hints(src, include_extras=True))
        except Exception:  # an annotation that cannot be resolved is simply not checked
            continue
    return hints


@functools.cache
def _kwargs_model(fn: Callable[..., Any]) -> type | None:
    from pydantic import ConfigDict, create_model

    params = inspect.signature(fn).parameters
    hints = _type_hints(fn)
    fields = {name: (hints.get(name, Any), p.default if p.default is not inspect.Parameter.empty else ...)
              for name, p in params.items()
              if name != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
    try:
        return create_model(f"{getattr(fn, '__name__', 'factory')}_options",
                            __config__=ConfigDict(arbitrary_types_allowed=True), **fields)
    except Exception:  # an annotation pydantic cannot use: keep the name check only
        return None


def validate_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """The keyword values checked (and, where lossless, converted: "8" -> 8) against `fn`'s annotations.

    Only the given keywords are returned, so defaults stay the constructor's own. A wrong value is a
    `TypeError` naming the option and what it expects (`config.build` turns it into a ConfigError).
    """
    from pydantic import ValidationError

    model = _kwargs_model(fn)
    if model is None or not kwargs:
        return kwargs
    named = {k: v for k, v in kwargs.items() if k in model.model_fields}  # the rest goes to a **kwargs
    try:
        checked = model.model_validate(named)
    except ValidationError as err:
        from taskbridge.run_config import describe_errors

        bad = [e for e in err.errors() if e["type"] != "missing"]
        if not bad:
            return kwargs  # missing required options only: the constructor's own error says more
        raise TypeError(f"{where}: {describe_errors(bad)}") from None
    return {**kwargs, **{k: getattr(checked, k) for k in named}}
