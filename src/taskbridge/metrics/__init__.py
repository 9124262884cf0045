"""metrics family. PLUGINS lists the modules imported lazily by the registry."""

PLUGINS: tuple[str, ...] = ("detection", "classification", "quality")
