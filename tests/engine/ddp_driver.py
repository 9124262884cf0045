"""Run under torchrun by test_distributed.py: every recipe of a JSON plan through the Trainer on each rank,
then each rank's trainable weights to `<out>/<case>/rank<R>.safetensors`; last, `taskbridge fit` itself.

    torchrun --standalone --nproc_per_node 2 tests/engine/ddp_driver.py PLAN.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from taskbridge.engine.trainer import Trainer


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(1)
    for config, until in plan["cases"].values():
        out = Path(config["output_dir"])
        trainer = Trainer(config)
        rank = trainer.dist.rank
        trainer.fit(until=until)
        weights = {n: p.detach().contiguous() for n, p in trainer.method.named_parameters() if p.requires_grad}
        save_file(weights, str(out / f"rank{rank}.safetensors"))
        json.dump({"world_size": trainer.dist.world_size, "local_batch": trainer.local_batch_size,
                   "loss": {k: float(v) for k, v in trainer.last_metrics.items() if k.startswith("loss/")}},
                  (out / f"rank{rank}.json").open("w"))
    from taskbridge.cli import app

    app(["fit", *plan["cli"]], standalone_mode=False)  # the command a user runs; it leaves the process group


if __name__ == "__main__":
    main()
