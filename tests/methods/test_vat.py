"""VaT method: CPU smoke runs (detection + classification), empty pseudo-labels, ablation switches.

A tiny fake YOLO-like detector (one strided conv head, raw (5+nc) vectors, weighted objectness /
class / box loss with soft targets and a background weight) keeps the detection tests fast and
deterministic; the real yolov5n and CIFAR ResNet20 run on real shared images.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from taskbridge.checkpoint import trainable_state
from taskbridge.config import build
from taskbridge.data.io import list_images, read_image
from taskbridge.methods.vat import VaT
from taskbridge.registry import METHODS, TASKS
from taskbridge.registry import TRANSLATORS as TRANSLATORS_REG
from taskbridge.tasks.base import Detections, DetectionTargets, DetectionTask
from taskbridge.uncertainty.nuq import NUQ, fit_nuq_from_detector
from taskbridge.uncertainty.pseudo_labels import found_by_every_view, fuse_views, predict_views, union_nms

NC = 3


class FakeDetector(DetectionTask):
    """YOLO-like single-level head: xy = (2 s - 0.5 + grid) * stride, wh = (2 s)^2 * anchor."""

    def __init__(self, obj_bias: float = 2.0, stride: int = 8) -> None:
        super().__init__()
        self.stride, self.anchor = stride, float(2 * stride)
        self.class_names = [f"c{i}" for i in range(NC)]
        self.head = nn.Conv2d(3, 5 + NC, stride, stride=stride)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) * 0.3)
            self.head.bias.zero_()
            self.head.bias[4] = obj_bias
            self.head.bias[5] = 2.0
        self.calls: list[DetectionTargets] = []
        self.freeze()

    def raw(self, images: Tensor) -> Tensor:
        if images.shape[-1] % self.stride or images.shape[-2] % self.stride:
            raise ValueError("size not a multiple of stride")
        return self.head(images).permute(0, 2, 3, 1)[:, None]  # [B, 1, ny, nx, 5 + nc]

    def predict(self, images: Tensor, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
                multi_label: bool = False, return_features: bool = False) -> list[Detections]:
        with torch.no_grad():
            p = self.raw(images)[:, 0]
            b, ny, nx, _ = p.shape
            s = p.sigmoid()
            gy, gx = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
            cx = (s[..., 0] * 2 - 0.5 + gx) * self.stride
            cy = (s[..., 1] * 2 - 0.5 + gy) * self.stride
            w, h = (s[..., 2] * 2) ** 2 * self.anchor, (s[..., 3] * 2) ** 2 * self.anchor
            boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).reshape(b, -1, 4)
            cls_p, lab = s[..., 5:].max(-1)
            conf = (s[..., 4] * cls_p).reshape(b, -1)
            out = []
            for i in range(b):
                k = (conf[i] >= conf_thres).nonzero().squeeze(1)
                k = k[batched_nms(boxes[i, k], conf[i, k], lab.reshape(b, -1)[i, k], iou_thres)][:max_det]
                out.append(Detections(boxes[i, k], conf[i, k], lab.reshape(b, -1)[i, k],
                                      p.reshape(b, -1, 5 + NC)[i, k] if return_features else None,
                                      s[..., 4].reshape(b, -1)[i, k], cls_p.reshape(b, -1)[i, k]))
            return out

    def loss(self, raw: Tensor, targets: DetectionTargets, background_weight: float | None = None):
        self.calls.append(targets)
        p = raw[:, 0]
        b, ny, nx, _ = p.shape
        gi = (targets.boxes[:, 0] * nx).long().clamp(0, nx - 1)
        gj = (targets.boxes[:, 1] * ny).long().clamp(0, ny - 1)
        tobj = torch.zeros(b, ny, nx)
        wobj = torch.full((b, ny, nx), 1.0 if background_weight is None else background_weight)
        tobj[targets.batch_index, gj, gi] = torch.where(targets.soft, targets.conf, 1.0)
        wobj[targets.batch_index, gj, gi] = targets.weights
        lobj = (F.binary_cross_entropy_with_logits(p[..., 4], tobj, reduction="none") * wobj).mean()
        hard = ~targets.soft
        ps = p[targets.batch_index[hard], gj[hard], gi[hard]]
        w = targets.weights[hard]
        lcls = (F.cross_entropy(ps[:, 5:], targets.labels[hard], reduction="none") * w).sum() / max(1, len(w))
        lbox = ((ps[:, :2].sigmoid() - 0.5).abs().sum(1) * w).sum() / max(1, len(w))
        total = (lobj + lcls + lbox) * b
        return total, {"obj": lobj.detach(), "cls": lcls.detach(), "box": lbox.detach()}


TASKS.register("test-vat-fake-detector")(FakeDetector)


class Darken(nn.Module):
    """A frozen 'restorer' that brightens a darkened image (stands in for SCI/AOD-Net)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(0, 1) ** 0.5


