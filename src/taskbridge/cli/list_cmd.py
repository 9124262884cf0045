"""`taskbridge list`: what is registered in every family, and the known weights."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_cmd(
        family: str = typer.Argument(None, help="Only this family (degradation, restorer, task, translator, "
                                     "discriminator, loss, method, metric) or weights."),
    ) -> None:
        """List registered degradations, restorers, tasks, translators, discriminators, losses, methods, metrics and weights."""
        from taskbridge import hub
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
            for name in hub.weight_names():
                spec = hub.weight_spec(name)
                typer.echo(f"  {name:<22} {spec.architecture} [{spec.license}]")
