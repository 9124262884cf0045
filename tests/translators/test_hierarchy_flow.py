"""Hierarchy Flow network: exact inversion, the closed-form reverse against the algorithms written as
loops, purity (no state between forward and reverse), parameter counts, and the official layout."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from taskbridge.modules.adain import adain, channel_mean_std
from taskbridge.translators.hierarchy_flow import VARIANTS, HierarchyFlow, from_official_state_dict


def _flow(variant: str, reverse: str = "paper", alpha: float = 0.5, pad: int = 2, dtype=torch.float32) -> HierarchyFlow:
    return HierarchyFlow(variant, reverse=reverse, alpha=alpha, pad_size=pad).to(dtype).eval()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_paper_reverse_inverts_forward_exactly_with_adain_off_and_alpha_1(variant: str) -> None:
    """The paper's Alg. 2 undoes Alg. 1 when alpha = 1 and AdaIN is the identity (REFERENCE 3)."""
    net = _flow(variant, "paper", alpha=1.0, pad=1 if variant == "hf-dagger" else 2)
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        y, aux = net(x)
        back = net.reverse(y, aux, None)
    assert y.shape[1] == 3 * torch.tensor(VARIANTS[variant]).prod().item()
    assert torch.allclose(back, x, atol=1e-5), (back - x).abs().max()


@pytest.mark.parametrize("variant", ["hf", "hf+", "hf++"])
@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_exact_reverse_inverts_for_any_alpha(variant: str, alpha: float) -> None:
    net = _flow(variant, "exact", alpha=alpha)
    x = torch.rand(2, 3, 9, 11)
    with torch.no_grad():
        y, aux = net(x)
        assert torch.allclose(net.reverse(y, aux, None), x, atol=1e-5)
    paper = _flow(variant, "paper", alpha=alpha)
    paper.load_state_dict(net.state_dict())
    with torch.no_grad():  # the paper's form is not an inverse for alpha < 1: the option exists for a reason
        assert (paper.reverse(*paper(x), None) - x).abs().max() > 1e-3


def test_inversion_in_float64() -> None:
    net = _flow("hf", "exact", alpha=0.37, dtype=torch.float64)
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(net.reverse(*net(x), None), x, atol=1e-12)


def _loop_reverse(block, y: torch.Tensor, a: torch.Tensor, code: torch.Tensor | None, form: str) -> torch.Tensor:
    """Alg. 2 as written (paper) / as the public code runs it (official): AdaIN, then the split loop."""
    if code is not None:
        mean, std = block.style_mlp(code).chunk(2, 1)
        var, mu = torch.var_mean(y.flatten(2), dim=2)
        y = (y - mu[..., None, None]) / (var + 1e-5).sqrt()[..., None, None] * std[..., None, None] + mean[..., None, None]
    c, n, al = block.channels, block.expansion, block.alpha
    ys = [y[:, i * c:(i + 1) * c] for i in range(n)]
    as_ = [a[:, i * c:(i + 1) * c] for i in range(n)]
    h = ys[-1] + as_[-1]
    for i in range(n - 2, -1, -1):
        h = al * (ys[i] + as_[i]) + (1 - al) * h if form == "paper" else al * (h + ys[i]) + (1 - al) * as_[i]
    return h


@pytest.mark.parametrize("form", ["paper", "official"])
def test_closed_form_reverse_equals_the_loop_with_adain(form: str) -> None:
    net = _flow("hf+", form, alpha=0.3, dtype=torch.float64)
    x = torch.rand(2, 3, 8, 9, dtype=torch.float64)
    code = torch.randn(2, 8, dtype=torch.float64)
    with torch.no_grad():
        y, aux = net(x)
        want = y
        for block, a in zip(reversed(net.blocks), reversed(aux), strict=True):
            want = _loop_reverse(block, want, a, code, form)
        want = want[..., 2:-2, 2:-2]
        got = net.reverse(y, aux, code)
    assert torch.allclose(got, want, atol=1e-10)


def test_forward_and_reverse_are_pure() -> None:
    """Reverse uses only what forward returned: another forward in between changes nothing."""
    net = _flow("hf")
    x1, x2, code = torch.rand(1, 3, 12, 12), torch.rand(1, 3, 12, 12), torch.randn(1, 8)
    with torch.no_grad():
        y1, aux1 = net(x1)
        first = net.reverse(y1, aux1, code)
        net(x2)
        assert torch.equal(net.reverse(y1, aux1, code), first)


