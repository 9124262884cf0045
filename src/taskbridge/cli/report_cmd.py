"""`taskbridge report RUN [-o OUT.html]`: the run's self-contained HTML page (docs/report.md)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        run: str = typer.Argument(..., help="Run folder written by `taskbridge fit` (holds metrics.jsonl, checkpoints/)."),
        out: str = typer.Option(None, "--out", "-o", help="Output .html file (default RUN/report.html)."),
        max_image_steps: int = typer.Option(12, "--max-image-steps", min=1,
                                            help="Image steps embedded: the first and the newest ones."),
    ) -> None:
        """Write one self-contained HTML page for a training run: recipe, loss and validation curves, image
        grids per step, the before/after table, VaT gate statistics, timings and the environment."""
        from taskbridge.report import NotARunError, write_report

        try:
            path = write_report(run, out, max_image_steps=max_image_steps)
        except (NotARunError, ValueError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        typer.echo(str(path))
