"""VaT translator: parameter counts per width, shapes, gate range, cycle loss, registry, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from taskbridge.methods.vat import cycle_loss
from taskbridge.registry import TRANSLATORS
from taskbridge.translators.restormer import TransformerBlock
from taskbridge.translators.vat import VaTTranslator


def n_params(m: nn.Module | None) -> int:
    return 0 if m is None else sum(p.numel() for p in m.parameters())


# width -> (GFM, UTM). Ours; width 16 equals the official network (REFERENCE §1.1: 5,225 + 184,513 =
# 189,738; §1.11: 14 k / 51 k / 190 k / 733 k / 1.63 M). The paper's 0.21/0.74/1.57/2.75/6.10 M are not
# reproducible from its code.
COUNTS = {4: (725, 13_549), 8: (1_855, 48_819), 16: (5_225, 184_513), 32: (16_639, 716_025), 48: (34_067, 1_594_545)}


@pytest.mark.parametrize("width", sorted(COUNTS))
def test_parameter_counts_per_width(width: int) -> None:
    gfm, utm = COUNTS[width]
    f_a = VaTTranslator(in_channels=6, width=width)
    f_b = VaTTranslator(in_channels=3, width=width)
    assert (n_params(f_a.fusion), n_params(f_a.transform)) == (gfm, utm)
    assert n_params(f_a) == gfm + utm
    assert f_b.fusion is None and n_params(f_b) == utm  # F_B: no GFM (Fig. 3), no unused parameters


def test_width16_total_matches_reference() -> None:
    assert n_params(VaTTranslator(6, width=16)) == 189_738


@pytest.mark.parametrize("hw", [(16, 16), (13, 22), (3, 5)])
def test_shapes_any_size(hw: tuple[int, int]) -> None:
    f_a, f_b = VaTTranslator(6, width=4), VaTTranslator(3, width=4)
    r, d = torch.rand(2, 3, *hw), torch.rand(2, 3, *hw)
    out = f_a(r, d)
    assert out.shape == (2, 3, *hw)
    torch.testing.assert_close(f_a(torch.cat([r, d], 1)), out)  # 6-channel form == two-argument form
    assert f_b(out).shape == (2, 3, *hw)


def test_gate_range_and_fusion_formula() -> None:
    f_a = VaTTranslator(6, width=8)
    with torch.no_grad():  # push the gate logits to extremes: sigmoid must stay inside [0, 1]
        f_a.fusion.conv_out.bias.fill_(30.0)
    r, d = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    fused, g = f_a.fuse(r, d)
    assert g.shape == (2, 3, 16, 16) and g.min() >= 0 and g.max() <= 1
    torch.testing.assert_close(fused, (1 - g) * r + g * d)
    g1 = VaTTranslator(6, width=8, gate_channels=1).fuse(r, d)[1]
    assert g1.shape == (2, 1, 16, 16) and 0 <= g1.min() <= g1.max() <= 1


def test_cycle_loss_zero_for_identity_translators() -> None:
    fused, clean = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    ident = nn.Identity()
    f, b = cycle_loss(fused, ident(fused), clean, ident, ident)
    assert f.item() == 0.0 and b.item() == 0.0
    half = lambda x: 0.5 * x  # noqa: E731
    f, b = cycle_loss(fused, fused, clean, ident, half)
    assert f.item() == pytest.approx((0.5 * fused).abs().mean().item())
    assert b.item() == pytest.approx((0.5 * clean).abs().mean().item())


def test_identity_start_is_a_fixed_point_of_the_cycle_loss() -> None:
    """With global_residual both translators start as the identity, where L_cyc is zero with zero gradient
    for every parameter (gate included): cycle-only training never leaves the start (docs/results §3.1)."""
    torch.manual_seed(0)
    f_a, f_b = VaTTranslator(6, width=4, global_residual=True), VaTTranslator(3, width=4, global_residual=True)
    r, d, clean = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    fused, _ = f_a.fuse(r, d)
    cyc_f, cyc_b = cycle_loss(fused, f_a.transform(fused), clean, f_a.transform, f_b)
    (cyc_f + cyc_b).backward()
    assert cyc_f.item() == 0.0 and cyc_b.item() == 0.0
    grads = [p.grad for p in [*f_a.parameters(), *f_b.parameters()] if p.grad is not None]
    assert grads and all(g.abs().max().item() == 0.0 for g in grads)
    with torch.no_grad():  # one step away from the identity and the cycle loss trains again
        f_b.transform.out.weight.add_(0.01)
    f_a.zero_grad(), f_b.zero_grad()
    fused, _ = f_a.fuse(r, d)
    sum(cycle_loss(fused, f_a.transform(fused), clean, f_a.transform, f_b)).backward()
    assert f_a.fusion.conv_out.weight.grad.abs().max().item() > 0


def test_registry_and_bad_options() -> None:
    m = TRANSLATORS.create("vat", in_channels=6, width=4)
    assert isinstance(m, VaTTranslator) and m.gated
    assert not TRANSLATORS.create("vat", gated=False, width=4).gated
    with pytest.raises(ValueError, match="inconsistent"):
        VaTTranslator(in_channels=6, gated=False)
    with pytest.raises(TypeError, match="unknown option"):
        TRANSLATORS.create("vat", base=16)
    with pytest.raises(ValueError, match="ungated"):
        VaTTranslator(3, width=4)(torch.rand(1, 6, 8, 8))


def test_state_dict_round_trip_and_backward() -> None:
    a, b = VaTTranslator(6, width=4), VaTTranslator(6, width=4)
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 6, 16, 16)
    torch.testing.assert_close(a(x), b(x))
    a(x).square().mean().backward()
    assert all(p.grad is not None for p in a.parameters())


def test_transformer_block_gradcheck() -> None:
    block = TransformerBlock(4, heads=2).double()
    x = torch.rand(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,), eps=1e-6, atol=1e-5)


def test_gated_fusion_gradcheck() -> None:
    from taskbridge.translators.vat import GatedFusion

    gfm = GatedFusion(width=2, heads=2).double()
    r = torch.rand(1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    d = torch.rand(1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: gfm(x, y)[0], (r, d), eps=1e-6, atol=1e-5)


def test_global_residual_starts_at_identity_and_still_learns() -> None:
    from taskbridge.translators.vat import VaTTranslator

    t_b = VaTTranslator(3, width=4, global_residual=True)
    x = torch.rand(2, 3, 30, 34)
    assert torch.equal(t_b(x), x)  # zero-initialised last conv: exactly the identity at step 0
    t_a = VaTTranslator(6, width=4, global_residual=True)
    restored, degraded = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    fused, _ = t_a.fuse(restored, degraded)
    assert torch.allclose(t_a(restored, degraded), fused)
    loss = (t_b(x) - 0.5).abs().mean()
    loss.backward()
    assert t_b.transform.out.weight.grad is not None and t_b.transform.out.weight.grad.abs().sum() > 0


def test_image_gate_is_one_weight_per_image_and_channel_and_trains() -> None:
    """gate_pool image: the mean of the per-pixel logits, broadcast; each photo gets its own, and the gate's
    inner layers get gradient through the pooling."""
    f_a = VaTTranslator(6, width=8, gate_pool="image")
    r, d = torch.rand(2, 3, 12, 16), torch.rand(2, 3, 12, 16)
    d[1] = d[1] * 0.2
    fused, g = f_a.fuse(r, d)
    assert g.shape == (2, 3, 12, 16)
    torch.testing.assert_close(g, g[..., :1, :1].expand_as(g))  # constant over the pixels
    assert not torch.allclose(g[0, :, 0, 0], g[1, :, 0, 0])  # but not over the photos
    logits = f_a.fusion.conv_out(f_a.fusion.block(f_a.fusion.conv_in(torch.cat([r, d], 1))))
    torch.testing.assert_close(g[..., 0, 0], torch.sigmoid(logits.mean(dim=(-2, -1))))
    torch.testing.assert_close(fused, (1 - g) * r + g * d)
    fused.sum().backward()
    assert f_a.fusion.conv_in.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="gate_pool"):
        VaTTranslator(6, width=8, gate_pool="channel")