def street_batch(shared_data: Path, n: int, size: int, offset: int = 0) -> Tensor:
    paths = list_images(shared_data / "coco256_street" / "images" / "val2017")[offset:offset + n]
    return torch.cat([F.interpolate(read_image(p)[None], size=(size, size), mode="bilinear", align_corners=False)
                      for p in paths]).clamp(0, 1)


def run_steps(method: VaT, batches: list[dict], steps: int = 5) -> list[dict[str, Tensor]]:
    opt = torch.optim.AdamW(method.optim_groups()["translator"], lr=1e-3, weight_decay=1e-4)
    logs = []
    for step in range(steps):
        out = method.training_step(batches[step % len(batches)], step)
        loss = out["loss/translator"]
        assert loss.ndim == 0 and math.isfinite(loss.item())
        opt.zero_grad()
        loss.backward()
        if step == 0:
            missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
            assert not missing, f"parameters without gradient: {missing[:5]}"
        opt.step()
        logs.append(out)
    return logs


@pytest.fixture(scope="module")
def street(shared_data: Path) -> Tensor:
    return street_batch(shared_data, 8, 64)


def test_detection_smoke_fake_detector(street: Tensor) -> None:
    task = FakeDetector()
    clean = street[:4]
    nuq = fit_nuq_from_detector(task, street[4:], split="coco256_street/val2017[4:8]", batch_size=2)
    assert nuq.config.split.startswith("coco256") and nuq.feature_dim == 5 + NC
    method = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=nuq)
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("T_A.", "T_B.")) for n in trainable)
    batches = [{"A": 0.3 * clean[:2], "B": clean[2:4]}, {"A": 0.3 * clean[2:4], "B": clean[:2]}]
    logs = run_steps(method, batches)
    for key in ("loss/translator", "cyc/total", "mle/fusion", "mle/translation", "mle/hq", "gate/mean"):
        assert key in logs[0], key
    assert logs[0]["labels/hq_certain"] > 0
    # every flow target went through the task loss with weights in the accepted range; the first call is
    # the fusion flow: degraded-side weights (1 - a) * u', clean-side a * u', u' in [0.5, 0.99) (official)
    assert task.calls and all(float(t.weights.max()) <= 1.0 for t in task.calls if len(t))
    a = float(logs[0]["mix/clean_share"])
    w = task.calls[0].weights
    lq_side = ((w / (1 - a)) >= 0.5 - 1e-6) & ((w / (1 - a)) < 0.99)
    hq_side = ((w / a) >= 0.5 - 1e-6) & ((w / a) < 0.99)
    assert bool((lq_side | hq_side).all()) and 0 <= a <= 0.5
    x = 0.3 * clean[:2]
    out = method.translate(x)
    with torch.no_grad():  # by hand: restore, fuse with the degraded input, transform, clamp
        fused, _ = method.T_A.fuse(Darken()(x).clamp(0, 1), x)
        want = method.T_A.transform(fused).clamp(0, 1)
    assert torch.equal(out, want)
    vis = method.visuals(batches[0])
    assert vis["gate"].shape == clean[:2].shape


def test_validation_probe_reports_the_gate_over_what_ran_inside_it(street: Tensor) -> None:
    method = VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4}, nuq=None).eval()
    photos = [0.3 * street[:2], 0.5 * street[2:5]]
    with torch.no_grad():
        method.translate(street[5:6])  # outside the probe: not counted
        with method.validation_probe() as stats:
            assert stats == {}  # filled on exit
            for x in photos:
                method.translate(x)
        gates = torch.cat([method.T_A.fuse(Darken()(x).clamp(0, 1), x)[1].flatten() for x in photos]).double()
    assert not method.T_A.fusion._forward_hooks  # the hook is gone
    assert stats["gate_mean"] == pytest.approx(float(gates.mean()), rel=1e-9)
    assert stats["gate_std"] == pytest.approx(float(gates.std(unbiased=False)), rel=1e-6)
    ungated = VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4}, nuq=None, use_gfm=False)
    with ungated.validation_probe() as none:
        ungated.translate(photos[0])
    assert none == {}


