"""Where relative data paths in recipes point: one rule for the engine, methods and CLIs."""

from __future__ import annotations

import os
from pathlib import Path


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """`explicit`, else $TASKBRIDGE_DATA, else ../shared/data relative to the working directory."""
    root = explicit or os.environ.get("TASKBRIDGE_DATA") or Path.cwd() / ".." / "shared" / "data"
    return Path(root).expanduser().resolve()


def resolve_data_path(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """Absolute paths and paths that exist from the working directory win; else relative to the data root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return data_root(root) / p
