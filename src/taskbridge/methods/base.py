"""The contract every training objective (VaT, CycleGAN, CUT, FastCUT, ODCR, Hierarchy Flow) follows.

A method owns its trainable networks (translators, discriminators, heads) and any frozen models
it needs. The engine knows nothing method-specific:

* `optim_groups()` -> ordered {group: parameters}; one optimizer per group, built by the engine
  from the recipe's `optim.<group>` section (defaults from `default_optim()`).
* `training_step(batch, step)` -> dict of tensors. For every group it must contain the scalar
  `loss/<group>`; the engine back-propagates these in group order, stepping that group's
  optimizer after each (so GAN generator and discriminator updates alternate like the
  references). Other keys are logged.
* `translate(images)` -> the inference path A -> B used by evaluation and `taskbridge translate`.
* `visuals(batch)` -> named image batches for TensorBoard grids (optional).

All parameters exist after `__init__` (no lazy layers), so DDP and optimizers see all of them.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class Method(nn.Module):
    #: translator(s) saved for inference, by attribute name
    inference_modules: tuple[str, ...] = ()

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        raise NotImplementedError

    def default_optim(self) -> dict[str, dict[str, Any]]:
        """Per-group optimizer defaults, e.g. {'G': {'type': 'adam', 'lr': 2e-4, 'betas': [0.5, 0.999]}}."""
        return {}

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def translate(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {}