def test_empty_pseudo_labels_keep_cycle_loss(street: Tensor) -> None:
    task = FakeDetector(obj_bias=-30.0)  # never detects anything
    nuq = NUQ(bandwidth=1.0).fit(torch.randn(50, 5 + NC), torch.rand(50))
    method = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=nuq, augment=True)
    logs = run_steps(method, [{"A": 0.3 * street[:2], "B": street[2:4]}], steps=2)
    first = logs[0]
    assert not task.calls  # no detection term ran
    assert "mle/fusion" not in first and first["labels/hq_certain"] == 0 and first["labels/fusion_certain"] == 0
    torch.testing.assert_close(first["loss/translator"].detach(), first["cyc/total"])


def test_agreeing_boxes_stay_certain_and_the_others_become_uncertain(street: Tensor) -> None:
    """det_labels "agree": of the fusion flow's union of the degraded and restored views, a certain box stays
    certain only where both views find it (same class, IoU >= 0.5); the others are kept as uncertain labels."""
    task, batch = FakeDetector(), {"A": 0.3 * street[:4], "B": street[4:8]}
    logs = {}
    for mode in ("union", "agree"):
        torch.manual_seed(0)
        method = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=None, mixup="none", det_labels=mode)
        logs[mode] = method.training_step(batch, 0)
    a = batch["A"]
    views = predict_views(task, [a, Darken()(a).clamp(0, 1)], method.pseudo_conf, method.pseudo_iou)
    union = union_nms(views, method.pseudo_iou)
    above = torch.cat([d.scores for d in union]) > method.conf_hi
    found = torch.cat(found_by_every_view(union, views, 0.5))
    assert 0 < int((above & found).sum()) < int(above.sum())  # the batch has both kinds
    assert int(logs["union"]["labels/fusion_certain"]) == int(above.sum())
    assert int(logs["agree"]["labels/fusion_certain"]) == int((above & found).sum())
    kept = {m: int(logs[m]["labels/fusion_certain"] + logs[m]["labels/fusion_uncertain"]) for m in logs}
    assert kept["agree"] == kept["union"]  # nothing dropped
    torch.manual_seed(0)  # "fuse": certain where the views' consensus score is
    fuse = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=None, mixup="none", det_labels="fuse")
    consensus = torch.cat([d.scores for d in fuse_views(union, views, 0.5)]) > method.conf_hi
    assert int(fuse.training_step(batch, 0)["labels/fusion_certain"]) == int(consensus.sum()) < int(above.sum())
    with pytest.raises(ValueError, match="det_labels: 'agree' is for detection"):
        VaT(task=TASKS.create("cifar-resnet20"), restorer=Darken(), translator={"width": 4}, nuq=None, det_labels="agree")
    with pytest.raises(ValueError, match="det_labels: 'all' is not one of union, agree, fuse"):
        VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=None, det_labels="all")


def test_build_by_name_and_ablation_switches(street: Tensor) -> None:
    batch = {"A": 0.3 * street[:2], "B": street[2:4]}
    with pytest.warns(UserWarning, match="no NUQ"):
        m = METHODS.create("vat", task={"type": "test-vat-fake-detector"}, restorer={"type": "identity"},
                           translator={"width": 4}, use_gfm=False, use_cycle=False, mixup="none", weighting="inverse", nuq=None)
    assert m.T_A.fusion is None and not m.flows["fusion"]
    out = m.training_step(batch, 0)
    assert "cyc/total" not in out and "mle/fusion" not in out and "mle/translation" in out
    assert out["mix/clean_share"] == 0
    m2 = build(METHODS, {"type": "vat", "task": {"type": "test-vat-fake-detector"}, "translator": {"width": 4},
                         "use_mle": False, "mixup": "plain", "mixup_sampler": "paper"}, "method")
    out2 = m2.training_step(batch, 0)
    assert set(k for k in out2 if k.startswith("mle/")) == set()
    with pytest.raises(ValueError, match="mixup"):
        VaT(task=FakeDetector(), mixup="cutmix")
    with pytest.raises(FileNotFoundError, match="nuq_fit.folder"):
        VaT(task=FakeDetector(), nuq_fit={"folder": "/nonexistent", "split": "x"})
    with pytest.raises(ValueError, match="equal shape"):
        m.training_step({"A": street[:2], "B": street[:1]}, 0)


