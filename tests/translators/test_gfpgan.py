"""GFP-GAN clean: shapes, determinism, gradients, and equality with the official `GFPGANv1Clean`.

The reference is the installed `gfpgan` package's arch files, imported by file with `basicsr` (not
installed) replaced by stubs for the two names they use; sys.modules is restored right after.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from taskbridge.registry import TRANSLATORS
from taskbridge.translators.gfpgan import GFPGANClean, load_gfpgan_state

RELEASED = dict(out_size=512, num_style_feat=512, channel_multiplier=2, num_mlp=8, narrow=1,
                sft_half=True, different_w=True, input_is_latent=True)
SMALL = dict(out_size=64, narrow=0.25)


# ---------------------------------------------------------------- the reference, imported by file
@torch.no_grad()
def _default_init_weights(module_list: Any, scale: float = 1, bias_fill: float = 0, **kwargs: Any) -> None:
    """What BasicSR's `default_init_weights` does to the Linear layers the clean arch passes it."""
    for module in module_list if isinstance(module_list, list) else [module_list]:
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, **kwargs)
                m.weight.mul_(scale)
                if m.bias is not None:
                    m.bias.fill_(bias_fill)


def _load_reference() -> types.ModuleType:
    spec = importlib.util.find_spec("gfpgan")  # locates the package without running its __init__
    if spec is None or spec.origin is None:
        pytest.skip("the reference `gfpgan` package is not installed (pip install --no-deps gfpgan==1.3.8)")
    archs = Path(spec.origin).parent / "archs"
    registry = types.SimpleNamespace(register=lambda *a, **k: (lambda obj: obj))
    stubs = {
        "basicsr": types.ModuleType("basicsr"),
        "basicsr.utils": types.ModuleType("basicsr.utils"),
        "basicsr.utils.registry": types.SimpleNamespace(ARCH_REGISTRY=registry),
        "basicsr.archs": types.ModuleType("basicsr.archs"),
        "basicsr.archs.arch_util": types.SimpleNamespace(default_init_weights=_default_init_weights),
        "_gfpgan_ref": types.ModuleType("_gfpgan_ref"),  # parent package of the relative import
    }
    stubs["_gfpgan_ref"].__path__ = [str(archs)]  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as mp:
        for name, mod in stubs.items():
            mp.setitem(sys.modules, name, mod)
        for name in ("stylegan2_clean_arch", "gfpganv1_clean_arch"):
            full = f"_gfpgan_ref.{name}"
            mod_spec = importlib.util.spec_from_file_location(full, archs / f"{name}.py")
            assert mod_spec is not None and mod_spec.loader is not None
            module = importlib.util.module_from_spec(mod_spec)
            mp.setitem(sys.modules, full, module)
            mod_spec.loader.exec_module(module)
    assert "_gfpgan_ref" not in sys.modules and "basicsr" not in sys.modules
    return module


@pytest.fixture(scope="module")
def reference() -> types.ModuleType:
    return _load_reference()


def _ref_model(reference: types.ModuleType, **opts: Any) -> nn.Module:
    cfg = {**RELEASED, **opts}
    return reference.GFPGANv1Clean(decoder_load_path=None, fix_decoder=False, **cfg)


def _ours(**opts: Any) -> GFPGANClean:
    return TRANSLATORS.create("gfpgan-clean", **opts)


# ---------------------------------------------------------------- our network on its own
def test_small_config_shapes_and_determinism() -> None:
    g = _ours(**SMALL)
    assert g.value_range == (-1.0, 1.0)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        img, rgbs = g(x)
        img2, rgbs2 = g(x)
    assert img.shape == (2, 3, 64, 64)
    assert [tuple(r.shape) for r in rgbs] == [(2, 3, s, s) for s in (8, 16, 32, 64)]
    assert torch.equal(img, img2) and all(torch.equal(a, b) for a, b in zip(rgbs, rgbs2, strict=True))


def test_randomize_noise_is_opt_in() -> None:
    g = _ours(**SMALL)
    with torch.no_grad():
        for conv in g.stylegan_decoder.style_convs:
            conv.weight.fill_(0.5)  # noise strengths start at 0, which would hide the noise
        x = torch.rand(1, 3, 64, 64) * 2 - 1
        assert torch.equal(g(x)[0], g(x)[0])
        assert not torch.equal(g(x, randomize_noise=True)[0], g(x, randomize_noise=True)[0])


