"""scripts/vat_label_audit.py: where VaT's classification pseudo-labels come from, how often they are right,
and each fixed blend's confidence against its accuracy."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

from taskbridge.evaluation import evaluate_classification
from taskbridge.evaluation.classification import degraded_arrays
from taskbridge.evaluation.datasets import ClassificationArrays, load_cifar_npz
from taskbridge.methods.vat import VaT
from taskbridge.registry import DEGRADATIONS, RESTORERS, TASKS

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "vat_label_audit.py"


@pytest.fixture(scope="module")
def case(shared_data: Path) -> tuple[VaT, ClassificationArrays, torch.Tensor]:
    data = load_cifar_npz(shared_data / "cifar10_test_subset")
    pool = ClassificationArrays(data.images[:96], data.labels[:96], data.class_names)
    method = VaT(task=TASKS.create("cifar-resnet20"), restorer=RESTORERS.create("sci-medium"),
                 translator={"width": 4}, nuq=None).eval()
    return method, pool, degraded_arrays(pool, DEGRADATIONS.create("lowlight")).images, data.images[200:296]


def test_labels_split_by_their_source_view_and_the_blend_ends_are_the_plain_views(script: ModuleType, case) -> None:
    method, pool, dark, clean = case
    r = script.audit(method, pool, dark, clean, gates=(0.0, 0.5, 1.0), shares=[0.0])
    n_cert, acc_cert = r["certain"]
    (n_dark, acc_dark), (n_rest, acc_rest) = r["dark"], r["restored"]
    assert r["n"] == 96 and n_cert == n_dark + n_rest and 0 < n_dark < n_cert  # both views supply labels here
    assert acc_cert == pytest.approx((n_dark * acc_dark + n_rest * acc_rest) / n_cert)
    assert r["agree"][0] <= n_cert
    task = method.task
    plain = evaluate_classification(task, ClassificationArrays(dark, pool.labels, pool.class_names), None,
                                    progress=False)
    restored = evaluate_classification(task, ClassificationArrays(dark, pool.labels, pool.class_names),
                                       lambda x: method.restore(x).clamp(0, 1), progress=False)
    first, _, last = r["curve"]
    assert (first.gate, last.gate) == (0.0, 1.0)
    assert last.top1 == pytest.approx(plain["top1"]) and first.top1 == pytest.approx(restored["top1"])
    logits = task.raw(dark)
    assert last.confidence == pytest.approx(float(logits.softmax(-1).amax(-1).mean()), abs=1e-6)
    label, certain, _, _ = method.certain_class_labels([logits, task.raw(method.restore(dark).clamp(0, 1))])
    picked = -logits.log_softmax(-1)[certain].gather(1, label[certain, None])[:, 0]  # the loss written out
    assert last.loss == pytest.approx(float(picked.mean()), rel=1e-5)
    n_agree = r["agree"][0]  # the agree / disagree parts average back to the whole
    assert last.loss == pytest.approx((n_agree * last.loss_agree + (n_cert - n_agree) * last.loss_disagree) / n_cert,
                                      rel=1e-5)
    assert last.loss_mixup == pytest.approx(last.loss * n_cert / 96, rel=1e-5)  # share 0: no clean partner


def test_the_mixup_loss_at_a_full_clean_share_is_the_clean_partners_own(script: ModuleType, case) -> None:
    method, pool, dark, clean = case
    (blend,) = script.audit(method, pool, dark, clean, gates=(0.3,), shares=[1.0])["curve"]
    logits = method.task.raw(clean)
    label, certain, _, _ = method.certain_class_labels([logits])
    expected = -(logits.log_softmax(-1).gather(1, label[:, None])[:, 0] * certain).mean()
    assert blend.loss_mixup == pytest.approx(float(expected), rel=1e-5)
    shares = script.clean_shares(method)
    assert shares == script.clean_shares(method) and all(0 <= v <= 0.5 for v in shares)  # fixed draws, min(b, 1-b)


def test_no_certain_label_is_reported_not_divided_by_zero(script: ModuleType, case) -> None:
    method, pool, dark, clean = case
    method.conf_hi = 1.01
    try:
        r = script.audit(method, pool, dark, clean, gates=(0.4,), shares=[0.2])
    finally:
        method.conf_hi = 0.5
    assert r["certain"][0] == 0 and math.isnan(r["certain"][1])
    lines = script.report({"val": r})
    assert "| val | 96 | 0 (nan%)" in lines[2] and lines[-1].startswith("| 0.4 (most confident) (most accurate) | ")
    assert "| nan (nan / nan) | 0.000 |" in lines[-1]  # and no label: the mixup loss has nothing to pull


def test_a_run_that_is_not_a_classification_vat_is_one_line(script: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=str(tmp_path / "nothing")):
        script.run_pools(tmp_path / "nothing", ["val"], None)
