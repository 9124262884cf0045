"""features family: frozen feature networks that perceptual, content and style losses read.

PLUGINS lists the modules imported lazily by the registry. A feature network maps [B, 3, H, W] images
in [0, 1] to the named layers a loss asks for (`net(images, ["relu1_1", "relu4_1"])`), normalising
the input itself; its parameters never train.
"""

PLUGINS: tuple[str, ...] = ("vgg", "yolo")
