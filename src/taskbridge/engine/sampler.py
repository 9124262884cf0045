"""A batch sampler whose order is a pure function of (seed, epoch), so training resumes mid-epoch.

Resuming at completed step k means: epoch = k // batches_per_epoch, and the first
k % batches_per_epoch batches of that epoch's permutation are skipped without loading them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from taskbridge.engine.seed import derive_seed


class EpochBatchSampler:
    """Shuffled (or sequential) full batches of `range(n)`; `set_epoch(epoch, start_batch)` positions it."""

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = True) -> None:
        if n <= 0:
            raise ValueError("the training set is empty")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if drop_last and n < batch_size:
            raise ValueError(f"batch_size {batch_size} is larger than the training set ({n} items)")
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = n, batch_size, shuffle, seed, drop_last
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 0x5A))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        idx = self.order()
        for b in range(self.start_batch, self.batches_per_epoch()):
            yield idx[b * self.batch_size : (b + 1) * self.batch_size]

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start_batch
