"""Where relative data paths in recipes point: one rule for the engine, methods and CLIs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_RECIPE_ROOT: ContextVar[str | None] = ContextVar("taskbridge_recipe_data_root", default=None)


@contextmanager
def recipe_data_root(root: str | os.PathLike[str] | None) -> Iterator[None]:
    """While a recipe's method is built, its relative data paths (e.g. VaT's `nuq_fit.folder`,
    `oracle_labels`) resolve against the recipe's `data.root`, as its training photos do."""
    token = _RECIPE_ROOT.set(None if root is None else os.fspath(root))
    try:
        yield
    finally:
        _RECIPE_ROOT.reset(token)


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """`explicit`, else the recipe's `data.root` while its method is built (`recipe_data_root`), else
    $TASKBRIDGE_DATA, else ../shared/data from the working directory when it exists,
    else the cache's data folder ($TASKBRIDGE_CACHE/data), where `taskbridge fetch` puts data sets.

    The last step is why a fresh checkout runs a recipe without any setup: its data sets are fetched
    there on first use (taskbridge.fetch.datasets)."""
    from taskbridge.fetch.download import cache_home, shared_data_dir

    root = (explicit or _RECIPE_ROOT.get() or os.environ.get("TASKBRIDGE_DATA") or shared_data_dir()
            or cache_home() / "data")
    return Path(root).expanduser().resolve()


def resolve_data_path(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """Absolute paths and paths that exist from the working directory win; else relative to the data root,
    where a registered data set that is absent is fetched first (see `taskbridge fetch`)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return under_root(data_root(root), p)


def under_root(root: Path, path: Path) -> Path:
    """`path` joined to the data root unless absolute; a registered data set it names that the root lacks is
    fetched first (automatic fetch on first use, `taskbridge fetch`)."""
    if path.is_absolute():
        return path
    if not (root / path).exists():
        from taskbridge.fetch.datasets import fetch_if_missing

        fetch_if_missing(root, path)
    return root / path
