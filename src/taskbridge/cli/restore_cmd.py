"""`taskbridge restore`: run a frozen restorer over a folder of images, keeping the folder layout."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import typer


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs -> kwargs; values are Python literals when they parse (1, 0.5, None, True)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"option '{item}' must look like key=value")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def output_path(src: Path, root_in: Path, root_out: Path, ext: str) -> Path:
    """Same relative path under `root_out`; the suffix becomes `ext` unless ext is 'keep'."""
    rel = src.relative_to(root_in)
    return root_out / (rel if ext == "keep" else rel.with_suffix("." + ext.lstrip(".")))


def register(app: typer.Typer) -> None:
    @app.command("restore")
    def restore(
        restorer: str = typer.Option(..., "--restorer", "-r", help="Registered restorer, e.g. sci-medium, aodnet, dcp, identity."),
        src: Path = typer.Option(..., "--in", "-i", help="Folder of degraded images (searched recursively)."),
        dst: Path = typer.Option(..., "--out", "-o", help="Output folder; the input folder structure is kept."),
        ext: str = typer.Option("png", help="Output format (png, jpg, ...) or 'keep' for the input suffix."),
        option: list[str] = typer.Option(None, "--option", "-s", help="Restorer option key=value (repeatable)."),
        device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
        skip_bad: bool = typer.Option(False, help="Warn and skip unreadable images instead of stopping."),
    ) -> None:
        """Restore every image under --in with a frozen restorer and write the results under --out."""
        import torch
        from tqdm import tqdm

        from taskbridge.data.io import ImageReadError, list_images, read_image, save_image
        from taskbridge.registry import RESTORERS

        if src.resolve() == dst.resolve():
            raise typer.BadParameter("--out must differ from --in (inputs would be overwritten)")
        files = list_images(src)
        model = RESTORERS.create(restorer, **parse_options(option)).to(device)
        written = skipped = 0
        with torch.no_grad():
            for path in tqdm(files, desc=f"restore [{restorer}]", unit="img"):
                try:
                    image = read_image(path)
                except ImageReadError as err:
                    if not skip_bad:
                        raise typer.BadParameter(f"{err} (use --skip-bad to continue past it)") from err
                    typer.echo(f"skipping {path}: {err}", err=True)
                    skipped += 1
                    continue
                try:
                    out = model(image.unsqueeze(0).to(device))[0]
                except Exception as err:
                    raise RuntimeError(f"restorer '{restorer}' failed on {path} {tuple(image.shape)}: {err}") from err
                save_image(out.cpu(), output_path(path, src, dst, ext))
                written += 1
        typer.echo(f"restored {written} image(s) with '{restorer}' into {dst}" + (f"; skipped {skipped}" if skipped else ""))
