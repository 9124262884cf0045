"""`taskbridge fit RECIPE [key=value ...] [--resume auto|PATH] [--device cpu|cuda]`.

Data-parallel: `torchrun --nproc_per_node N -m taskbridge fit RECIPE ...` (`engine.distributed`).
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command(
        "fit",
        context_settings={"allow_extra_args": False},
    )
    def fit_cmd(
        ctx: typer.Context,
        recipe: str = typer.Argument(..., help="Recipe YAML, e.g. recipes/smoke.yaml."),
        overrides: list[str] = typer.Argument(None, help="Recipe overrides key=value, e.g. train.steps=100 data.batch_size=2."),
        resume: str = typer.Option(None, "--resume", help="'auto' (the run's last checkpoint, if any) or a checkpoint path."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a folder that holds a run: its checkpoints, "
                                       "metrics, images and split files are removed first."),
        force: bool = typer.Option(False, "--force", help="Resume although the recipe or overrides changed (named in a warning)."),
        device: str = typer.Option(None, "--device", help="cpu, cuda or cuda:N (overrides train.device)."),
        output_dir: str = typer.Option(None, "--output-dir", "-o", help="Overrides the recipe's output_dir (default runs/<name>)."),
        until: int = typer.Option(None, "--until", help="Stop (with a checkpoint) after this step; resume later."),
        report: bool = typer.Option(True, "--report/--no-report", help="After training, print the validation "
                                    "table: plain input vs restorer alone vs the trained translator (best)."),
        html: bool = typer.Option(True, "--html/--no-html", help="At the end, write RUN/report.html (taskbridge report)."),
        trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow files that can only be unpickled (e.g. an ultralytics .pt); loading them runs their code."),
    ) -> None:
        """Train a method from a recipe: one optimizer per method group, checkpoints, TensorBoard, validation.

        On several GPUs (or CPU processes): torchrun --nproc_per_node N -m taskbridge fit RECIPE ...
        (data.batch_size is then the global batch, split over the N processes; docs/engine.md).

        Overrides: a relative path (data.train_A/train_B/val_A, data.path, val.data) is read from the
        current directory when it exists there, else from data.root as in recipes.
        """
        from taskbridge.hub import trusting_pickles

        ctx.with_resource(trusting_pickles(trust_pickle))
        import json
        import time

        from taskbridge.checkpoint import CheckpointError
        from taskbridge.config import ConfigError
        from taskbridge.engine.trainer import NonFiniteLossError, Trainer

        try:
            trainer = Trainer.from_recipe(recipe, overrides or [], output_dir=output_dir, device=device, overwrite=overwrite)
        except (ConfigError, FileNotFoundError, CheckpointError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from err
        from taskbridge.engine import distributed

        main = trainer.dist.is_main  # under torchrun every rank runs this; rank 0 speaks
        try:
            if main:
                typer.echo(trainer.summary())
            started = time.time()
            try:
                result = trainer.fit(resume=resume, until=until, force=force)
            except ConfigError as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from err
            except (NonFiniteLossError, CheckpointError) as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(1) from err
            if not main:
                return
            typer.echo(json.dumps({k: result[k] for k in ("step", "output_dir", "last", "best", "best_value", "interrupted",
                                                          "resumed_from", "skipped")}, indent=1))
            if report and trainer.validation is not None and not result.get("interrupted"):
                from taskbridge.engine.report import compare_on_validation, format_table

                rows = compare_on_validation(trainer)
                split = trainer.validation.split or "validation"
                table = format_table(rows, title=f"before / after on the {split} split (selection split, not test):")
                typer.echo(table)
                (trainer.output_dir / "report.json").write_text(json.dumps(rows, indent=1))
            if html:  # after the summary and the table: a report problem is a warning, never a lost run
                from taskbridge.report import write_fit_report

                if (page := write_fit_report(trainer, result, started)) is not None:
                    typer.echo(f"report: {page}")
        finally:
            distributed.close(trainer.dist)
