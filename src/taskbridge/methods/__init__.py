"""methods family. PLUGINS lists the modules imported lazily by the registry."""

PLUGINS: tuple[str, ...] = ("vat", "cyclegan", "cut", "odcr", "hierarchy_flow", "gfpgan")
