"""`taskbridge` command line. Each sub-command lives in its own module with a `register(app)`."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="taskbridge",
    help="Task-driven restoration and unpaired translation: degrade, restore, translate, fit and evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help and plain errors: a bad input is one line, not a framed box
)

# Explicit list: one module per command group, imported here so `--help` lists them all.
COMMANDS: tuple[str, ...] = (
    "list_cmd",
    "degrade_cmd",
    "restore_cmd",
    "quality_cmd",
    "evaluate_cmd",
    "fit_cmd",
    "translate_cmd",
    "faces_cmd",
    "bench_cmd",
    "fetch_cmd",
    "report_cmd",
    "demo_cmd",
)



# Set by `main()`: only the program itself picks the default thread count; in-process callers (tests,
# notebooks) keep the count they chose unless they pass --threads.
_PROGRAM = False


def default_threads() -> int | None:
    """Every core this process may use (its CPU affinity, e.g. a container's or taskset's share), or None
    when OMP_NUM_THREADS is set (torch already follows it, and the person chose it)."""
    import os

    if os.environ.get("OMP_NUM_THREADS"):
        return None
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count()


def set_threads(n: int) -> None:
    """torch intra-op threads = n; inter-op too where torch still allows it (before any parallel work)."""
    import contextlib

    import torch

    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # parallel work already ran, or it was set once: keep torch's pool
        torch.set_num_interop_threads(n)


@app.callback()
def _root(
    threads: int = typer.Option(
        None, "--threads", envvar="TASKBRIDGE_THREADS", min=1, show_envvar=True,
        help="torch CPU threads (default: every core this process may use, or OMP_NUM_THREADS if set). "
             "Use fewer on a busy machine: extra threads wait on taken cores (2 threads under load ran 10-25x "
             "slower than 1).",
    ),
) -> None:
    """Task-driven restoration and unpaired translation: degrade, restore, translate, fit and evaluate."""
    chosen = threads if threads is not None else (default_threads() if _PROGRAM else None)
    if chosen:
        set_threads(chosen)


for _name in COMMANDS:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main() -> None:
    """Entry point: user errors (missing weights or files, bad recipes, unreadable images) print one
    clear line and exit 2 instead of a traceback; warnings print as one `warning: ...` line each."""
    import sys
    import warnings

    import click

    def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        from tqdm import tqdm

        tqdm.write(f"warning: {message}", file=sys.stderr)  # above a running progress bar, not inside it

    warnings.showwarning = one_line_warning

    from taskbridge.checkpoint import CheckpointError
    from taskbridge.config import ConfigError
    from taskbridge.data.io import ImageReadError
    from taskbridge.data.labels import LabelFormatError
    from taskbridge.hub import ChecksumError, UntrustedPickleError, WeightsLoadError, WeightsNotFoundError
    from taskbridge.inference import PipelineError
    from taskbridge.registry import RegistryError

    user_errors = (WeightsNotFoundError, ChecksumError, ConfigError, ImageReadError, RegistryError, FileNotFoundError,
                   CheckpointError, PipelineError, UntrustedPickleError, WeightsLoadError, LabelFormatError)
    global _PROGRAM
    _PROGRAM = True
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:  # a command that ended with typer.Exit(code)
            raise SystemExit(code)
    except click.exceptions.NoArgsIsHelpError as err:
        typer.echo(err.ctx.get_help() if err.ctx is not None else err.format_message())
        raise SystemExit(0) from None
    except click.exceptions.Exit as done:
        raise SystemExit(done.exit_code) from None
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        raise SystemExit(130) from None
    except click.ClickException as err:  # bad options or values: one line, with where to look
        command = f" {err.ctx.command_path}" if getattr(err, "ctx", None) is not None else ""
        hint = f" (taskbridge{command.replace(' taskbridge', '')} --help)" if isinstance(err, click.UsageError) else ""
        typer.echo(f"error: {err.format_message()}{hint}", err=True)
        raise SystemExit(err.exit_code) from None
    except user_errors as err:
        typer.echo(f"error: {err}", err=True)
        raise SystemExit(2) from None
    finally:
        _PROGRAM = False  # main() called in-process (tests) leaves later in-process callers as they were
