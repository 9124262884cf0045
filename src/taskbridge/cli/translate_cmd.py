"""`taskbridge translate` (being written; see its issue)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Adds nothing yet."""
