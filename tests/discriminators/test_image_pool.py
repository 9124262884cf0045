"""CycleGAN's image pool."""

from __future__ import annotations

import torch

from taskbridge.discriminators.image_pool import ImagePool


def test_image_pool() -> None:
    assert torch.equal(ImagePool(0).query(torch.ones(2, 3, 4, 4)), torch.ones(2, 3, 4, 4))
    pool = ImagePool(2, seed=0)
    first = torch.stack([torch.full((3, 2, 2), float(i)) for i in range(2)])
    assert torch.equal(pool.query(first), first) and len(pool) == 2  # filling: returned as is
    returned_old = 0
    for step in range(2, 42):
        new = torch.full((1, 3, 2, 2), float(step))
        stored_before = {float(t.mean()) for t in pool.images}
        out = pool.query(new)
        value = float(out.mean())
        stored_after = {float(t.mean()) for t in pool.images}
        if value == step:
            assert stored_after == stored_before  # the new fake passed through
        else:
            returned_old += 1
            assert value in stored_before and step in stored_after and value not in stored_after
        assert len(pool) == 2
    assert 8 <= returned_old <= 32  # p = 0.5 over 40 draws
