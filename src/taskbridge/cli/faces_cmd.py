"""`taskbridge align-faces`: FFHQ-aligned face crops of a photo folder (training and test data of face restorers)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import typer

from taskbridge.cli.outputs import (
    Skips,
    fresh_folder,
    prepare_output_folder,
    refuse_existing,
    skip_option,
    write_report,
)


def parse_split(text: str | None) -> dict[str, float]:
    """'train=0.8,val=0.1,test=0.1' -> fractions (summing to 1)."""
    if not text:
        return {}
    parts: dict[str, float] = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            parts[name.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"--split: '{item}' must look like name=fraction") from None
    total = sum(parts.values())
    if any(v <= 0 for v in parts.values()) or abs(total - 1.0) > 1e-6:
        raise typer.BadParameter(f"--split fractions must be positive and sum to 1, got {text}")
    return parts


def assign_split(files: list[Path], root: Path, parts: dict[str, float], seed: int) -> dict[Path, str]:
    """A seeded split by file: sorted by a hash of (seed, relative path), then cut by the fractions.

    Hash order rather than file order: folders are often sorted by an attribute (FairFace's later files
    are mostly the oldest and youngest), so index ranges would make biased parts.
    """
    def key(f: Path) -> str:
        return hashlib.sha256(f"{seed}:{f.relative_to(root).as_posix()}".encode()).hexdigest()

    ordered = sorted(files, key=key)
    out: dict[Path, str] = {}
    cumulative, start = 0.0, 0
    for name, fraction in parts.items():
        cumulative += fraction
        end = round(cumulative * len(ordered))
        out.update(dict.fromkeys(ordered[start:end], name))
        start = end
    out.update(dict.fromkeys(ordered[start:], list(parts)[-1]))  # rounding leftovers
    return out


def register(app: typer.Typer) -> None:
    @app.command("align-faces")
    def align_faces(
        src: Path = typer.Option(..., "--in", "-i", help="Folder of photos with faces (searched recursively)."),
        dst: Path = typer.Option(None, "--out", "-o", help="Output folder (not inside --in) for the aligned crops "
                                 "(default runs/align-faces/<in folder>, numbered -2, -3 ... when taken)."),
        size: int = typer.Option(512, min=16, help="Side of the aligned crops (the FFHQ template is scaled to it)."),
        detector: str = typer.Option("retinaface", help="Registered face detector: retinaface or mtcnn."),
        score_threshold: float = typer.Option(None, help="Detector score threshold (default: the detector's)."),
        split: str = typer.Option(None, help="Write seeded parts into sub-folders, e.g. train=0.8,val=0.1,test=0.1."),
        seed: int = typer.Option(0, help="Seed of --split."),
        skip_bad: bool = skip_option(),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace files an earlier run wrote under --out."),
    ) -> None:
        """Detect the best face of every photo, align it to the FFHQ template and save it as PNG (+ faces.json).

        Photos without a usable face are listed in faces.json and skipped. The crops are what GFP-GAN
        (and `restore --option aligned=True`) expects as input.
        """
        import torch
        from tqdm import tqdm

        from taskbridge.data.io import ImageReadError, list_images, read_image, save_image
        from taskbridge.faces import align
        from taskbridge.registry import FACE_DETECTORS

        dst = dst or fresh_folder(Path("runs/align-faces") / src.resolve().name)
        prepare_output_folder(dst, [src])
        files = list_images(src)
        parts = parse_split(split)
        part_of = assign_split(files, src, parts, seed) if parts else dict.fromkeys(files, "")
        targets = {f: dst / part_of[f] / f.relative_to(src).with_suffix(".png") for f in files}
        refuse_existing(list(targets.values()), dst, overwrite)
        model = FACE_DETECTORS.create(detector)
        skips = Skips(skip_bad)
        records: dict[str, dict] = {}
        no_face: list[str] = []
        for path in tqdm(files, desc=f"align faces [{detector}]", unit="img"):
            try:
                image = read_image(path)
            except ImageReadError as err:
                skips.bad(path, str(err))
                continue
            with torch.no_grad():
                found = model.detect(image, score_threshold=score_threshold)
            if len(found) == 0:
                no_face.append(str(path))
                continue
            crop, matrix = align.align_face(image, found.landmarks[0], size)
            moved = torch.cat([found.landmarks[0], torch.ones(5, 1)], dim=1) @ matrix.T
            save_image(crop, targets[path])
            records[str(targets[path].relative_to(dst))] = {
                "source": str(path), "part": part_of[path] or None, "faces_found": len(found),
                "score": round(float(found.scores[0]), 4), "landmarks": [[round(float(v), 2) for v in p] for p in moved],
            }
        write_report(dst / "faces.json", {"command": "align-faces", "input": str(src), "size": size, "detector": detector,
                                          "split": parts or None, "seed": seed, "faces": records, "no_face": no_face,
                                          "skipped": skips.items})
        counts = {p: sum(1 for r in records.values() if r["part"] == p) for p in parts} if parts else {}
        note = f" ({', '.join(f'{k} {v}' for k, v in counts.items())})" if counts else ""
        typer.echo(f"aligned {len(records)} face(s) into {dst}{note}; {len(no_face)} photo(s) without a face"
                   f"{skips.summary()}")
