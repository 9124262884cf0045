"""`taskbridge fetch`: weights and data sets by name from their public sources, checked by sha256.

Weights go to the weights cache (taskbridge.hub); data sets to the data root (`--data-root`, else
$TASKBRIDGE_DATA, else ../shared/data when it exists, else $TASKBRIDGE_CACHE/data). Anything already
present and intact is reported as such and not downloaded again.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer


def _size(n: int) -> str:
    from taskbridge.fetch.datasets import human_size

    return human_size(n) if n else "?"


def _rows(root: Path) -> list[tuple[str, ...]]:
    from taskbridge import hub
    from taskbridge.fetch import datasets

    rows = []
    for name in hub.weight_names():
        spec = hub.weight_spec(name)
        found = hub.locate(name)
        kind = "weights" if spec.url else "weights (not downloadable)"
        rows.append((name, kind, _size(spec.size), short_licence(spec.license), spec.source, f"found {found}" if found else "missing"))
    for name in datasets.data_set_names():
        spec = datasets.data_set(name)
        state = datasets.status(name, root)
        rows.append((name, "data", _size(spec.size), spec.licence_short, spec.source,
                     f"{state} {root / name}" if state != "missing" else "missing"))
    for name in datasets.not_fetchable():
        state = f"found {root / name}" if (root / name).exists() else "missing"
        rows.append((name, "data (not fetchable)", "-", "-", "derived, see below", state))
    return rows


def short_licence(text: str) -> str:
    """The licence's name without its parenthesised details, for tables."""
    return text.split(" (", 1)[0].split(";", 1)[0]


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for r in [header, *rows]:
        lines.append("  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip())
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("fetch")
    def fetch_cmd(
        names: list[str] = typer.Argument(None, help="Weights or data set names (see --list), or 'all'."),
        list_: bool = typer.Option(False, "--list", help="List what can be fetched: name, kind, size, licence, "
                                   "source, and whether it is found locally."),
        offline_: bool = typer.Option(False, "--offline", help="Download nothing: only check that the named "
                                      "items are present and intact (as TASKBRIDGE_OFFLINE=1)."),
        data_root: Path = typer.Option(None, "--data-root", help="Where data sets go (default: the data root, "
                                       "see docs/fetch.md)."),
    ) -> None:
        """Fetch weights and data sets by name from their public sources (sha256-checked, cached, resumable)."""
        from taskbridge import hub
        from taskbridge.data.root import data_root as _data_root
        from taskbridge.fetch import datasets

        root = _data_root(data_root)
        if list_:
            typer.echo(f"data root: {root}\nweights cache: {hub.cache_dir()}")
            typer.echo(_table(_rows(root), ("name", "kind", "size", "licence", "source", "local")))
            for name, why in datasets.not_fetchable().items():
                typer.echo(f"{name}: not fetchable: {why}")
            return
        if not names:
            raise typer.BadParameter("name what to fetch (see `taskbridge fetch --list`), or 'all'")
        known_w, known_d = hub.weight_names(), datasets.data_set_names()
        wanted: list[str] = []
        for n in names:
            if n == "all":
                wanted += [w for w in known_w if hub.weight_spec(w).url] + known_d
            elif n in known_w or n in known_d:
                wanted.append(n)
            elif n in datasets.not_fetchable():
                raise typer.BadParameter(f"'{n}' cannot be fetched: {datasets.not_fetchable()[n]}")
            else:
                raise typer.BadParameter(f"unknown name '{n}'; known: {', '.join([*known_w, *known_d])} or 'all'")
        if offline_:
            os.environ["TASKBRIDGE_OFFLINE"] = "1"
        for name in dict.fromkeys(wanted):
            if name in known_w:
                before = hub.locate(name)
                path = hub.resolve(name)  # checks the sha256 of a local file, else downloads it
                typer.echo(f"{name}: {'already present' if before is not None else 'fetched'} {path}")
            else:
                folder, downloaded = datasets.fetch_data_set(name, root)
                typer.echo(f"{name}: {'fetched' if downloaded else 'already present'} {folder}")
