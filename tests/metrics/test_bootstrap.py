"""Bootstrap over images: each resample scores exactly like the resampled list, and pairing is never faked."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from taskbridge.evaluation.report import bootstrap_table
from taskbridge.metrics.bootstrap import (
    bootstrap_top1,
    bootstrap_voc_map,
    images_key,
    paired_difference,
    resample_indices,
    summary,
)
from taskbridge.metrics.detection import ImageBoxes, voc_detection_ap


def random_set(seed: int, n_images: int = 9) -> tuple[list[ImageBoxes], list[ImageBoxes]]:
    """Boxes near the ground truth or anywhere, coarse scores (ties), some difficult boxes, some empty images."""
    g = torch.Generator().manual_seed(seed)
    preds, gts = [], []
    for _ in range(n_images):
        m, n = int(torch.randint(0, 5, (1,), generator=g)), int(torch.randint(0, 12, (1,), generator=g))
        xy = torch.rand(m, 2, generator=g) * 50
        gb = torch.cat([xy, xy + 5 + torch.rand(m, 2, generator=g) * 20], 1)
        xy2 = torch.rand(n, 2, generator=g) * 50
        pb = torch.cat([xy2, xy2 + 5 + torch.rand(n, 2, generator=g) * 20], 1)
        if m and n:
            k, near = torch.randint(0, m, (n,), generator=g), torch.rand(n, generator=g) < 0.6
            pb[near] = gb[k[near]] + torch.randn(int(near.sum()), 4, generator=g)
        scores = (torch.rand(n, generator=g) * 10).round() / 10
        preds.append(ImageBoxes(pb, torch.randint(0, 3, (n,), generator=g), scores))
        gts.append(ImageBoxes(gb, torch.randint(0, 3, (m,), generator=g), difficult=torch.rand(m, generator=g) < 0.15))
    return preds, gts


@pytest.mark.parametrize("eleven_point", [False, True])
def test_each_resample_scores_like_the_resampled_list(eleven_point: bool) -> None:
    preds, gts = random_set(0)
    samples = bootstrap_voc_map(preds, gts, 3, 40, seed=5, use_11_point=eleven_point)
    for idx, value in zip(resample_indices(len(preds), 40, seed=5), samples, strict=True):
        direct = voc_detection_ap([preds[i] for i in idx], [gts[i] for i in idx], ["a", "b", "c"],
                                  use_11_point=eleven_point)["map"]
        assert (math.isnan(direct) and math.isnan(value)) or value == pytest.approx(direct, abs=1e-12)
    assert np.nanstd(samples) > 0  # the set is not degenerate: the resamples do move the score


def test_resamples_are_shared_by_seed_and_count_only() -> None:
    a, b = resample_indices(7, 20, seed=3), resample_indices(7, 20, seed=3)
    assert a.shape == (20, 7) and (a == b).all() and a.min() >= 0 and a.max() <= 6
    assert not (a == resample_indices(7, 20, seed=4)).all()
    with pytest.raises(ValueError, match="no images"):
        resample_indices(0, 5)


def test_top1_resamples_are_means_of_the_drawn_images() -> None:
    correct = np.array([1, 0, 1, 1, 0, 0, 1, 1])
    samples = bootstrap_top1(correct, 30, seed=2)
    expected = correct[resample_indices(8, 30, seed=2)].mean(axis=1)
    assert np.array_equal(samples, expected)


def test_summary_and_pairing() -> None:
    key = images_key(["a.jpg", "b.jpg"])
    base = summary(np.array([0.4, 0.5, 0.6, float("nan")]), 0, key)
    assert base["resamples"] == 4 and base["se"] == pytest.approx(0.1) and base["samples"][3] != base["samples"][3]
    better = summary(np.array([0.5, 0.55, 0.7, 0.2]), 0, key)
    d = paired_difference(base, better)
    assert d is not None and d["mean"] == pytest.approx((0.1 + 0.05 + 0.1) / 3) and d["p_better"] == 1.0
    # NaN samples come back from JSON as null and still pair
    assert paired_difference({**base, "samples": [0.4, 0.5, 0.6, None]}, better)["mean"] == pytest.approx(d["mean"])
    # not resampled alike: never paired
    assert paired_difference(base, summary(np.array([0.5, 0.55, 0.7, 0.2]), 1, key)) is None
    assert paired_difference(base, summary(np.array([0.5, 0.55, 0.7, 0.2]), 0, images_key(["a.jpg", "c.jpg"]))) is None
    assert paired_difference(base, summary(np.array([0.5, 0.55, 0.7]), 0, key)) is None


def test_table_reports_paired_difference_from_the_first_row() -> None:
    key = images_key(["x"])
    rows = {"input": {"map50": 0.40, "num_images": 30, "bootstrap": {"map50": summary(np.array([0.3, 0.4, 0.5]), 0, key)}},
            "translator": {"map50": 0.45, "num_images": 30,
                           "bootstrap": {"map50": summary(np.array([0.35, 0.3, 0.6]), 0, key)}}}
    table = bootstrap_table(rows)
    line = next(s for s in table.splitlines() if s.startswith("translator"))
    assert "+0.050" in line and "66.7%" in line  # observed difference; better in 2 of 3 resamples
    assert bootstrap_table({"input": {"map50": 0.4, "num_images": 3}}) == ""