def test_nuq_fit_on_the_fly_from_folder(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "coco256_street" / "images" / "train2017"
    m = VaT(task=FakeDetector(), translator={"width": 4}, nuq_fit={"folder": str(folder), "split": "coco256_street/train2017",
                                                    "max_images": 6, "size": 32, "save": str(tmp_path / "n.st")})
    assert m.nuq is None  # lazy: building for evaluation does not fit
    m.training_step({"A": torch.rand(1, 3, 32, 32), "B": torch.rand(1, 3, 32, 32)}, 0)
    assert m.nuq is not None and m.nuq.config.split == "coco256_street/train2017"
    assert NUQ.load(tmp_path / "n.st").config == m.nuq.config


def test_classification_smoke_cifar_resnet(shared_data: Path) -> None:
    data = np.load(shared_data / "cifar10_test_subset" / "cifar10_test_first1017.npz")
    imgs = torch.from_numpy(data["images"][:40]).permute(0, 3, 1, 2).float() / 255
    task = TASKS.create("cifar-resnet20")
    from taskbridge.uncertainty.nuq import fit_nuq_from_classifier

    nuq = fit_nuq_from_classifier(task, imgs[8:40], split="cifar10_test_subset[8:40]", k=5)
    method = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=nuq, mixup="umix", umix_c=1.0, umix_eta=100.0)
    dark = 0.5 * imgs[:8] ** 2.2  # the project's darkening (REFERENCE §6)
    batches = [{"A": dark[:4], "B": imgs[4:8]}, {"A": dark[4:8], "B": imgs[:4]}]
    logs = run_steps(method, batches)
    assert "mle/hq" in logs[0] and logs[0]["labels/hq_certain"] > 0
    assert method.translate(dark[:2]).shape == (2, 3, 32, 32)
    method.conf_hi = 1.01  # no certain label anywhere: every flow is skipped, the cycle loss remains
    out = method.training_step(batches[0], 5)
    assert not any(k.startswith("mle/") and k != "mle/total" for k in out) and out["labels/hq_certain"] == 0
    torch.testing.assert_close(out["loss/translator"].detach(), out["cyc/total"])


def test_classification_smoke_clip_zero_shot(shared_data: Path, tiny_clip_cfg: dict) -> None:
    """The CLIP setting of the paper, on a tiny random CLIP (no weights offline): the same objective runs,
    pseudo-labels pass the filter once the thresholds admit near-uniform scores, and T_A gets gradients."""
    pytest.importorskip("open_clip", reason="open_clip not installed (optional extra 'clip')")
    from taskbridge.uncertainty.nuq import fit_nuq_from_classifier

    torch.manual_seed(0)
    data = np.load(shared_data / "cifar10_test_subset" / "cifar10_test_first1017.npz")
    imgs = torch.from_numpy(data["images"][:24]).permute(0, 3, 1, 2).float() / 255
    task = TASKS.create("clip-zero-shot", class_names=["airplane", "automobile", "bird"], model_cfg=tiny_clip_cfg)
    nuq = fit_nuq_from_classifier(task, imgs[8:24], split="cifar10_test_subset[8:24]", k=3)
    method = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=nuq, conf_hi=0.0, conf_lo=0.0)
    dark = 0.5 * imgs[:8] ** 2.2
    logs = run_steps(method, [{"A": dark[:4], "B": imgs[4:8]}])
    assert logs[0]["labels/hq_certain"] > 0
    assert any(k.startswith("mle/") and k != "mle/total" for k in logs[0])
    assert method.translate(dark[:2]).shape == (2, 3, 32, 32)


def test_detection_smoke_real_yolov5n(shared_data: Path) -> None:
    if "yolov5n" not in TASKS:
        pytest.skip("yolov5n task not available")
    task = TASKS.create("yolov5n")
    imgs = street_batch(shared_data, 6, 128)
    nuq = fit_nuq_from_detector(task, imgs[2:], split="coco256_street/val2017[2:6]", batch_size=4)
    assert nuq.feature_dim == 85
    method = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=nuq, pseudo_views="paper")
    logs = run_steps(method, [{"A": 0.3 * imgs[:2], "B": imgs[2:4]}], steps=2)
    assert math.isfinite(logs[-1]["loss/translator"].item()) and "mle/hq" in logs[0]


# ---------------------------------------------------------------- issue 15 levers (each a recipe option)


def test_small_noise_last_conv_gives_the_inner_layers_gradient_at_step_0(street: Tensor) -> None:
    def inner_grad(std: float) -> tuple[float, float]:
        torch.manual_seed(0)
        t = build(TRANSLATORS_REG, {"type": "vat", "width": 4, "global_residual": True, "out_init_std": std,
                                    "gated": False}, "t")
        x = street[:2]
        y = t(x)
        (y - x.flip(-1)).abs().mean().backward()  # any loss that wants a change
        return float(t.transform.embed.weight.grad.abs().sum()), float((y - x).abs().max())

    zero_grad, zero_change = inner_grad(0.0)
    noise_grad, noise_change = inner_grad(1e-3)
    assert zero_grad == 0.0 and zero_change == 0.0  # the exact identity: inner layers get nothing
    assert noise_grad > 0.0 and 0.0 < noise_change < 0.05  # next to the identity, and every layer learns