def test_samples_are_independent_in_a_batch() -> None:
    net = _flow("hf")
    x, code = torch.rand(3, 3, 14, 14), torch.randn(3, 8)
    with torch.no_grad():
        batch = net.translate(x, code)
        single = net.translate(x[1:2], code[1:2])
    assert torch.allclose(batch[1:2], single, atol=1e-5)


def _count(expansions) -> int:
    with torch.device("meta"):
        net = HierarchyFlow(expansions=expansions)
    return sum(p.numel() for p in net.parameters())


def test_parameter_counts_match_the_official_layers_and_explain_the_paper() -> None:
    """REFERENCE 3: counted from the official layers, HF = 1.02 M, HF+ 1.29 M, HF++ 6.30 M, HF-dagger 90.7 M.
    The paper's counts (0.68 / 0.74 / 1.01 / 6.30 M) equal variants with one block fewer."""
    counts = {v: _count(VARIANTS[v]) for v in VARIANTS}
    assert counts["hf"] == 1_017_362  # the public config, counted by instantiating the official network
    assert {v: round(c / 1e6, 2) for v, c in counts.items()} == {"hf": 1.02, "hf+": 1.29, "hf++": 6.30,
                                                                 "hf-dagger": 90.7}
    fewer = {v: round(_count(VARIANTS[v][:-1]) / 1e6, 2) for v in VARIANTS}
    assert fewer == {"hf": 0.68, "hf+": 0.75, "hf++": 1.02, "hf-dagger": 6.30}
    with torch.device("meta"):
        style_only = sum(p.numel() for p in HierarchyFlow().style_net.parameters())
    assert style_only == 667_272  # MUNIT style encoder, 8-dim code


def test_channel_statistics_match_float64() -> None:
    x = torch.randn(2, 7, 40, 40) * 0.7 + 2.5
    mean, std = channel_mean_std(x)
    var64, mean64 = torch.var_mean(x.double().flatten(2), dim=2)
    assert torch.allclose(mean.double(), mean64, atol=1e-6)
    assert torch.allclose(std.double(), (var64 + 1e-5).sqrt(), rtol=1e-5)
    styled = adain(x, torch.zeros(2, 7), torch.ones(2, 7))
    m2, s2 = channel_mean_std(styled)
    assert torch.allclose(m2, torch.zeros(2, 7), atol=1e-5) and torch.allclose(s2, torch.ones(2, 7), atol=1e-3)


def test_adain_and_reverse_pass_gradcheck() -> None:
    net = _flow("hf", "paper", dtype=torch.float64, pad=1)
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64)
    code = torch.randn(1, 8, dtype=torch.float64, requires_grad=True)
    y, aux = net(x)
    y = y.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda yy, cc: net.blocks[-1].reverse(yy, aux[-1].detach(), cc), (y, code))


def test_official_key_layout_loads_strictly() -> None:
    """A state dict in the public code's layout (module names of model/network/hf.py) maps onto ours."""
    ours = HierarchyFlow()
    official = {}
    for key, value in ours.state_dict().items():
        parts = key.split(".")
        if parts[0] == "style_net":
            idx = int(parts[1])
            key = f"style_net.model.4.{parts[2]}" if idx == 7 else f"style_net.model.{idx // 2}.conv.{parts[2]}"
        elif parts[2] == "style_mlp":
            key = f"blocks.{parts[1]}.style_mlp.model.{int(parts[3]) // 2}.fc.{parts[4]}"
        elif parts[2] == "alpha":
            key = f"blocks.{parts[1]}.fixed_weight"
        official[f"module.{key}"] = value  # as saved from DistributedDataParallel
    HierarchyFlow().load_state_dict(from_official_state_dict(official), strict=True)


OFFICIAL = os.environ.get("HIERARCHY_FLOW_OFFICIAL")  # path of the public code's model/network/hf.py


@pytest.mark.reference
@pytest.mark.skipif(not OFFICIAL or not Path(OFFICIAL).is_file(), reason="set HIERARCHY_FLOW_OFFICIAL=.../hf.py")
def test_equals_the_official_network_with_copied_weights() -> None:
    spec = importlib.util.spec_from_file_location("hf_official", OFFICIAL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    off = mod.HierarchyFlow(out_channels=[30, 120], weight_type="learned")
    with torch.no_grad():
        for b in off.blocks:
            b.fixed_weight.fill_(0.37)
    ours = HierarchyFlow(reverse="official")
    ours.load_state_dict(from_official_state_dict(off.state_dict()), strict=True)
    c, s = torch.rand(2, 3, 40, 48), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours.translate(c, ours.style_code(s)), off(c, s), atol=1e-5)
