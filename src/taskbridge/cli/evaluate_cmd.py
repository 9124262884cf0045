"""`taskbridge evaluate`: degraded -> image stages (restorer, trained translator) -> frozen task, with the paper's metrics.

Detection follows the reference protocol (`evaluation.detection`): stages at each photo's native
resolution, 8-bit result, OpenCV letterbox, YOLOv5 box mapping; VOC all-point AP@0.5 per class + mAP,
COCO mAP50 / mAP50:95 cross-check, a before/after picture grid. Classification: top-1 and macro
ROC-AUC. Rows: the plain degraded input (unless `--no-baseline`), one per `--restorer`, and the
trained run of `--translator` (with, in the baseline, the restorer that run owns applied alone). A
run that owns a restorer (VaT) applies it itself, so `--restorer` next to it is refused. Everything
measured, and every setting used, goes to `results.json` in `--out`. `--quality` also scores each
row's images: PSNR/SSIM against the clean image when `--degrade` synthesised the degraded one, NIQE
when images are large enough (at each image's own resolution; see `evaluation.quality`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from taskbridge.cli.outputs import Skips, fresh_folder, prepare_output_folder, skip_option


def parse_options(pairs: list[str] | None, what: str) -> dict[str, Any]:
    """`key=value` strings -> dict, values read as YAML scalars (numbers, booleans, lists)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise typer.BadParameter(f"{what} '{pair}' must look like key=value")
        k, v = pair.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def create_from_cli(registry, name: str, options: dict[str, Any], flag: str):  # noqa: ANN001, ANN201
    """A registry entry named on the command line; an unknown name or option is one line naming the flag."""
    from taskbridge.registry import RegistryError

    try:
        return registry.create(name, **options)
    except (RegistryError, TypeError, ValueError) as err:
        raise typer.BadParameter(f"{flag} {name}: {err}") from None


