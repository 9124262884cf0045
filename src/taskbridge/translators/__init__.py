"""translators family. PLUGINS lists the modules imported lazily by the registry."""

PLUGINS: tuple[str, ...] = ("vat", "resnet_generator", "hierarchy_flow", "gfpgan")
