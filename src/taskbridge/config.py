"""Recipes: YAML files with `key=value` overrides, merged with OmegaConf.

A recipe may name a parent with `base: other.yaml` (resolved next to it), which is how
presets such as FastCUT extend CUT; `base: [method.yaml, setting.yaml]` merges several parents
in order (later wins, the recipe itself last), so one shared setting (data, budget, validation)
can be combined with every method without copying it (in `data`, a key set to null counts as
absent, so a setting can unset a parent's keys for another data source). Unknown keys are errors that name the key: every
section is checked against the constructor that will receive it (`registry.check_kwargs`) or
against the dataclass schema given to `load_recipe`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException


class ConfigError(ValueError):
    """A recipe or override is invalid; the message names the file and key."""


def _load_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base:' chain {' -> '.join(map(str, seen))}")
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: a recipe must be a mapping at top level")
    base = cfg.pop("base", None)
    if base is None:
        return cfg
    bases = list(base) if isinstance(base, Sequence) and not isinstance(base, str) else [base]
    parents = [_load_with_bases((path.parent / str(b)), (*seen, path)) for b in bases]
    return OmegaConf.merge(*parents, cfg)  # type: ignore[return-value]


# Override keys that name files or folders relative to data.root (engine.data, engine.validation).
PATH_KEYS: tuple[str, ...] = ("data.train_A", "data.train_B", "data.val_A", "data.path", "val.data")


def _from_cwd(item: str, cwd: Path) -> str:
    """`item` as an absolute path when it exists (or, as a glob, matches) from `cwd`; else unchanged."""
    import glob

    text = item.strip()
    if not text or text.startswith(("/", "~", "$")) or "://" in text:
        return item
    candidate = cwd / text
    found = glob.glob(str(candidate), recursive=True) if any(c in text for c in "*?") else candidate.exists()
    return str(Path(os.path.abspath(candidate))) if found else item


def paths_from_cwd(overrides: Sequence[str], keys: Sequence[str] = PATH_KEYS, cwd: Path | None = None) -> list[str]:
    """Command-line path overrides (`data.train_A=DIR`) read from the current directory, as a person expects.

    A relative path that exists from the current directory becomes absolute; one that does not keeps its
    recipe meaning (relative to data.root), so `data.train_A=coco8/images/train` still finds the shared data.
    Lists (`[a, b]`) are converted item by item. Recipes themselves keep data.root-relative paths.
    """
    here = Path.cwd() if cwd is None else cwd
    out: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in keys:
            out.append(item)
            continue
        body = value.strip()
        if body.startswith("[") and body.endswith("]"):
            parts = [_from_cwd(v, here) for v in body[1:-1].split(",")]
            value = "[" + ",".join(p.strip() for p in parts) + "]"
        else:
            value = _from_cwd(value, here)
        out.append(f"{key}={value}")
    return out


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got: {', '.join(bad)}")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {err}") from err


def load_recipe(
    path: str | Path,
    overrides: Sequence[str] = (),
    schema: type | None = None,
) -> DictConfig:
    """Load a recipe, apply overrides; with `schema` (a dataclass), unknown keys are errors.

    Path overrides (`PATH_KEYS`) that exist from the current directory are taken from there (`paths_from_cwd`).
    """
    cfg = _load_with_bases(Path(path))
    over = parse_overrides(paths_from_cwd(overrides))
    if schema is not None:
        base = OmegaConf.structured(schema)
        try:
            merged = OmegaConf.merge(base, cfg, over)
        except (ConfigKeyError, OmegaConfBaseException) as err:
            raise ConfigError(f"{path}: {err}") from err
        return merged  # type: ignore[return-value]
    return OmegaConf.merge(cfg, over)  # type: ignore[return-value]


def to_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def build(registry: Any, section: Any, where: str) -> Any:
    """Build a registry entry from a `{type: name, **kwargs}` section, with a clear error."""
    opts = to_dict(section) if section is not None else {}
    if "type" not in opts:
        raise ConfigError(f"{where}: missing 'type' (one of {', '.join(registry.names())})")
    name = opts.pop("type")
    try:
        obj = registry.create(name, **opts)
    except TypeError as err:
        text = str(err).replace(f"{registry.family} '{name}': ", "", 1)
        raise ConfigError(f"{where} ({name}): {text}") from None
    except ConfigError:
        raise
    except ValueError as err:  # a constructor refusing a value: one line naming the section, no traceback
        text = str(err)
        raise ConfigError(text if text.startswith(where) else f"{where} ({name}): {text}") from None
    if getattr(obj, "name", None) is None:  # result files and messages name it as the recipe did
        with contextlib.suppress(AttributeError):
            obj.name = name
    return obj