def build_class_map(classes: str | None, map_dataset: list[str] | None, map_model: list[str] | None, default: str | None):
    """--classes (preset, file, or comma list) plus --map-dataset / --map-model name=class pairs."""
    from taskbridge.evaluation import ClassMap

    spec: Any = classes if classes is not None else default
    if isinstance(spec, str) and "," in spec:
        spec = [c.strip() for c in spec.split(",") if c.strip()]
    cmap = ClassMap.from_any(spec) if spec is not None else None
    extra_d = {k: str(v) for k, v in parse_options(map_dataset, "--map-dataset").items()}
    extra_m = {k: str(v) for k, v in parse_options(map_model, "--map-model").items()}
    if cmap is None:
        return None
    if extra_d or extra_m:
        cmap = ClassMap(cmap.classes, {**cmap.dataset, **extra_d}, {**cmap.model, **extra_m})
    return cmap


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        ctx: typer.Context,
        task: str = typer.Option(..., help="Task name (taskbridge list task), e.g. yolov5n, cifar-resnet20."),
        data: Path = typer.Option(..., help="Labelled data: a detection folder (DAWN / YOLO layout) or a CIFAR .npz (or its folder)."),
        restorer: list[str] = typer.Option(None, help="Restorer(s), one table row each (repeatable); with a --translator "
                                           "that owns no restorer, each is applied before it."),
        translator: str = typer.Option(None, help="A run folder (or checkpoint) written by `taskbridge fit`: one row, with "
                                       "whatever restorer the run owns applied inside it."),
        translate_size: int = typer.Option(None, help="Working size of the translator (default: the run's "
                                           "inference.working_size; 0 = native resolution)."),
        residual: bool = typer.Option(None, "--residual/--no-residual", help="Add the translator's upsampled change to the "
                                      "full-resolution photo (default: the run's inference.residual)."),
        prefer: str = typer.Option("best", help="For a run folder: 'best' (validation-selected) or 'last'."),
        baseline: bool = typer.Option(True, help="Also report the plain degraded input (and the restorer a --translator "
                                      "owns, alone) as the first rows."),
        split: str = typer.Option(None, help="Split folder of the Ultralytics layout, images/<split>/ (e.g. val2017); "
                                  "an error for other layouts (use --subset)."),
        subset: str = typer.Option(None, help="Only the images of one part of a split file: FILE.json:PART, "
                                   "e.g. recipes/splits/dawn_fog.json:test (the held-out test images)."),
        img_size: int = typer.Option(640, help="Letterbox size (long side)."),
        letterbox: str = typer.Option("min", help="Letterbox shape: min (pad to stride), square, or rect (YOLOv5 val)."),
        resize: str = typer.Option("cv2", help="Letterbox resize: cv2 (OpenCV INTER_LINEAR on the 8-bit photo, as YOLOv5), "
                                   "bilinear (torch) or antialias (torch, antialiased)."),
        conf: float = typer.Option(0.001, help="Confidence threshold before NMS."),
        iou: float = typer.Option(0.6, help="NMS IoU threshold."),
        max_det: int = typer.Option(300, help="Detections kept per image."),
        multi_label: bool = typer.Option(False, help="YOLO multi-label NMS (one box may keep several classes)."),
        classes: str = typer.Option(None, help="Evaluated classes: preset (rtts5, vat-voc10), a YAML/JSON class-map file, or a comma list. Detection default: rtts5."),
        map_dataset: list[str] = typer.Option(None, help="Dataset name -> evaluated class, e.g. motorbike=motorcycle (repeatable)."),
        map_model: list[str] = typer.Option(None, help="Model class name -> evaluated class (repeatable)."),
        eleven_point: bool = typer.Option(False, "--11-point", help="VOC2007 11-point AP instead of all-point."),
        degrade: str = typer.Option(None, help="Degradation (taskbridge list degradation) applied to the data first, for clean sets."),
        degrade_opt: list[str] = typer.Option(None, help="Degradation option key=value (repeatable)."),
        task_opt: list[str] = typer.Option(None, help="Task option key=value (repeatable)."),
        seed: int = typer.Option(0, help="Seed of the degradation (image i / batch i uses seed + i)."),
        grid: int = typer.Option(8, help="Images in the before/after detection picture (0 = none)."),
        grid_conf: float = typer.Option(0.25, help="Score threshold of the boxes drawn in the picture."),
        limit: int = typer.Option(None, help="Evaluate only the first N images (smoke tests; never for reported numbers)."),
        batch_size: int = typer.Option(256, help="Classification batch size."),
        quality: bool = typer.Option(False, "--quality/--no-quality", help="Also score each row's task input: "
                                     "PSNR/SSIM vs the clean image (with --degrade) and NIQE; a second table."),
        bootstrap: int = typer.Option(0, min=0, help="Resample the images this many times (e.g. 1000) for each row's "
                                      "standard error and 95 % interval, and each row's paired difference from the "
                                      "first row; the resamples (seed 0) are shared with any evaluation of the same "
                                      "images, so results.json files can be compared pairwise later."),
        out: Path = typer.Option(None, help="Output folder (default runs/evaluate/<task>-<data>, numbered -2, -3 ... "
                                 "when taken)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace the results of an earlier evaluation in --out."),
        skip_bad: bool = skip_option(),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:1 ..."),
        workers: int = typer.Option(None, min=0, help="Processes reading (and, for a row without stages, "
                                    "letterboxing) detection photos ahead of the model; default min(2, CPUs - 1). "
                                    "The model then leaves their cores free (fewer torch threads, which can move "
                                    "scores in their last bits); 0 = all in the main process, as before."),
        trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow files that can only be unpickled (e.g. an ultralytics .pt); loading them runs their code."),
    ) -> None:
        """Evaluate a frozen task on degraded data, optionally behind restorers and a trained translator."""
        from taskbridge.hub import trusting_pickles

        ctx.with_resource(trusting_pickles(trust_pickle))
        import torch

        from taskbridge.evaluation import (
            ClassificationArrays,
            DetectionProtocol,
            evaluate_classification,
            evaluate_detection,
            evaluate_quality,
            open_dataset,
        )
        from taskbridge.evaluation.datasets import restrict_to_subset
        from taskbridge.evaluation.report import (
            bootstrap_table,
            classification_table,
            detection_grid,
            detection_table,
            quality_table,
            save_png,
            write_json,
        )
        from taskbridge.inference import Pipeline, RestorerStage, build_pipeline, load_inference_model
        from taskbridge.registry import DEGRADATIONS, TASKS

        if prefer not in ("best", "last"):
            raise typer.BadParameter("--prefer must be 'best' or 'last'")
        # where the results go is settled before any work: a bad folder fails now, not after the inference
        out = out or fresh_folder(Path("runs/evaluate") / f"{task}-{Path(data).stem}")
        prepare_output_folder(out, [Path(data)] if Path(data).is_dir() else [])
        previous = [p for p in out.iterdir() if p.name in ("results.json", "table.txt") or p.name.startswith("grid_")]
        if previous and not overwrite:
            raise typer.BadParameter(f"--out {out} holds an earlier evaluation ({previous[0].name}); pass --overwrite "
                                     "or choose another folder")
        for p in previous:
            p.unlink()
        skips = Skips(skip_bad)
        model = create_from_cli(TASKS, task, parse_options(task_opt, "--task-opt"), "--task").to(device).eval()
        model.name = task
        try:
            dataset = open_dataset(data, split=split)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from err
        if subset:
            try:
                dataset = restrict_to_subset(dataset, subset)
            except (ValueError, FileNotFoundError) as err:
                raise typer.BadParameter(str(err)) from err
        deg = None
        if degrade:
            deg = create_from_cli(DEGRADATIONS, degrade, parse_options(degrade_opt, "--degrade-opt"), "--degrade")
            deg.name = degrade
        trained = None
        if translator:
            trained = load_inference_model(translator, device=device, prefer=prefer,
                                           working_size=-1 if translate_size is None else translate_size,
                                           residual=residual)
        runs: dict[str, Any] = {}
        if baseline or not (restorer or trained):
            runs["input" if deg is None else f"input+{degrade}"] = None  # no stage: the degraded photo itself
            if trained is not None and trained.restorer is not None:
                stage = RestorerStage(trained.restorer)
                runs[f"{stage.name} (alone)"] = Pipeline([stage]).to(device).eval()
        for r in restorer or []:
            runs["+".join(x for x in (r, "translator" if trained else None) if x)] = build_pipeline(r, trained, device)
        if trained is not None and not restorer:
            runs["translator"] = build_pipeline(None, trained, device)
        results: dict[str, dict] = {}
        is_cls = isinstance(dataset, ClassificationArrays)
        if is_cls and getattr(model, "kind", "") != "classification":
            raise typer.BadParameter(f"{data} is a classification set but task '{task}' is a {model.kind} model")
        if not is_cls and getattr(model, "kind", "") != "detection":
            raise typer.BadParameter(f"{data} is a detection set but task '{task}' is a {model.kind} model")
        cmap = build_class_map(classes, map_dataset, map_model, None if is_cls else "rtts5")
        protocol = None if is_cls else DetectionProtocol(img_size, letterbox, resize, True, conf, iou, max_det, multi_label)
        for name, pipe in runs.items():
            typer.echo(f"== {name}")
            if is_cls:
                ds = dataset
                if limit:
                    ds = ClassificationArrays(dataset.images[:limit], dataset.labels[:limit], dataset.class_names)
                res = evaluate_classification(model, ds, pipe, batch_size, degrade=deg, seed=seed,
                                              class_map=dict(cmap.dataset) if cmap else None, device=device,
                                              bootstrap=bootstrap)
            else:
                res = evaluate_detection(model, dataset, pipe, img_size, conf, iou, cmap, True, max_det=max_det,
                                         multi_label=multi_label, letterbox_mode=letterbox, resize=resize, degrade=deg,
                                         seed=seed, voc_11_point=eleven_point, device=device, limit=limit,
                                         on_bad=skips.bad, num_workers=workers, bootstrap=bootstrap)
            res["settings"]["data"] = str(data)
            res["settings"]["limit"] = limit
            if quality:
                res["quality"] = evaluate_quality(dataset, pipe, degrade=deg, seed=seed, limit=limit, device=device,
                                                  batch_size=batch_size, on_bad=skips.bad)
            results[name] = res
        table = classification_table(results) if is_cls else detection_table(results)
        if bootstrap:
            table += "\n\nspread over the images (bootstrap)\n" + bootstrap_table(results)
        if quality:
            table += "\n\nimage quality of the task input (PSNR/SSIM vs the clean image; NIQE lower = more natural)\n"
            table += quality_table(results)
        typer.echo(table)
        (out / "table.txt").write_text(table + "\n")
        write_json(out / "results.json", {"task": task, "data": str(data), "runs": results, "skipped": skips.items,
                                          "torch": torch.__version__})
        typer.echo(f"wrote {out / 'results.json'} and {out / 'table.txt'}")
        if not is_cls and grid > 0:
            n = min(grid, len(dataset), limit or len(dataset))
            for name, pipe in runs.items():
                if pipe is None and len(runs) > 1:
                    continue  # the baseline is the left column of every other picture
                pic = detection_grid(model, dataset, pipe, cmap, range(n), protocol, grid_conf, degrade=deg, seed=seed,
                                     on_bad=skips.bad)
                if pic is None:
                    continue
                safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
                path = save_png(pic, out / f"grid_{safe}.png")
                typer.echo(f"wrote {path} (left: degraded input, right: after the pipeline)" if pipe is not None
                           else f"wrote {path}")
