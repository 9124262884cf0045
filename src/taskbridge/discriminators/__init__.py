"""discriminators family: image -> realness scores, for the adversarial methods (built from `discriminator:` sections).

PLUGINS lists the modules imported lazily by the registry. `image_pool` is the history of fakes
CycleGAN's discriminator trains on (not registered: a buffer, not a network).
"""

PLUGINS: tuple[str, ...] = ("patchgan", "stylegan2", "facial_component")