def test_param_groups_give_the_gate_its_own_learning_rate(street: Tensor) -> None:
    from taskbridge.config import ConfigError
    from taskbridge.engine.optim import build_optimizer

    m = VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4}, nuq=None)
    params, subsets = m.optim_groups()["translator"], m.param_subsets()["translator"]
    opt = build_optimizer(params, {"type": "adamw", "lr": 1e-4, "param_groups": {"gate": {"lr": 1e-2}}},
                          "optim.translator", subsets)
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    assert by_lr[1e-2] == {id(p) for p in m.T_A.fusion.parameters()}
    assert by_lr[1e-4] == {id(p) for p in params} - by_lr[1e-2]
    with pytest.raises(ConfigError, match=r"optim.translator.param_groups: no parameter subset gates; .*gate"):
        build_optimizer(params, {"type": "adamw", "lr": 1e-4, "param_groups": {"gates": {"lr": 1e-2}}},
                        "optim.translator", subsets)


def test_param_groups_at_lr_0_are_held_exactly(street: Tensor) -> None:
    """A subset at lr 0 is frozen (no gradient, no step: eta_min and weight decay cannot move it); a control
    whose every subset is at lr 0 keeps its groups (one step at lr 0, as before)."""
    from taskbridge.engine.optim import build_optimizer, build_scheduler

    m = VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4}, nuq=None)
    params, subsets = m.optim_groups()["translator"], m.param_subsets()["translator"]
    spec = {"type": "adamw", "lr": 1e-3, "weight_decay": 1e-2,
            "param_groups": {"gate": {"lr": 3e-3}, "transform": {"lr": 0.0}, "backward": {"lr": 0.0}}}
    opt = build_optimizer(params, spec, "optim.translator", subsets)
    gate = {id(p) for p in m.T_A.fusion.parameters()}
    assert [{id(p) for p in g["params"]} for g in opt.param_groups] == [gate]
    held = [p for p in params if id(p) not in gate]
    assert held and not any(p.requires_grad for p in held) and all(p.requires_grad for p in m.T_A.fusion.parameters())
    sched, _ = build_scheduler(opt, {"type": "cosine_warm_restarts", "T_0": 10, "eta_min": 1e-3}, 10)
    before = [p.detach().clone() for p in params]
    for _ in range(3):
        opt.zero_grad()
        m.training_step({"A": 0.3 * street[:2], "B": street[2:4]}, 0)["loss/translator"].backward()
        opt.step()
        sched.step()
    assert all(p.grad is None for p in held)
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True) if id(p) not in gate)
    assert any(not torch.equal(p, b) for p, b in zip(params, before, strict=True) if id(p) in gate)
    from taskbridge.checkpoint import load_trainable_state, trainable_state

    state = trainable_state(m)  # the held parts are still the run's network: saved, and loaded back
    assert any(k.startswith("T_A.transform.") for k in state) and any(k.startswith("T_B.") for k in state)
    load_trainable_state(VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4}, nuq=None), state, "run")

    fresh = VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4}, nuq=None)
    params, subsets = fresh.optim_groups()["translator"], fresh.param_subsets()["translator"]
    zero = {"gate": {"lr": 0.0}, "transform": {"lr": 0.0}, "backward": {"lr": 0.0}}
    opt = build_optimizer(params, {"type": "adamw", "lr": 0.0, "param_groups": zero}, "optim.translator", subsets)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(params) and all(p.requires_grad for p in params)


