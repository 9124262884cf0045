"""losses family: the building blocks methods combine (adversarial losses, PatchNCE, ODCR's WPNCE,
GFP-GAN's perceptual/style and identity losses).

PLUGINS lists the modules imported lazily by the registry. Registered losses can be built by name
(`LOSSES.create("gan", mode="lsgan")`); functional forms sit next to them for direct use.
"""

PLUGINS: tuple[str, ...] = ("gan", "patchnce", "wpnce", "style_content", "perceptual", "identity")
