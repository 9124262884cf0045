"""Learning-rate factors of the GAN references, as plain functions for `LambdaLR`."""

from __future__ import annotations

from collections.abc import Callable


def linear_decay_lambda(n_epochs: int, n_epochs_decay: int, epoch_count: int = 1) -> Callable[[int], float]:
    """CycleGAN/CUT 'linear' policy: lr x 1 for `n_epochs`, then linearly towards 0 over
    `n_epochs_decay`: factor(epoch) = 1 - max(0, epoch + epoch_count - n_epochs) / (n_epochs_decay + 1),
    with `epoch` the 0-based count of finished epochs (LambdaLR's `last_epoch`)."""
    if n_epochs < 0 or n_epochs_decay < 0:
        raise ValueError(f"n_epochs and n_epochs_decay must be >= 0, got {n_epochs}, {n_epochs_decay}")

    def factor(epoch: int) -> float:
        return 1.0 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1)

    return factor