def test_classes_bg_weight_and_calibrated_conf_hi(street: Tensor, shared_data: Path) -> None:
    batch = {"A": 0.3 * street[:2], "B": street[2:4]}
    task = FakeDetector()
    base = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=None)
    torch.manual_seed(0)
    base.training_step(batch, 0)
    labels_all = torch.cat([t.labels for t in task.calls])
    assert len(set(labels_all.tolist())) > 1
    task.calls.clear()
    only = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=None, classes=[int(labels_all[0])])
    only.training_step(batch, 0)
    kept = torch.cat([t.labels for t in task.calls])
    assert len(kept) and set(kept.tolist()) == {int(labels_all[0])}

    seen: list[float | None] = []
    real_loss = task.loss

    def spy(raw: Tensor, targets: DetectionTargets, background_weight: float | None = None):
        seen.append(background_weight)
        return real_loss(raw, targets, background_weight)

    task.loss = spy  # type: ignore[method-assign]
    for w in (1.0, 0.25):
        torch.manual_seed(0)  # the same network and mixup draws; only the background weight differs
        m = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=None, bg_weight=w)
        m.training_step(batch, 0)
    half = len(seen) // 2
    assert half and seen[half:] == pytest.approx([0.25 * s for s in seen[:half]])

    fit = {"folder": str(shared_data / "coco256_street" / "images" / "val2017"), "split": "val", "size": 64,
           "max_images": 8}
    cal = VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4}, nuq_fit=fit, conf_hi_quantile=0.5)
    cal.fit_nuq()
    scores = torch.cat([d.scores for d in cal.task.predict(street_batch(shared_data, 8, 64), conf_thres=0.1)])
    assert cal.conf_hi == pytest.approx(float(scores.quantile(0.5)), abs=1e-6) and cal.conf_hi != 0.5
    with pytest.raises(ValueError, match="conf_hi_quantile calibrates on the clean images of method.nuq_fit"):
        VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4}, nuq=None, conf_hi_quantile=0.5)


def test_reference_augmentation_keeps_weights_with_their_boxes(street: Tensor) -> None:
    """Mosaic and cutout move boxes between images and drop some: every target still gets its own weight."""
    task = FakeDetector()
    nuq = fit_nuq_from_detector(task, street[4:], split="coco256_street/val2017[4:8]", batch_size=2)
    m = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=nuq,
            augment={"mosaic": 1.0, "cutout": 1.0, "scale_p": 1.0})
    assert m.augment is not None and m.augment.mosaic == 1.0
    torch.manual_seed(0)
    logs = run_steps(m, [{"A": 0.3 * street[:4], "B": street[4:8]}], steps=2)
    assert "mle/translation" in logs[0] and logs[0]["labels/translation_certain"] > 0
    with pytest.raises(ValueError, match="method.augment: mosaic"):
        VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=nuq, augment={"mosaic": 2.0})


@pytest.mark.filterwarnings("ignore:VaT. no NUQ given")
def test_ema_teacher_labels_the_translation_flow_and_is_checkpointed(street: Tensor, monkeypatch) -> None:
    """With method.teacher_ema the pseudo-labels' fused/translated views are the teacher's, the teacher
    follows the trained network by EMA, and checkpoints keep it (it changes without gradients)."""
    import taskbridge.methods.vat as vat_module
    from taskbridge.checkpoint import frozen_prefixes, trainable_state, untrained_prefixes

    torch.manual_seed(0)
    m = VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4, "global_residual": True}, nuq=None,
            mixup="none", teacher_ema=0.9)
    plain = VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4, "global_residual": True}, nuq=None)
    assert frozen_prefixes(plain) == untrained_prefixes(plain)  # nothing changes without a teacher
    assert not any(k.startswith("T_A_teacher.") for k in trainable_state(plain))
    assert any(k.startswith("T_A_teacher.") for k in trainable_state(m))
    assert not any(k.startswith("task.") for k in trainable_state(m))
    with torch.no_grad():
        m.T_A.transform.out.weight.add_(0.05)  # the trained network moved; the teacher has not yet
    seen: list[list[Tensor]] = []
    real = vat_module.predict_views

    def spy(task, views, *args, **kwargs):
        seen.append([v.clone() for v in views])
        return real(task, views, *args, **kwargs)

    monkeypatch.setattr(vat_module, "predict_views", spy)
    a, b = street[:2] ** 2, street[2:4]
    m.training_step({"A": a, "B": b}, 0)
    with torch.no_grad():
        r = m.restore(a)
        t_fused = m.T_A_teacher.fuse(r, a)[0]
        assert torch.allclose(seen[0][3], t_fused)
        assert torch.allclose(seen[0][4], m.T_A_teacher.transform(t_fused).clamp(0, 1))
        assert not torch.allclose(seen[0][4], m.T_A.transform(m.fuse(r, a)[0]).clamp(0, 1))
    (ema,) = [cb for cb in m.callbacks() if cb.name == "teacher_ema"]
    before = m.T_A_teacher.transform.out.weight.clone()
    ema.on_step_end(None, None, {})
    assert torch.allclose(m.T_A_teacher.transform.out.weight, 0.9 * before + 0.1 * m.T_A.transform.out.weight)
    with pytest.raises(ValueError, match="teacher_ema"):
        VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4}, nuq=None, teacher_ema=1.0)
    with pytest.raises(ValueError, match="teacher_ema .*pseudo_views: code"):
        VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4}, nuq=None, teacher_ema=0.9,
            pseudo_views="paper")


