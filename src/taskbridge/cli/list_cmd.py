"""`taskbridge list`: what is registered in every family, and the known weights (found or missing here)."""

from __future__ import annotations

import typer


def weights_table() -> str:
    """name, file, source, licence, and where the file was found (or 'missing'): what a run would load."""
    from taskbridge import hub
    from taskbridge.cli.fetch_cmd import _table, short_licence

    rows = []
    for name in hub.weight_names():
        spec = hub.weight_spec(name)
        found = hub.locate(name)
        file = f"{spec.subdir}/{spec.filename}" if spec.subdir else spec.filename
        rows.append((name, file, spec.source, short_licence(spec.license), f"found {found}" if found else "missing"))
    return _table(rows, ("name", "file", "source", "licence", "local"))


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_cmd(
        family: str = typer.Argument(None, help="Only this family (degradation, restorer, task, translator, "
                                     "discriminator, loss, method, metric) or weights."),
    ) -> None:
        """List registered degradations, restorers, tasks, translators, discriminators, losses, methods, metrics and weights."""
        from taskbridge.registry import FAMILIES

        families = dict(FAMILIES)
        if family is not None and family not in families and family != "weights":
            raise typer.BadParameter(f"unknown family '{family}'; one of {', '.join([*families, 'weights'])}")
        for fam, reg in families.items():
            if family not in (None, fam):
                continue
            typer.echo(f"{fam}:")
            for name, doc in reg.describe().items():
                typer.echo(f"  {name:<22} {doc}")
        if family in (None, "weights"):
            typer.echo("weights:")
            typer.echo("\n".join(f"  {line}" for line in weights_table().splitlines()))
