"""`taskbridge bench`: images/s, training steps/s, peak memory, parameters and FLOPs of every registered
translator and method at the sizes asked for, as a table and JSON; the same command on CPU and CUDA.

The measuring lives in `taskbridge.bench`; this module parses options, checks names before any work
and prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

ONLY = ("translators", "methods")


def _split(values: list[str] | None) -> list[str]:
    """Repeatable options that also take comma-separated lists: `--sizes 256,512` = `--sizes 256 --sizes 512`."""
    return [v.strip() for item in values or [] for v in str(item).split(",") if v.strip()]


def _sizes(values: list[str] | None) -> list[int]:
    out = []
    for v in _split(values) or ["256", "512"]:
        if not v.isdigit() or int(v) < 1:
            raise typer.BadParameter(f"--sizes: '{v}' is not a positive whole number of pixels")
        out.append(int(v))
    return list(dict.fromkeys(out))


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_cmd(
        sizes: list[str] = typer.Option(None, "--sizes", help="Square sizes in pixels, comma-separated or repeated "
                                        "(default 256,512)."),
        batch: int = typer.Option(1, "--batch", min=1, help="Images per inference call and per training step."),
        iters: int = typer.Option(5, "--iters", min=1, help="Timed calls per row (their median is reported)."),
        warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed calls before timing, after the FLOP-counting "
                                   "call (which is always made)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        translators: list[str] = typer.Option(None, "--translators", help="Registered translators to measure, "
                                              "comma-separated or repeated (default: all, unless only --methods "
                                              "are named)."),
        methods: list[str] = typer.Option(None, "--methods", help="Methods (each from its representative recipe), "
                                          "recipe names in --recipes or recipe files, comma-separated or repeated "
                                          "(default: every registered method, unless only --translators are named)."),
        only: str = typer.Option(None, "--only", help="Only 'translators' or only 'methods'."),
        recipes: Path = typer.Option(None, "--recipes", help="Folder of the representative recipes (default "
                                     "./recipes, else the repository's)."),
        json_path: Path = typer.Option(None, "--json", help="Also write environment, settings and rows here."),
        amp: bool = typer.Option(False, "--amp/--no-amp", help="bf16 autocast (CUDA only; ignored on CPU)."),
        threads: int = typer.Option(None, "--threads", min=1, help="torch intra-op threads for this "
                                     "command (default: the global `taskbridge --threads`)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="A progress bar over the rows."),
    ) -> None:
        """Measure every registered translator (inference) and method (training) at each size."""
        import torch
        from tqdm import tqdm

        from taskbridge import bench
        from taskbridge.cli.outputs import refuse_input_as_output
        from taskbridge.data.io import atomic_write_text
        from taskbridge.engine.device import resolve_device
        from taskbridge.registry import METHODS, TRANSLATORS

        size_list = _sizes(sizes)
        if only is not None and only not in ONLY:
            raise typer.BadParameter(f"--only must be one of {', '.join(ONLY)}, got '{only}'")
        trans_names = _split(translators)
        method_names = _split(methods)
        if (only == "methods" and trans_names) or (only == "translators" and method_names):
            raise typer.BadParameter(f"--only {only} contradicts the --{'translators' if only == 'methods' else 'methods'} given")
        for n in trans_names:
            if n not in TRANSLATORS:
                raise typer.BadParameter(f"--translators: unknown translator '{n}'; one of {', '.join(TRANSLATORS.names())}")
        recipes_dir = recipes or bench.default_recipes_dir()
        jobs: list[tuple[str, Path]] = []
        for n in method_names:
            jobs += _method_jobs(n, recipes_dir, METHODS.names())
        jobs = list(dict.fromkeys(jobs))  # `vat,lowlight-cls-vat` names that recipe twice
        trans_names = list(dict.fromkeys(trans_names))
        # default: everything registered, unless the other family was named (or --only says so)
        if not trans_names and not method_names:
            trans_names = [] if only == "methods" else TRANSLATORS.names()
            if only != "translators":
                jobs = [(n, r) for n in METHODS.names() for r in bench.method_recipes(n, recipes_dir)]
        if json_path is not None:
            refuse_input_as_output(json_path, [], "--json")

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise typer.BadParameter(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if threads:
            torch.set_num_threads(threads)
        dev = resolve_device(device)
        if amp and dev.type != "cuda":
            typer.echo("warning: --amp ignored on CPU (bf16 autocast is used on CUDA only)", err=True)
        settings = bench.Settings(sizes=size_list, batch=batch, iters=iters, warmup=warmup, device=dev,
                                  amp=amp and dev.type == "cuda")
        env = bench.environment(dev, settings.amp)

        rows: list[bench.Row] = []

        def write_json() -> None:  # after every row: an interrupted long run keeps what it measured
            if json_path is not None:  # atomic: an interrupt never leaves a cut file
                atomic_write_text(json_path, json.dumps(bench.report(rows, env, settings), indent=1) + "\n")

        planned = list(bench.plan(trans_names, jobs, settings))
        with tqdm(total=sum(n for n, _ in planned), desc="bench", unit="row", disable=not progress,
                  dynamic_ncols=True) as bar:
            for n, make in planned:
                done = 0
                for row in make():
                    bar.set_postfix_str(f"{row.label} {row.size or ''}".strip())
                    rows.append(row)
                    write_json()
                    done += 1
                    bar.update(1 if done <= n else 0)
                bar.update(max(0, n - done))  # a network skipped before any size counts all its rows

        typer.echo(f"# {env['device_name']} ({dev}), torch {env['torch']}, {env['threads']} threads, batch {batch}, "
                   f"median of {iters} after {warmup} warm-up{', bf16 autocast' if settings.amp else ''}")
        typer.echo(bench.format_table(rows))
        typer.echo("# params M: all parameters; train M: a method's optimised ones. GFLOPs: translator per image "
                   "(inference), method per training step (forward + backward). peak MB: " + env["memory"])
        if json_path is not None:
            if not rows:  # otherwise the last row's write holds it all
                write_json()
            typer.echo(f"wrote {json_path}")


def _method_jobs(value: str, recipes_dir: Path, registered: list[str]) -> list[tuple[str, Path]]:
    """A method name (its representative recipes), a recipe name in `recipes_dir`, or a recipe file."""
    from taskbridge import bench

    if value in registered:
        return [(value, r) for r in bench.method_recipes(value, recipes_dir)]
    path = Path(value)
    candidates = [path] if path.suffix in (".yaml", ".yml") else [recipes_dir / f"{value}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            from taskbridge.config import load_recipe

            method = load_recipe(candidate).get("method") or {}
            return [(str(method.get("type", candidate.stem)), candidate)]
    raise typer.BadParameter(f"--methods: '{value}' is neither a registered method ({', '.join(registered)}) "
                             f"nor a recipe (no {candidates[0]})")
