"""RetinaFace vs MTCNN on the 540 FairFace photos: face counts, landmark agreement, flip consistency, time.

Every photo is a 448 px crop centred on one face, so "exactly one face" is the expected answer, except
where other people stand behind (then both detectors find them: the count of photos where both see
more than one face tells those apart from spurious boxes). Each detector runs once per photo at a
low threshold; the face counts at the default and at other thresholds are computed from those scores.
Landmark agreement is over photos where both find exactly one face: the mean distance of the 5 points,
divided by RetinaFace's inter-ocular distance. Flip consistency: the photo mirrored, the landmarks
mirrored back, distance to the unmirrored ones (an unbiased detector scores ~0; `bias_x` is half the
mean signed x difference, the horizontal bias). One intra-op thread; time is `detect` wall time.

    python benchmarks/bench_face_detectors.py [--limit N] [--out runs/bench_face_detectors]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RF_SWEEP = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97)
MT_SWEEP = (0.7, 0.8, 0.9, 0.95, 0.99)
NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


def run_detector(det, images: list, low: float) -> tuple[list[dict], list[float]]:
    """Detections at threshold `low` (as plain lists), and the wall time of each call."""
    rows, times = [], []
    for img in images:
        t0 = time.perf_counter()
        d = det.detect(img, score_threshold=low)
        times.append(time.perf_counter() - t0)
        rows.append({"boxes": d.boxes.tolist(), "scores": d.scores.tolist(), "landmarks": d.landmarks.tolist()})
    return rows, times


def counts(rows: list[dict], thr: float, size: tuple[int, int]) -> dict[str, float]:
    """Fractions of photos with 0 / 1 / >1 faces above `thr`, and with a face box over the photo centre."""
    cy, cx = size[0] / 2, size[1] / 2
    n = [sum(s > thr for s in r["scores"]) for r in rows]
    centre = [any(s > thr and b[0] < cx < b[2] and b[1] < cy < b[3] for s, b in zip(r["scores"], r["boxes"], strict=True))
              for r in rows]
    return {"threshold": thr, "zero": n.count(0) / len(n), "one": n.count(1) / len(n),
            "more": sum(k > 1 for k in n) / len(n), "centre_face": sum(centre) / len(n), "n_more": sum(k > 1 for k in n)}


def kept(row: dict, thr: float) -> list[int]:
    return [i for i, s in enumerate(row["scores"]) if s > thr]


def agreement(rf: list[dict], mt: list[dict], rf_thr: float, mt_thr: float, same_face: bool = False) -> dict[str, object]:
    """Landmark distance / RetinaFace inter-ocular distance on photos where both find exactly one face
    (`same_face`: and MTCNN's nose lies in RetinaFace's box, i.e. both found the same person)."""
    import torch

    per_photo, per_mark, signed = [], [], []
    for a, b in zip(rf, mt, strict=True):
        ia, ib = kept(a, rf_thr), kept(b, mt_thr)
        if len(ia) != 1 or len(ib) != 1:
            continue
        la, lb = torch.tensor(a["landmarks"][ia[0]]), torch.tensor(b["landmarks"][ib[0]])
        x1, y1, x2, y2 = a["boxes"][ia[0]]
        if same_face and not (x1 < lb[2, 0] < x2 and y1 < lb[2, 1] < y2):
            continue
        iod = float((la[0] - la[1]).norm())
        diff = (la - lb) / iod
        per_mark.append(diff.norm(dim=-1))
        signed.append(diff)
        per_photo.append(float(diff.norm(dim=-1).mean()))
    if not per_photo:
        return {"photos": 0}
    q = sorted(per_photo)
    marks, sig = torch.stack(per_mark), torch.stack(signed).mean(0)
    return {"photos": len(q), "mean": statistics.mean(q), "median": statistics.median(q),
            "p95": q[min(len(q) - 1, round(0.95 * (len(q) - 1)))], "max": q[-1],
            "within_5pct": sum(v <= 0.05 for v in q) / len(q), "within_10pct": sum(v <= 0.10 for v in q) / len(q),
            "per_landmark_mean": dict(zip(NAMES, marks.mean(0).tolist(), strict=True)),
            "per_landmark_signed_mean_xy": {k: [round(x, 4) for x in v] for k, v in zip(NAMES, sig.tolist(), strict=True)}}


def extra_faces(rf: list[dict], mt: list[dict], rf_thr: float, size: tuple[int, int], mt_low: float = 0.7) -> dict[str, int]:
    """RetinaFace faces other than the one over the photo centre: how many MTCNN also sees (box IoU > 0.3
    with an MTCNN box above `mt_low`: other people in the photo) and how many it does not."""
    import torch
    from torchvision.ops import box_iou

    cy, cx = size[0] / 2, size[1] / 2
    confirmed = unconfirmed = photos_unconfirmed = 0
    for a, b in zip(rf, mt, strict=True):
        other = [a["boxes"][i] for i in kept(a, rf_thr) if not (a["boxes"][i][0] < cx < a["boxes"][i][2]
                                                                and a["boxes"][i][1] < cy < a["boxes"][i][3])]
        ref = torch.tensor([b["boxes"][i] for i in kept(b, mt_low)]).reshape(-1, 4)
        seen = [bool(len(ref)) and float(box_iou(torch.tensor([o]), ref).max()) > 0.3 for o in other]
        confirmed += sum(seen)
        unconfirmed += len(seen) - sum(seen)
        photos_unconfirmed += not all(seen)
    return {"confirmed": confirmed, "unconfirmed": unconfirmed, "photos_with_unconfirmed": photos_unconfirmed}


def flip_consistency(det, images: list, rows: list[dict], thr: float) -> dict[str, float]:
    """Landmarks of the mirrored photo mirrored back vs the original's, single-face photos only."""
    import torch

    dists, bias = [], []
    for img, row in zip(images, rows, strict=True):
        idx = kept(row, thr)
        if len(idx) != 1:
            continue
        d = det.detect(img.flip(-1), score_threshold=thr)
        if len(d) != 1:
            continue
        back = d.landmarks[0].clone()
        back[:, 0] = img.shape[-1] - back[:, 0]
        back = back[[1, 0, 2, 4, 3]]  # image-left and image-right swap under a mirror
        orig = torch.tensor(row["landmarks"][idx[0]])
        iod = float((orig[0] - orig[1]).norm())
        dists.append(float((orig - back).norm(dim=-1).mean()) / iod)
        bias.append(float((orig[:, 0] - back[:, 0]).mean()) / 2 / iod)
    if not dists:
        return {"photos": 0}
    return {"photos": len(dists), "median": statistics.median(dists), "mean": statistics.mean(dists),
            "bias_x": statistics.mean(bias)}