def test_feature_alignment_moves_the_gate_and_t_toward_clean_feature_statistics(street: Tensor, shared_data: Path) -> None:
    """method.feature_align: the frozen detector's P3-P5 statistics on T_A's output are pulled toward those
    on the clean nuq_fit images; the term alone reaches the gate and T (not T_B) and a few Adam steps on
    foggy-looking images lower it."""
    if "yolov5n" not in TASKS:
        pytest.skip("yolov5n task not available")
    folder = shared_data / "coco256_street" / "images" / "train2017"
    fit = {"folder": str(folder), "split": "coco256_street/train2017", "max_images": 8, "size": 64}
    torch.manual_seed(0)
    m = VaT(task=TASKS.create("yolov5n"), restorer=Darken(), nuq_fit=fit, use_cycle=False, use_mle=False,
            feature_align=1.0, translator={"width": 4, "global_residual": True, "out_init_std": 1e-3})
    foggy = 0.4 + 0.5 * street[:4]  # low contrast, lifted black level
    batch = {"A": foggy, "B": street[4:8]}
    opt = torch.optim.Adam(m.optim_groups()["translator"], lr=3e-3)
    values = []
    for step in range(8):
        logs = m.training_step(batch, step)
        opt.zero_grad()
        logs["loss/translator"].backward()
        if step == 0:
            assert all(p.grad is not None for p in m.T_A.parameters())  # the gate and T
            assert all(p.grad is None for p in m.T_B.parameters())
        opt.step()
        values.append(float(logs["feat/align"]))
    assert len(m.clean_feature_targets()) == 3 and m.clean_feature_targets()[0][0].shape == (64,)
    assert values[-1] < 0.8 * values[0]
    assert "running_features._extra_state" in trainable_state(m)  # checkpointed: a resumed run continues it

    with pytest.raises(ValueError, match="feature_align takes its clean feature statistics.*nuq_fit"):
        VaT(task=TASKS.create("yolov5n"), nuq=None, feature_align=1.0)
    with pytest.raises(ValueError, match="FakeDetector exposes no feature maps"):
        VaT(task=FakeDetector(), nuq_fit=fit, feature_align=1.0)


def test_oracle_labels_replace_the_degraded_sides_pseudo_labels(street: Tensor, tmp_path: Path) -> None:
    """method.oracle_labels (a ceiling, not VaT): the fusion and translation flows train on the photos' own
    boxes, carried onto the views, certain and at full weight; the clean side keeps its pseudo-labels."""
    task = FakeDetector()
    nuq = fit_nuq_from_detector(task, street[4:], split="coco256_street/val2017[4:8]", batch_size=2)
    labels = tmp_path / "labels"
    labels.mkdir()
    for i in range(2):
        (labels / f"p{i}.txt").write_text("1 0.5 0.5 0.25 0.25\n" if i == 0 else "1 0.25 0.75 0.5 0.5\n1 0.9 0.1 0.2 0.2\n")
    method = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=nuq, oracle_labels=str(labels))
    batch = {"A": 0.3 * street[:2], "B": street[2:4], "A_paths": ["a/p0.jpg", "a/p1.jpg"],
             "A_windows": torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.5, 1.0, 0.5]], dtype=torch.float64),
             "A_flips": [False, True]}
    logs = method.training_step(batch, 0)
    share = 1.0 - float(logs["mix/clean_share"])
    fusion = task.calls[0]
    degraded = (fusion.batch_index >= 0) & torch.isclose(fusion.weights, torch.tensor(share))
    rows = sorted((int(i), *[round(v, 4) for v in b.tolist()])
                  for i, b in zip(fusion.batch_index[degraded], fusion.boxes[degraded], strict=True))
    # p0: the whole photo; p1: its right half, mirrored: (0.9, 0.1) -> x 0.8 of the half -> 0.2 mirrored
    assert rows == [(0, 0.5, 0.5, 0.25, 0.25), (1, 0.2, 0.1, 0.4, 0.2)]
    assert not bool(fusion.soft[degraded].any()) and bool((fusion.labels[degraded] == 0).all())
    with pytest.raises(ValueError, match="oracle_labels replaces the pseudo-labels: a folder"):
        VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=nuq, oracle_labels=str(labels), use_mle=False)


