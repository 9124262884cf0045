"""restorers family. PLUGINS lists the modules imported lazily by the registry."""

PLUGINS: tuple[str, ...] = ("identity", "dcp", "aodnet", "sci", "gfpgan")