def markdown(res: dict) -> str:
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    lines = [f"# Face detectors on {res['photos']} FairFace photos ({res['env']['threads']} thread, "
             f"{res['env']['cpu']})", "",
             "| detector | threshold | 0 faces | 1 face | >1 faces | centre face | ms/photo (median) |", "|---|---|---|---|---|---|---|"]
    for name in ("retinaface", "mtcnn"):
        c, t = res[name]["default"], res[name]["time_ms"]
        lines.append(f"| {name} | {c['threshold']} | {pct(c['zero'])} | {pct(c['one'])} | {pct(c['more'])} | "
                     f"{pct(c['centre_face'])} | {t['median']:.1f} |")
    e = res["extra_faces"]
    lines += ["", f"Photos where both find more than one face: {res['both_more']}. RetinaFace faces besides the "
              f"centre one: {e['confirmed']} also found by MTCNN (>0.7, IoU>0.3), {e['unconfirmed']} not "
              f"(in {e['photos_with_unconfirmed']} photos)", "",
              "Threshold sweep (retinaface): " + ", ".join(f"{c['threshold']}: {pct(c['one'])} one / {c['n_more']} >1"
                                                           for c in res["retinaface"]["sweep"]),
              "Threshold sweep (mtcnn): " + ", ".join(f"{c['threshold']}: {pct(c['one'])} one / {c['n_more']} >1"
                                                      for c in res["mtcnn"]["sweep"]), ""]
    for key, what in (("agreement", "both find exactly one face"), ("agreement_same_face", "... and the same one")):
        a = res[key]
        if a.get("photos"):
            lines += ["", f"Landmark agreement (distance / RetinaFace inter-ocular distance), {what}, {a['photos']} "
                      f"photos: mean {pct(a['mean'])}, median {pct(a['median'])}, p95 {pct(a['p95'])}, max "
                      f"{pct(a['max'])}, within 5%: {pct(a['within_5pct'])}, within 10%: {pct(a['within_10pct'])}",
                      "Per landmark mean: " + ", ".join(f"{k} {pct(v)}" for k, v in a["per_landmark_mean"].items()),
                      "Per landmark signed mean (x, y), retinaface - mtcnn: "
                      + ", ".join(f"{k} ({v[0]:+.3f}, {v[1]:+.3f})" for k, v in a["per_landmark_signed_mean_xy"].items())]
    lines.append("")
    for name in ("retinaface", "mtcnn"):
        f = res[name].get("flip", {})
        if f.get("photos"):
            lines.append(f"Flip consistency {name} ({f['photos']} photos): median {pct(f['median'])}, "
                         f"horizontal bias {f['bias_x']:+.3f} inter-ocular distances")
    return "\n".join(lines) + "\n"


