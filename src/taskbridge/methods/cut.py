"""CUT and FastCUT (Park et al. 2020; REFERENCE 2.1-2.2): one generator, one PatchGAN, PatchNCE.

L_G = lambda_GAN * LSGAN(D(G(A))) + lambda_NCE * NCE, where NCE = PatchNCE(A, G(A)) or, with
identity NCE (CUT), 1/2 (PatchNCE(A, G(A)) + PatchNCE(B, G(B))). L_D = 1/2 (real + fake) on the
current fake (no image pool). Heads are created in `__init__` from the generator's tap channels.

Presets (registered names): `cut` = identity NCE, lambda_NCE 1; `fastcut` = no identity NCE,
lambda_NCE 10, flip-equivariance augmentation.

Order of updates: the engine steps G then D within one iteration (both losses come from one
forward); the reference steps D first. D's loss uses detached fakes and its own forward.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from taskbridge.methods.base import Method
from taskbridge.methods.gan_losses import check_gan_mode, discriminator_gan_loss, generator_gan_loss
from taskbridge.methods.patchnce import PatchNCE
from taskbridge.registry import METHODS
from taskbridge.translators.layers import init_weights
from taskbridge.translators.patchgan import PatchGAN
from taskbridge.translators.resnet_generator import CUT_TAPS, ResnetGenerator

ADAM_GAN = {"type": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}


def to_signed(x: Tensor) -> Tensor:
    """[0, 1] images -> the generators' [-1, 1]."""
    return x * 2.0 - 1.0


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1] images."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def unpaired_inputs(batch: dict[str, Any], who: str) -> tuple[Tensor, Tensor]:
    """Check the unpaired batch {'A': [B,3,H,W], 'B': [B,3,H,W]} and map it to [-1, 1]."""
    out = []
    for key in ("A", "B"):
        if key not in batch:
            raise KeyError(f"{who}: batch has no '{key}' images (keys: {', '.join(map(str, batch))})")
        x = batch[key]
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{who}: batch['{key}'] must be a [B, 3, H, W] tensor in [0, 1], got {shape}")
        out.append(to_signed(x))
    return out[0], out[1]


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No gradients into `module`'s parameters (the generator's pass through D), restored after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class CUT(Method):
    """Contrastive unpaired translation A -> B (defaults: the CUT preset)."""

    inference_modules = ("G",)

    def __init__(
        self,
        ngf: int = 64,
        ndf: int = 64,
        n_blocks: int = 9,
        n_layers_D: int = 3,
        norm: str = "instance",
        antialias: bool = True,
        init: str = "xavier",
        init_gain: float = 0.02,
        gan_mode: str = "lsgan",
        lambda_gan: float = 1.0,
        lambda_nce: float = 1.0,
        nce_idt: bool = True,
        nce_layers: Sequence[str] = CUT_TAPS,
        num_patches: int = 256,
        nce_T: float = 0.07,
        netF_nc: int = 256,
        use_mlp: bool = True,
        flip_equivariance: bool = False,
    ) -> None:
        super().__init__()
        self.gan_mode = check_gan_mode(gan_mode)
        self.lambda_gan = float(lambda_gan)
        self.lambda_nce = float(lambda_nce)
        self.nce_idt = bool(nce_idt)
        self.flip_equivariance = bool(flip_equivariance)
        self.G = ResnetGenerator(
            ngf=ngf, n_blocks=n_blocks, norm=norm, antialias=antialias, init=init, init_gain=init_gain
        )
        self.D = PatchGAN(
            ndf=ndf, n_layers=n_layers_D, norm=norm, antialias=antialias, init=init, init_gain=init_gain
        )
        self.nce_layers = tuple(nce_layers)
        self.G.check_taps(self.nce_layers)
        self.nce = self._make_nce([self.G.tap_channels[t] for t in self.nce_layers], num_patches, nce_T, netF_nc, use_mlp)
        self._init_heads(init, init_gain)

    # -- pieces ODCR overrides ------------------------------------------------------------
    def _make_nce(self, channels: list[int], num_patches: int, tau: float, nc: int, use_mlp: bool) -> PatchNCE:
        return PatchNCE(channels, num_patches=num_patches, nc=nc, tau=tau, use_mlp=use_mlp)

    def _init_heads(self, init: str, gain: float) -> None:
        init_weights(self.nce, init, gain)

    # -- shared forward --------------------------------------------------------------------
    def _flip(self) -> bool:
        return self.flip_equivariance and self.training and bool(torch.rand(()) < 0.5)

    def _source_feats(self, taps: list[Tensor], sl: slice, image: Tensor, flipped: bool) -> list[Tensor]:
        """Detached features of the unflipped input: reuse the translation pass's taps when the
        input was not flipped (identical values, no extra pass), else encode again without grad."""
        if not flipped:
            return [t[sl].detach() for t in taps]
        with torch.no_grad():
            return self.G.encode(image, self.nce_layers)

    def _query_feats(self, image: Tensor, flipped: bool) -> list[Tensor]:
        """Encoder features of a translated image, flipped back when its input was flipped."""
        feats = self.G.encode(image, self.nce_layers)
        return [f.flip(-1) for f in feats] if flipped else feats

    def _translate_train(
        self, real_A: Tensor, real_B: Tensor, with_B: bool
    ) -> tuple[Tensor, Tensor | None, list[Tensor], list[Tensor] | None, bool]:
        """One G pass over A (and B for identity terms): fake_B, idt_B, source taps of A and B."""
        n = real_A.shape[0]
        x = torch.cat([real_A, real_B], 0) if with_B else real_A
        flipped = self._flip()
        if flipped:
            x = x.flip(-1)
        fake, taps = self.G.forward_with_taps(x, self.nce_layers)
        fake_B, idt_B = fake[:n], (fake[n:] if with_B else None)
        src_A = self._source_feats(taps, slice(0, n), real_A, flipped)
        src_B = self._source_feats(taps, slice(n, None), real_B, flipped) if with_B else None
        return fake_B, idt_B, src_A, src_B, flipped

    def _gan_terms(self, fake_B: Tensor, real_B: Tensor) -> tuple[Tensor, Tensor]:
        with frozen(self.D):
            loss_gan = generator_gan_loss(self.D(fake_B), self.gan_mode)
        loss_D = discriminator_gan_loss(self.D(real_B), self.D(fake_B.detach()), self.gan_mode)
        return loss_gan, loss_D

    # -- Method contract -----------------------------------------------------------------
    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        """Heads share G's optimizer settings (the reference has a third Adam with the same ones)."""
        return {"G": [*self.G.parameters(), *self.nce.parameters()], "D": list(self.D.parameters())}

    def default_optim(self) -> dict[str, dict[str, Any]]:
        return {"G": dict(ADAM_GAN), "D": dict(ADAM_GAN)}

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Tensor]:
        real_A, real_B = unpaired_inputs(batch, type(self).__name__)
        fake_B, idt_B, src_A, src_B, flipped = self._translate_train(real_A, real_B, self.nce_idt)
        loss_gan, loss_D = self._gan_terms(fake_B, real_B)
        out: dict[str, Tensor] = {}
        loss_G = self.lambda_gan * loss_gan
        if self.lambda_nce > 0:
            nce = self.nce(src_A, self._query_feats(fake_B, flipped))
            out["G/nce_A"] = nce.detach()
            if self.nce_idt:
                assert src_B is not None and idt_B is not None
                nce_B = self.nce(src_B, self._query_feats(idt_B, flipped))
                out["G/nce_B"] = nce_B.detach()
                nce = 0.5 * (nce + nce_B)
            loss_G = loss_G + self.lambda_nce * nce
        out.update({"loss/G": loss_G, "loss/D": loss_D, "G/gan": loss_gan.detach()})
        return out

    def translate(self, images: Tensor) -> Tensor:
        return to_unit(self.G(to_signed(images)))

    @torch.no_grad()
    def visuals(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        real_A, real_B = unpaired_inputs(batch, type(self).__name__)
        vis = {"real_A": to_unit(real_A), "fake_B": to_unit(self.G(real_A)), "real_B": to_unit(real_B)}
        if self.nce_idt:
            vis["idt_B"] = to_unit(self.G(real_B))
        return vis


def with_defaults(cls: type, doc: str, **defaults: Any) -> type:
    """A preset subclass whose constructor signature shows the preset's defaults (so
    `METHODS.create` validates keywords and `taskbridge list` documents them)."""
    base_sig = inspect.signature(cls.__init__)
    bad = set(defaults) - set(base_sig.parameters)
    if bad:
        raise TypeError(f"unknown preset keys {bad}")

    def __init__(self: Any, **kwargs: Any) -> None:
        cls.__init__(self, **{**defaults, **kwargs})

    params = [p.replace(default=defaults[p.name]) if p.name in defaults else p for p in base_sig.parameters.values()]
    __init__.__signature__ = base_sig.replace(parameters=params)  # type: ignore[attr-defined]
    sub = type(cls.__name__ + "Preset", (cls,), {"__init__": __init__, "__doc__": doc})
    sub.__signature__ = base_sig.replace(parameters=params[1:])  # type: ignore[attr-defined]
    return sub


FastCUT = with_defaults(
    CUT,
    "FastCUT: no identity NCE, lambda_NCE 10, flip-equivariance augmentation.",
    nce_idt=False,
    lambda_nce=10.0,
    flip_equivariance=True,
)
FastCUT.__name__ = FastCUT.__qualname__ = "FastCUT"

METHODS.register("cut", doc="CUT: contrastive unpaired translation (PatchNCE + identity NCE, LSGAN).")(CUT)
METHODS.register("fastcut", doc="FastCUT: CUT without identity NCE, lambda_NCE 10, flip equivariance.")(FastCUT)
