"""The contract every training objective (VaT, CycleGAN, CUT, FastCUT, ODCR, Hierarchy Flow) follows.

A method builds its networks from recipe sections through the registries (`translator:`,
`generator:`, `discriminator:` ... each `{type: name, **options}`, see `build_network`), owns the
frozen models it needs (restorer, task model) and holds only its objective. The engine knows
nothing method-specific:

* `optim_groups()` -> ordered {group: parameters}; one optimizer per group, built by the engine
  from the recipe's `optim.<group>` section over `default_optim()`; `param_subsets()` names parts
  of a group that `optim.<group>.param_groups` may give their own options.
* `training_step(batch, step)` -> dict of tensors with the scalar `loss/<group>` for every group;
  the engine back-propagates them in group order, stepping that group's optimizer after each (GAN
  generator and discriminator updates alternate like the references). Other keys are logged.
* `translate(images, reference=None)` -> the inference path A -> B on [B, 3, H, W] in [0, 1];
  `reference` is a style/reference image for methods with `uses_reference` (Hierarchy Flow).
* `owned_restorer()` -> the frozen restorer the method applies inside `translate` (VaT), so
  inference and evaluation never run a restorer twice.
* `visuals(batch)` -> named image batches for image grids; `callbacks()` -> training callbacks
  (EMA copies, statistics; `taskbridge.callbacks`); `training_state()` / `load_training_state()`
  -> state outside the state dict that exact resume needs (CycleGAN's image pools).
* `validation_probe()` -> a context around one validation pass that fills a dict of the method's own
  statistics over it (logged as `val/<key>`; VaT: the gate over the validation photos).

All parameters exist after `__init__` (no lazy layers), so DDP and optimizers see all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from taskbridge.callbacks import Callback


class Method(nn.Module):
    #: networks saved for inference, by attribute name
    inference_modules: tuple[str, ...] = ()
    #: submodules left out of checkpoints (None: every submodule whose parameters are all frozen)
    frozen_modules: tuple[str, ...] | None = None
    #: whether `translate` takes a reference (style) image
    uses_reference: bool = False
    #: image sides `translate` needs to be multiples of, and at least (inference pads and crops back)
    size_multiple: int = 1
    min_size: int = 1

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        raise NotImplementedError

    def param_subsets(self) -> dict[str, dict[str, list[nn.Parameter]]]:
        """Named parameter subsets per optimizer group ({group: {subset: params}}) that a recipe's
        `optim.<group>.param_groups` may give their own learning rate or weight decay."""
        return {}

    def default_optim(self) -> dict[str, dict[str, Any]]:
        """Per-group optimizer defaults, e.g. {'G': {'type': 'adam', 'lr': 2e-4, 'betas': [0.5, 0.999]}}."""
        return {}

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def translate(self, images: Tensor, reference: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def owned_restorer(self) -> nn.Module | None:
        """The restorer `translate` applies itself (None when it applies none, or only the identity)."""
        return None

    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {}

    def callbacks(self) -> list[Callback]:
        return []

    def training_state(self) -> dict[str, Any]:
        return {}

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        """Restore what `training_state` returned."""

    @contextmanager
    def validation_probe(self) -> Iterator[dict[str, float]]:
        """Statistics of the method's internals over one validation pass; the dict is filled on exit."""
        yield {}


def check_no_reference(method: Method, reference: Tensor | None) -> None:
    """One line for a reference image given to a method that has no use for one."""
    if reference is not None:
        raise ValueError(f"{type(method).__name__} translates without a reference image; drop --reference")