def summarise(res: dict, rows: dict[str, list[dict]], size: tuple[int, int]) -> None:
    """Counts, sweeps, extra faces and agreement from the stored detections (no detector runs)."""
    for name, sweep in (("retinaface", RF_SWEEP), ("mtcnn", MT_SWEEP)):
        thr = res[name]["default"]["threshold"]
        res[name].update(default=counts(rows[name], thr, size), sweep=[counts(rows[name], t, size) for t in sweep])
    rf, mt = rows["retinaface"], rows["mtcnn"]
    rf_thr, mt_thr = res["retinaface"]["default"]["threshold"], res["mtcnn"]["default"]["threshold"]
    res["both_more"] = sum(len(kept(a, rf_thr)) > 1 and len(kept(b, mt_thr)) > 1 for a, b in zip(rf, mt, strict=True))
    res["extra_faces"] = extra_faces(rf, mt, rf_thr, size)
    res["agreement"] = agreement(rf, mt, rf_thr, mt_thr)
    res["agreement_same_face"] = agreement(rf, mt, rf_thr, mt_thr, same_face=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=str(REPO.parent / "shared" / "data" / "faces_fairface" / "images"))
    ap.add_argument("--limit", type=int, default=0, help="first N photos only (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "runs" / "bench_face_detectors"))
    ap.add_argument("--no-flip", action="store_true", help="skip the flip-consistency passes")
    ap.add_argument("--from-detections", action="store_true",
                    help="no detector runs: summarise again the detections.json (and times) stored in --out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.from_detections:
        res, rows = json.loads((out / "results.json").read_text()), json.loads((out / "detections.json").read_text())
        rows.pop("files")
        summarise(res, rows, tuple(res["size"]) if "size" in res else (448, 448))
    else:
        res, rows = detect_all(args)
        out.mkdir(parents=True, exist_ok=True)
        (out / "detections.json").write_text(json.dumps({"files": res.pop("files"), **rows}))
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "results.md").write_text(markdown(res))
    print(markdown(res))
    return res


def detect_all(args: argparse.Namespace) -> tuple[dict, dict[str, list[dict]]]:
    """Run both detectors over the photos (one warm-up call each), time them, summarise."""
    os.environ.setdefault("TASKBRIDGE_WEIGHTS", str(REPO.parent / "shared" / "data"))
    import torch

    from taskbridge.data.io import list_images, read_image
    from taskbridge.registry import FACE_DETECTORS

    torch.set_num_threads(args.threads)
    files = list_images(Path(args.images))
    files = files[: args.limit] if args.limit else files
    images = [read_image(f) for f in files]
    size = tuple(images[0].shape[-2:])
    res: dict = {"photos": len(images), "images": args.images, "size": size, "files": [Path(f).name for f in files],
                 "env": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                         "cpu": platform.processor() or platform.machine()}}
    rows = {}
    for name, low in (("retinaface", 0.3), ("mtcnn", 0.7)):
        det = FACE_DETECTORS.create(name)
        det.detect(images[0])  # warm-up
        rows[name], times = run_detector(det, images, low)
        res[name] = {"default": {"threshold": det.score_threshold},
                     "time_ms": {"mean": 1e3 * statistics.mean(times), "median": 1e3 * statistics.median(times)}}
        if not args.no_flip:
            res[name]["flip"] = flip_consistency(det, images, rows[name], det.score_threshold)
        print(name, json.dumps(res[name]["time_ms"]), flush=True)
    summarise(res, rows, size)
    return res, rows


if __name__ == "__main__":
    main()