def test_class_oracle_replaces_the_degraded_sides_pseudo_labels(shared_data: Path) -> None:
    """method.oracle_labels: data (a ceiling, not VaT): the fusion and translation flows of a classifier train on
    pool A's own classes, certain and at full weight; without data.labels_A the batch has none to give."""
    task = TASKS.create("cifar-resnet20")
    method = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=None, oracle_labels="data", mixup="none")
    data = np.load(shared_data / "cifar10_test_subset" / "cifar10_test_first1017.npz")
    imgs = torch.from_numpy(data["images"][:8]).permute(0, 3, 1, 2).float() / 255
    truth = torch.tensor([3, 3, 7, 1])  # not these images' classes: the oracle trains on what the batch says
    seen: dict[str, Tensor] = {}
    flow_loss = method._flow_loss

    def spy(name: str, x: Tensor, targets, bg=None) -> Tensor:
        seen[name] = targets.labels.clone()
        return flow_loss(name, x, targets, bg)

    method._flow_loss = spy
    logs = method.training_step({"A": 0.3 * imgs[:4], "B": imgs[4:], "A_labels": truth}, 0)
    expected = F.one_hot(truth, 10).float()  # no mixup: the clean partner's share is 0
    assert torch.equal(seen["fusion"], expected) and torch.equal(seen["translation"], expected)
    assert float(logs["labels/fusion_certain"]) == 4 and seen["hq"].shape == (4, 10)
    with pytest.raises(ValueError, match="set data.labels_A: true"):
        method.training_step({"A": 0.3 * imgs[:4], "B": imgs[4:]}, 0)
    with pytest.raises(ValueError, match="it needs use_mle: true"):
        VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=None, oracle_labels="data", use_mle=False)
    with pytest.raises(ValueError, match="a classifier takes 'data'"):
        VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=None, oracle_labels="labels")
    with pytest.raises(ValueError, match="'data' .* is for a classification task"):
        VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4}, nuq=None, oracle_labels="data")


def test_relative_method_data_paths_resolve_against_the_recipes_data_root(tmp_path: Path, monkeypatch) -> None:
    """`nuq_fit.folder` and `oracle_labels` of a recipe with `data.root` read from that root, as its photos do;
    without it they follow $TASKBRIDGE_DATA (here a folder without them: refused, naming the key)."""
    from taskbridge.inference.load import build_method

    (tmp_path / "photos").mkdir()
    (tmp_path / "labels").mkdir()
    monkeypatch.setenv("TASKBRIDGE_DATA", str(tmp_path / "elsewhere"))
    method = {"type": "vat", "task": {"type": "test-vat-fake-detector"}, "translator": {"width": 4},
              "nuq_fit": {"folder": "photos", "split": "x"}, "oracle_labels": "labels"}
    m = build_method({"data": {"root": str(tmp_path)}, "method": method})
    assert Path(m._nuq_fit.folder) == tmp_path / "photos" and m.oracle.folder == tmp_path / "labels"
    with pytest.raises(FileNotFoundError, match="method.oracle_labels: .*elsewhere"):
        build_method({"data": {}, "method": method})
    with pytest.raises(FileNotFoundError, match="method.nuq_fit.folder: .*elsewhere"):
        build_method({"method": {k: v for k, v in method.items() if k != "oracle_labels"}})


def test_agreeing_class_labels_drop_exactly_the_labels_the_views_dispute(shared_data: Path) -> None:
    """cls_labels "agree": a certain label survives only where every view names its class; the rest is unchanged."""
    task = TASKS.create("cifar-resnet20")
    confident = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=None)
    agree = VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=None, cls_labels="agree")
    data = np.load(shared_data / "cifar10_test_subset" / "cifar10_test_first1017.npz")
    imgs = torch.from_numpy(data["images"][:64]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        views = [task.raw(0.5 * imgs ** 2.2), task.raw(imgs)]
    label_c, certain_c, _, _ = confident.certain_class_labels(views)
    label_a, certain_a, _, _ = agree.certain_class_labels(views)
    disputed = views[0].argmax(-1) != views[1].argmax(-1)
    assert torch.equal(label_a, label_c) and bool(disputed.any()) and bool((certain_c & ~disputed).any())
    assert torch.equal(certain_a, certain_c & ~disputed)
    one_view = views[:1]  # the clean side has one view: nothing to dispute
    assert torch.equal(agree.certain_class_labels(one_view)[1], confident.certain_class_labels(one_view)[1])
    with pytest.raises(ValueError, match="cls_labels: 'agree' is for classification"):
        VaT(task=FakeDetector(), restorer=Darken(), translator={"width": 4}, nuq=None, cls_labels="agree")
    with pytest.raises(ValueError, match="cls_labels: 'vote' is not one of confident, agree"):
        VaT(task=task, restorer=Darken(), translator={"width": 4}, nuq=None, cls_labels="vote")
