"""`evaluate_quality`: PSNR / SSIM / NIQE of the evaluation pipeline's outputs, on real coco8 / CIFAR images."""

from __future__ import annotations

import json
import math

import pytest
import torch

from taskbridge.data.io import read_image
from taskbridge.degrade.base import run_degradation
from taskbridge.evaluation import ClassificationArrays, DetectionFolder, evaluate_quality, load_cifar_npz
from taskbridge.evaluation.detection import degrade_photo
from taskbridge.evaluation.report import quality_table
from taskbridge.metrics.quality import NIQE, PSNR, SSIM
from taskbridge.registry import DEGRADATIONS

N_DET = 2


@pytest.fixture(scope="module")
def coco8(shared_data) -> DetectionFolder:
    return DetectionFolder(shared_data / "coco8", split="val")


def _direct(folder: DetectionFolder, degrade, seed: int, n: int = N_DET) -> dict[str, float]:
    """The metric classes applied by hand to the seeded degraded images (image i under seed + i)."""
    psnr, ssim, niqe = [], [], []
    for i in range(n):
        clean = read_image(folder.items[i][0])[None]
        deg = degrade_photo(degrade, clean[0], seed + i)[None]  # 8-bit, as a saved degraded photo
        psnr.append(float(PSNR()(deg, clean)))
        ssim.append(float(SSIM()(deg, clean)))
        niqe.append(float(NIQE()(deg)))
    return {"psnr": sum(psnr) / n, "ssim": sum(ssim) / n, "niqe": sum(niqe) / n}


def test_detection_lowlight_matches_metric_classes(coco8) -> None:
    deg = DEGRADATIONS.create("lowlight")
    res = evaluate_quality(coco8, None, degrade=deg, seed=5, limit=N_DET, progress=False)
    want = _direct(coco8, deg, 5)
    for k in ("psnr", "ssim", "niqe"):
        assert res[k] == pytest.approx(want[k], rel=1e-9), k
    assert res["num_images"] == N_DET and res["niqe_images"] == N_DET and res["niqe_skipped"] is None
    assert res["reference"] == "clean image before --degrade"
    assert res["settings"]["resolution"] == "original resolution (detection)"
    assert torch.equal(coco8[0].image, read_image(coco8.items[0][0]))  # the image evaluate_detection degrades
    # another seed darkens differently, so the seeding reaches the scored images
    other = evaluate_quality(coco8, None, degrade=deg, seed=6, limit=N_DET, progress=False)
    assert other["psnr"] != pytest.approx(res["psnr"], rel=1e-6)


def test_identity_pipeline_equals_none_and_grey_pipeline_scores_lower(coco8) -> None:
    deg = DEGRADATIONS.create("lowlight", gamma=1.5)  # mild: closer to the clean image than flat grey is
    base = evaluate_quality(coco8, None, degrade=deg, limit=N_DET, progress=False)
    same = evaluate_quality(coco8, lambda x: x.clone(), degrade=deg, limit=N_DET, progress=False)
    for k in ("psnr", "ssim", "niqe"):
        assert same[k] == pytest.approx(base[k], rel=1e-12), k
    grey = evaluate_quality(coco8, lambda x: torch.full_like(x, 0.5), degrade=deg, limit=N_DET, progress=False)
    assert grey["psnr"] < base["psnr"] - 1.0 and grey["ssim"] < base["ssim"]
    # NIQE is undefined on a flat image: skipped and counted, not a crash
    assert grey["niqe"] is None and grey["niqe_images"] == 0 and "2 image(s)" in grey["niqe_skipped"]


def test_without_degradation_only_niqe(coco8) -> None:
    res = evaluate_quality(coco8, None, limit=1, progress=False)
    assert res["psnr"] is None and res["ssim"] is None and res["reference"] is None
    assert res["niqe"] == pytest.approx(float(NIQE()(read_image(coco8.items[0][0])[None])), rel=1e-9)
    assert math.isfinite(res["niqe"]) and res["niqe_images"] == 1


def test_pipeline_must_keep_the_size(coco8) -> None:
    deg = DEGRADATIONS.create("lowlight")
    with pytest.raises(ValueError, match="keep"):
        evaluate_quality(coco8, lambda x: x[..., :64, :64], degrade=deg, limit=1, progress=False)


def test_classification_per_batch_seeding_and_no_niqe(shared_data) -> None:
    full = load_cifar_npz(shared_data / "cifar10_test_subset")
    ds = ClassificationArrays(full.images[:80], full.labels[:80], full.class_names)
    deg = DEGRADATIONS.create("lowlight")
    res = evaluate_quality(ds, None, degrade=deg, seed=3, limit=40, batch_size=16, progress=False)
    psnr, ssim = [], []
    for b, s in enumerate(range(0, 40, 16)):  # batches of 16, 16, 8 under seeds 3, 4, 5
        clean = ds.images[s: min(s + 16, 40)]
        x = run_degradation(deg, clean, 3 + b)
        psnr += PSNR()(x, clean).tolist()
        ssim += SSIM()(x, clean).tolist()
    assert res["num_images"] == 40
    assert res["psnr"] == pytest.approx(sum(psnr) / 40, rel=1e-9)
    assert res["ssim"] == pytest.approx(sum(ssim) / 40, rel=1e-9)
    assert res["niqe"] is None and res["niqe_images"] == 0 and "96x96" in res["niqe_skipped"]
    assert res["settings"]["resolution"] == "native (classification)"
    table = quality_table({"input+lowlight": {"quality": res}})
    assert "input+lowlight" in table and "n/a" in table and "NIQE skipped" in table


def test_cli_quality_table_and_json(shared_data, tmp_path) -> None:
    from typer.testing import CliRunner

    from taskbridge.cli import app

    r = CliRunner().invoke(app, ["evaluate", "--task", "yolov5n", "--data", str(shared_data / "coco8"), "--split", "val",
                                 "--degrade", "lowlight", "--quality", "--limit", "2", "--grid", "0",
                                 "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    q = json.loads((tmp_path / "results.json").read_text())["runs"]["input+lowlight"]["quality"]
    assert q["num_images"] == 2 and q["niqe_images"] == 2
    assert q["psnr"] > 0 and 0 < q["ssim"] < 1 and q["niqe"] > 0
    assert "PSNR" in r.output and "NIQE" in (tmp_path / "table.txt").read_text()
