"""scripts/vat_det_label_audit.py: the fusion flow's loss on constant blends, on real foggy crops."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

from taskbridge.engine.probe import only_term, probe_trainer, training_batches
from taskbridge.methods import vat as vat_module
from taskbridge.uncertainty.pseudo_labels import predict_views

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "vat_det_label_audit.py"
RECIPE = REPO / "recipes" / "dehaze-det-vat-learn-gateonly.yaml"


def cheap(shared_data: Path) -> list[str]:
    """The fog recipe on two 160 px crops per batch, without the NUQ fit (and the conf_hi calibration on it)."""
    return [f"data.root={shared_data}", "data.batch_size=2", "method.nuq_fit=null", "method.conf_hi_quantile=null",
            "train.device=cpu", "method.translator={type: vat, width: 8, global_residual: true, out_init_std: 1.0e-3}"]


def test_patched_replaces_on_the_instance_and_restores(script: ModuleType) -> None:
    net = torch.nn.Linear(2, 2)
    net.mode = "kept"
    with script.patched(net, forward=lambda x: x * 0, mode="changed"):
        assert net.mode == "changed" and torch.equal(net(torch.ones(1, 2)), torch.zeros(1, 2))
    assert net.mode == "kept" and "forward" not in vars(net)  # the class's forward again
    assert net(torch.ones(1, 2)).shape == (1, 2)


@pytest.mark.filterwarnings("ignore:VaT. no NUQ given")
def test_a_patched_constant_blend_is_the_loss_of_a_translator_whose_gate_is_that_constant(
        script: ModuleType, shared_data: Path, tmp_path: Path) -> None:
    trainer = probe_trainer(RECIPE, cheap(shared_data), tmp_path)
    assert script.label_folder(trainer) == shared_data / "dawn_fog" / "yolo_labels"  # under the recipe's data.root
    method = trainer.method.eval()
    batch = next(training_batches(trainer, 1))
    with torch.no_grad():
        patched_nomix, obj = script.fusion_loss(method, batch, 0.3, None)
        patched_mix, _ = script.fusion_loss(method, batch, 0.3, 0.4)
        assert "fuse" not in vars(method) and "_shares" not in vars(method) and method.mixup == "uncertainty"
        assert "loss" not in vars(method.task) and 0 < obj < patched_nomix  # the task's own loss again
        fusion = method.T_A.fusion  # the real translator with its gate set to 0.3 everywhere
        fusion.conv_out.weight.zero_()
        fusion.conv_out.bias.fill_(math.log(0.3 / 0.7))
        method.mixup = "none"
        with only_term(method, "fusion"):
            real = float(method.training_step(batch, 0)["mle/fusion"])
    assert math.isfinite(patched_nomix) and patched_nomix == pytest.approx(real, rel=1e-5)
    assert patched_mix != pytest.approx(patched_nomix, rel=1e-3)  # the clean partner enters the mixed loss


@pytest.mark.filterwarnings("ignore:VaT. no NUQ given")
@pytest.mark.filterwarnings("ignore:VaT. no NUQ given")
def test_the_pseudo_labels_are_predicted_once_per_batch_for_every_blend(script: ModuleType, shared_data: Path,
                                                                        tmp_path: Path) -> None:
    method = probe_trainer(RECIPE, cheap(shared_data), tmp_path).method.eval()
    batch = next(training_batches(probe_trainer(RECIPE, cheap(shared_data), tmp_path / "b"), 1))
    calls: list[int] = []

    def counting(task, views, *args, **kwargs):
        calls.append(len(views))
        return predict_views(task, views, *args, **kwargs)

    with torch.no_grad():
        plain = script.fusion_loss(method, batch, 0.3, None)
        r = method.restore(batch["A"])
        with script.patched(method, restore=lambda _: r), \
                script.patched(vat_module, predict_views=script.once_per_batch(counting)):
            cached = script.fusion_loss(method, batch, 0.3, None)
            other = script.fusion_loss(method, batch, 0.7, 0.4)
    assert calls == [3]  # B, degraded, restored: once for both losses
    assert cached == plain and other != cached  # the same loss as without the cache
    assert vat_module.predict_views is predict_views


def test_the_report_counts_real_labels_and_scores_each_blend(script: ModuleType, shared_data: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "audit.json"
    rc = script.main([str(RECIPE), *cheap(shared_data), "--batches", "1", "--gates", "0", "1", "--shares", "1",
                      "--labels", str(shared_data / "dawn_fog" / "yolo_labels"), "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    labels = report["labels"]
    certain = sum(n for n, _ in labels["certain"].values())
    assert labels["truth"] > 0 and labels["candidates"] >= certain + labels["uncertain"]
    assert all(0 <= right <= n for n, right in [*labels["certain"].values(), *labels["kept"].values()])
    assert sum(n for n, _ in labels["kept"].values()) == certain  # each certain box counted once by whose box it is
    assert labels["kept"]["consensus"] == [0, 0]  # det_labels union: every label is one view's box
    assert [c["gate"] for c in report["curve"]] == [0.0, 1.0]
    assert all(0 <= c["map50"] <= 1 and 0 < c["obj_nomix"] < c["loss_nomix"] for c in report["curve"])
    text = capsys.readouterr().out
    assert "| 0" in text and "mAP50 on the crops" in text and "best mAP50" in text


@pytest.mark.filterwarnings("ignore:VaT. no NUQ given")
def test_a_classification_recipe_is_refused_in_one_line(script: ModuleType, shared_data: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    for labels in ([], ["--labels", str(shared_data / "dawn_fog" / "yolo_labels")]):  # no A photos' folder to look beside
        rc = script.main([str(REPO / "recipes" / "lowlight-cls-vat.yaml"), f"data.root={shared_data}",
                          "method.nuq_fit=null", "train.device=cpu", "--batches", "1", *labels])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "scripts/vat_label_audit.py" in err


@pytest.mark.filterwarnings("ignore:VaT. no NUQ given")
def test_a_missing_label_folder_is_one_line_naming_it(script: ModuleType, shared_data: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rc = script.main([str(RECIPE), *cheap(shared_data), "--batches", "1", "--labels", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "nowhere" in err


@pytest.mark.filterwarnings("ignore:VaT. no NUQ given")
def test_a_malformed_label_file_is_one_line_naming_it_and_left_untouched(script: ModuleType, shared_data: Path,
                                                                         tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    for src in (shared_data / "dawn_fog" / "yolo_labels").glob("*.txt"):
        (labels / src.name).write_text("3 0.5 not-a-number 0.1 0.1\n")
    before = {p.name: p.read_bytes() for p in labels.iterdir()}
    rc = script.main([str(RECIPE), *cheap(shared_data), "--batches", "1", "--gates", "0", "--shares", "1",
                      "--labels", str(labels)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and str(labels) in err and ".txt" in err
    assert {p.name: p.read_bytes() for p in labels.iterdir()} == before
