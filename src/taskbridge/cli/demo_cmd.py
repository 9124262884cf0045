"""`taskbridge demo`: serve a local web page to try restorers, a trained run and a task model on one photo.

The server itself is `taskbridge.demo.server` (standard library HTTP server, JSON API); this module only
turns options into its configuration, prints the URL and serves until Ctrl-C.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind. The default keeps the page on this "
                                 "machine; 0.0.0.0 shows it to the network (no login: anyone who reaches it can use it)."),
        port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port; 0 = pick a free one (the URL is printed)."),
        size: int = typer.Option(640, "--size", min=32, help="Working size: photos are resized so their longest side "
                                 "is at most this many pixels before any model sees them."),
        restorer: list[str] = typer.Option(None, "--restorer", help="Restorer offered on the page (repeatable; default: "
                                           "identity, dcp, aodnet, sci-easy, sci-medium, sci-difficult)."),
        task: list[str] = typer.Option(None, "--task", help="Task model offered on the page (repeatable; default: "
                                       "yolov5n, cifar-resnet20, cifar-resnet56). Detectors draw boxes, classifiers "
                                       "show their top 5."),
        run: list[Path] = typer.Option(None, "--run", help="A trained run folder (from `taskbridge fit`) offered on the "
                                       "page (repeatable)."),
        runs_dir: list[Path] = typer.Option(None, "--runs-dir", help="Folder searched (3 levels deep) for run folders "
                                            "to offer (repeatable; default: runs)."),
        data: Path = typer.Option(None, "--data", help="Data root for the sample photos (DAWN fog, low-light); default "
                                  "$TASKBRIDGE_DATA, else ../shared/data."),
        max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", min=0.1, help="Largest upload accepted, in MiB."),
        verbose: bool = typer.Option(False, "--verbose", help="Log every HTTP request to stderr."),
    ) -> None:
        """Serve a local web page: drop or pick a photo, choose restorers, a trained run and a task model, and see
        degraded | restored | translated side by side with detections (or top-5 classes) and per-stage timings.

        Runs on the CPU (threads: `taskbridge --threads N demo`) and serves until Ctrl-C.
        Example: taskbridge demo --port 0 --run runs/smoke
        """
        import signal

        from taskbridge.checkpoint import CheckpointError, resolve_checkpoint
        from taskbridge.demo import DemoConfig, find_runs, find_samples, make_server, server_url
        from taskbridge.registry import RESTORERS, TASKS

        restorers = tuple(restorer or ())
        tasks = tuple(task or ())
        for name in restorers:
            if name not in RESTORERS:
                raise typer.BadParameter(f"unknown restorer '{name}'; one of {', '.join(RESTORERS.names())}")
        for name in tasks:
            if name not in TASKS:
                raise typer.BadParameter(f"unknown task '{name}'; one of {', '.join(TASKS.names())}")
        runs = find_runs(runs_dir or [Path("runs")])
        for folder in run or []:
            try:
                resolve_checkpoint(folder, prefer="best")
            except CheckpointError as err:
                raise typer.BadParameter(f"--run {folder}: {err}") from None
            runs[str(folder)] = folder
        defaults = DemoConfig()
        config = DemoConfig(working_size=size, max_upload_bytes=int(max_upload_mb * 2**20),
                            restorers=restorers or defaults.restorers, tasks=tasks or defaults.tasks, runs=runs,
                            samples=find_samples(data))
        try:
            server = make_server(config, host, port, quiet=not verbose)
        except OSError as err:
            typer.echo(f"error: cannot listen on {host}:{port}: {err.strerror or err}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"taskbridge demo: {server_url(server)}  ({len(runs)} run(s), {len(config.samples)} sample "
                   "photo(s); Ctrl-C to stop)")
        def stop(_signum: int, _frame: object) -> None:  # `kill` ends it as Ctrl-C does: the port is released
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            typer.echo("stopped")
        finally:
            server.server_close()
            signal.signal(signal.SIGTERM, previous)
