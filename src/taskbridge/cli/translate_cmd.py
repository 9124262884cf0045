"""`taskbridge translate --ckpt C --in DIR --out DIR`: apply a trained translator to a folder.

Full-resolution output as the VaT evaluation does it (REFERENCE 1.9): translate a copy resized to
`--size` (square, aspect not kept), take the change r = T(x_s) - x_s, upsample r bilinearly to
the image's own size, add it to the original and clamp. `--no-residual` upsamples the output
itself instead; `--size 0` translates at full resolution. File names (and sub-folders) are kept.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("translate")
    def translate_cmd(
        ckpt: str = typer.Option(..., "--ckpt", help="Checkpoint dir, a run's checkpoints/ dir, or its output dir."),
        in_dir: Path = typer.Option(..., "--in", help="Folder of degraded images (searched recursively)."),
        out_dir: Path = typer.Option(..., "--out", help="Output folder; names and sub-folders are kept."),
        size: int = typer.Option(512, "--size", help="Working size of the translator (square); 0 = full resolution."),
        residual: bool = typer.Option(True, "--residual/--no-residual", help="Add the upsampled change (default) or upsample the output."),
        prefer: str = typer.Option("best", "--prefer", help="For a run folder: 'best' (validation-selected) or 'last'."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        on_error: str = typer.Option("skip", "--on-error", help="Unreadable input: skip (warn) or raise."),
    ) -> None:
        """Translate every image of a folder with a trained method (full-resolution output)."""
        import torch
        from tqdm import tqdm

        from taskbridge.data.io import list_images, save_image, try_read_image
        from taskbridge.engine.checkpoint import CheckpointError, load_translator
        from taskbridge.engine.trainer import resolve_device
        from taskbridge.evaluation.pipeline import ImagePipeline

        if prefer not in ("best", "last"):
            raise typer.BadParameter("--prefer must be 'best' or 'last'")
        if size < 0:
            raise typer.BadParameter("--size must be >= 0")
        try:
            files = list_images(in_dir)
            dev = resolve_device(device)
            translator = load_translator(ckpt, device=dev, prefer=prefer)
        except (FileNotFoundError, CheckpointError, ValueError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from err
        pipe = ImagePipeline(None, translator, size or None, residual).to(dev).eval()
        typer.echo(f"translator {translator.meta.get('path')} (step {translator.meta.get('step')}); "
                   f"{len(files)} images; size {size or 'full'}, residual {residual}")
        written = skipped = 0
        for f in tqdm(files, desc="translate", unit="img"):
            img = try_read_image(f, on_error=on_error)
            if img is None:
                skipped += 1
                continue
            with torch.no_grad():
                out = pipe(img[None].to(dev))[0]
            target = out_dir / f.relative_to(in_dir)
            save_image(out, target)
            written += 1
        typer.echo(f"wrote {written} image(s) to {out_dir}" + (f", skipped {skipped} unreadable" if skipped else ""))
