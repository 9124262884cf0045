"""Convert an official YOLOv5 `*.pt` pickle into the plain-tensor file taskbridge loads.

No longer needed: taskbridge now reads an official `yolov5*.pt` directly, without the YOLOv5 code and
without running its pickle (`taskbridge.tasks.yolov5.official_checkpoint.read_official_checkpoint`; pass
the file as the task's weights). This script is kept to reproduce `yolov5n_state_dict.pt`.

The official checkpoints pickle the YOLOv5 model class, so `torch.load` opens them only with the
YOLOv5 code (GPL/AGPL) installed; taskbridge never imports it at run time. To convert, run this on a machine
with `pip install yolov5==7.0.14 "setuptools<81"`, then put the output where the hub finds it:

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 HF_HUB_OFFLINE=1 \
      python scripts/convert_yolov5_checkpoint.py /abs/path/yolov5n.pt $TASKBRIDGE_WEIGHTS/yolov5n_state_dict.pt
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="official yolov5*.pt (absolute path)")
    parser.add_argument("output", type=Path, help="where to write the plain state dict")
    args = parser.parse_args()
    try:
        from yolov5.models.experimental import attempt_load  # type: ignore[import-not-found]
    except ImportError as err:
        raise SystemExit(f"needs the reference package: pip install yolov5==7.0.14 'setuptools<81' ({err})") from err
    ckpt = torch.load(args.checkpoint.resolve(), map_location="cpu", weights_only=False)
    model = (ckpt.get("ema") or ckpt["model"]).float()
    del attempt_load  # imported only to make the pickle's classes resolvable
    out = {
        "state_dict": {k: v.half() for k, v in model.state_dict().items()},
        "yaml": model.yaml,
        "names": list(model.names.values()) if isinstance(model.names, dict) else list(model.names),
        "stride": model.stride,
        "source_date": str(ckpt.get("date", "")),
        "note": f"converted by taskbridge from {args.checkpoint.name} on {dt.date.today()}",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
