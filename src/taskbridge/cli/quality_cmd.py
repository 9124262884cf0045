"""`taskbridge evaluate-quality`: image-quality metrics of a folder, against references if given."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from taskbridge.cli.outputs import SIDE_BY_SIDE, Skips, fresh_file, refuse_input_as_output, skip_option


def stem_key(path: Path, root: Path) -> str:
    """Relative path without suffix: pred 'a/b.png' matches ref 'a/b.jpg'."""
    return path.relative_to(root).with_suffix("").as_posix()


def match_pairs(pred_files: list[Path], pred_root: Path, ref_files: list[Path], ref_root: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pairs by relative stem; returns (pairs, keys of predictions without a reference)."""
    refs: dict[str, Path] = {}
    for f in ref_files:
        key = stem_key(f, ref_root)
        if key in refs:
            raise typer.BadParameter(f"two references share the stem '{key}': {refs[key]} and {f}")
        refs[key] = f
    pairs, missing = [], []
    for f in pred_files:
        key = stem_key(f, pred_root)
        if key in refs:
            pairs.append((f, refs[key]))
        else:
            missing.append(key)
    return pairs, missing


def format_table(means: dict[str, float], metrics: dict[str, Any], count: int) -> str:
    lines = [f"{'metric':<8} {'mean':>10}  better  (n={count})"]
    for name, value in means.items():
        arrow = "lower" if getattr(metrics[name], "lower_better", False) else "higher"
        lines.append(f"{name:<8} {value:>10.4f}  {arrow}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("evaluate-quality")
    def evaluate_quality(
        pred: Path = typer.Option(..., "--pred", "-p", help="Folder of images to score (searched recursively)."),
        ref: Path = typer.Option(None, "--ref", help="Folder of clean references, matched by relative path stem."),
        metrics: str = typer.Option(None, help="Comma-separated metrics; default psnr,ssim,niqe with --ref, else niqe."),
        json_out: Path = typer.Option(None, "--json", help="Where to write per-image scores (default runs/evaluate-quality/<pred folder>.json, "
                                  "numbered -2, -3 ... when taken)."),
        device: str = typer.Option("cpu", help="torch device for the metrics."),
        skip_bad: bool = skip_option(),
    ) -> None:
        """Score images: PSNR/SSIM/LPIPS against --ref, NIQE without; prints means, writes JSON."""
        from tqdm import tqdm

        from taskbridge.data.io import ImageReadError, list_images, read_image
        from taskbridge.registry import METRICS

        names = [m.strip() for m in (metrics or ("psnr,ssim,niqe" if ref else "niqe")).split(",") if m.strip()]
        image_metrics = [n for n in METRICS.names() if hasattr(METRICS.get(n), "needs_reference")]
        unknown = [n for n in names if n not in image_metrics]
        if unknown:
            raise typer.BadParameter(f"--metrics {','.join(unknown)}: not an image-quality metric; one of "
                                     f"{', '.join(image_metrics)}")
        objs = {n: METRICS.create(n) for n in names}
        for n, m in objs.items():
            if m.needs_reference and ref is None:
                raise typer.BadParameter(f"metric '{n}' needs --ref (only no-reference metrics such as niqe work without)")
        pred_files = list_images(pred)
        ref_files = list_images(ref) if ref is not None else []
        out = json_out or fresh_file(Path("runs/evaluate-quality") / f"{pred.resolve().name}.json")
        refuse_input_as_output(out, [*pred_files, *ref_files], "--json")  # before any scoring
        pictures = [f for f in pred_files if f.stem.endswith(SIDE_BY_SIDE)]
        if pictures:  # `restore/translate --side-by-side` comparisons next to the results are not results
            pred_files = [f for f in pred_files if not f.stem.endswith(SIDE_BY_SIDE)]
            typer.echo(f"note: left out {len(pictures)} comparison picture(s) *{SIDE_BY_SIDE}.*", err=True)
            if not pred_files:
                raise typer.BadParameter(f"--pred {pred}: holds only comparison pictures (*{SIDE_BY_SIDE}.*)")
        if ref is not None:
            pairs, missing = match_pairs(pred_files, pred, ref_files, ref)
            if not pairs:
                raise typer.BadParameter(f"no image in {pred} has a reference in {ref} with the same relative path stem")
            if missing:
                typer.echo(f"warning: {len(missing)} prediction(s) without reference skipped, e.g. {missing[:3]}", err=True)
        else:
            pairs = [(f, None) for f in pred_files]  # type: ignore[misc]
        per_image: dict[str, dict[str, float]] = {}
        skips = Skips(skip_bad)
        for p, r in tqdm(pairs, desc="evaluate-quality", unit="img"):
            try:
                image = read_image(p).unsqueeze(0).to(device)
                clean = read_image(r).unsqueeze(0).to(device) if r is not None else None
            except ImageReadError as err:
                skips.bad(p, str(err))
                continue
            if clean is not None and clean.shape != image.shape:
                skips.bad(p, f"{p} {tuple(image.shape[-2:])} and its reference {r} {tuple(clean.shape[-2:])} differ in size")
                continue
            try:
                row = {n: float(m(image, clean if m.needs_reference else None)[0]) for n, m in objs.items()}
            except ValueError as err:  # e.g. NIQE on an image under 96 px
                skips.bad(p, f"{p}: {str(err).splitlines()[0]}")
                continue
            per_image[p.relative_to(pred).as_posix()] = row  # with its suffix: a.jpg and a.png are two images
        if not per_image:
            raise typer.BadParameter(f"--pred {pred}: no image could be scored ({len(skips.items)} skipped)")
        means = {n: sum(v[n] for v in per_image.values()) / len(per_image) for n in names}
        typer.echo(format_table(means, objs, len(per_image)))
        report = {
            "pred": str(pred),
            "ref": None if ref is None else str(ref),
            "count": len(per_image),
            "mean": means,
            "lower_better": {n: bool(objs[n].lower_better) for n in names},
            "settings": {n: objs[n].settings() for n in names},
            "per_image": per_image,
            "skipped": skips.items,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, allow_nan=True, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x)))
        typer.echo(f"wrote {out}{skips.summary()}")