def test_gradient_reaches_input_and_every_trainable_parameter() -> None:
    g = _ours(out_size=32, narrow=0.125)
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    img, rgbs = g(x)
    (img.square().mean() + sum(r.square().mean() for r in rgbs)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    dead = [n for n, p in g.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert dead == []
    # the mapping MLP never runs with input_is_latent (released): frozen, yet in the state dict
    frozen = {n for n, p in g.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("stylegan_decoder.style_mlp.") for n in frozen)
    assert _ours(out_size=32, narrow=0.125, input_is_latent=False).stylegan_decoder.style_mlp[1].weight.requires_grad


def test_wrong_input_size_names_the_expected_one() -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, 64, 64\]"):
        _ours(**SMALL)(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="power of two"):
        _ours(out_size=100)
    with pytest.raises(ValueError, match="not twice the U-Net widths"):
        _ours(out_size=32, narrow=0.3)  # 153 decoder channels cannot be split against 76 condition channels
    with pytest.raises(TypeError, match="bogus"):
        _ours(bogus=1)


# ---------------------------------------------------------------- against the official code
def test_released_config_state_dict_equals_reference(reference: types.ModuleType) -> None:
    with torch.device("meta"):  # no 86 M random numbers drawn: only names and shapes are compared
        ref, ours = _ref_model(reference), _ours()
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert list(mine) == list(theirs)  # same keys, same order
    assert mine == theirs
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert [n for n, _ in ours.named_buffers()] == [f"stylegan_decoder.noises.noise{i}" for i in range(15)]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) == 86_444_252


def _randomize_zero_inits(model: nn.Module) -> None:
    """Noise strengths and biases start at zero; give them values so the comparison sees their paths."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.any() and (name.endswith("bias") or p.numel() == 1):
                p.uniform_(-0.3, 0.3)


@pytest.mark.parametrize("opts", [dict(out_size=128, narrow=0.5),
                                  dict(out_size=32, narrow=0.25, sft_half=False, different_w=False)],
                         ids=["128px-narrow0.5", "32px-full-sft-one-w"])
def test_outputs_equal_reference_with_the_same_weights(reference: types.ModuleType, opts: dict) -> None:
    ref = _ref_model(reference, **opts).eval()
    _randomize_zero_inits(ref)
    ours = _ours(**opts)
    ours.load_state_dict(ref.state_dict(), strict=True)
    size = opts["out_size"]
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        want, want_rgbs = ref(x, return_rgb=True, randomize_noise=False)
        got, got_rgbs = ours(x)
    assert want.abs().max() > 0.1  # a non-trivial image
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert len(got_rgbs) == len(want_rgbs)
    for a, b in zip(got_rgbs, want_rgbs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- checkpoints
def test_official_layout_checkpoint_loads_params_ema(tmp_path: Path) -> None:
    ema, raw = _ours(**SMALL).state_dict(), _ours(**SMALL).state_dict()
    path = tmp_path / "GFPGANv1.4-small.pth"
    torch.save({"params_ema": ema, "params": raw}, path)
    g = _ours(**SMALL, weights=str(path))
    for k, v in g.state_dict().items():
        assert torch.equal(v, ema[k]), k
    torch.save({"params": raw}, tmp_path / "params_only.pth")
    other = _ours(**SMALL)
    load_gfpgan_state(other, tmp_path / "params_only.pth")
    assert torch.equal(other.final_linear.weight, raw["final_linear.weight"])


def test_checkpoint_that_does_not_fit_is_refused_naming_the_file(tmp_path: Path) -> None:
    sd = _ours(**SMALL).state_dict()
    sd["bogus.weight"] = sd.pop("stylegan_decoder.noises.noise3")
    path = tmp_path / "broken.pth"
    torch.save({"params_ema": sd}, path)
    with pytest.raises(RuntimeError) as err:
        _ours(**SMALL, weights=str(path))
    msg = str(err.value)
    assert str(path) in msg and "stylegan_decoder.noises.noise3" in msg and "bogus.weight" in msg
    assert "\n" not in msg

    torch.save(_ours(out_size=64, narrow=0.5).state_dict(), tmp_path / "wider.pth")  # a plain state dict
    with pytest.raises(RuntimeError, match=r"wider\.pth.*shape mismatches"):
        _ours(**SMALL, weights=str(tmp_path / "wider.pth"))
