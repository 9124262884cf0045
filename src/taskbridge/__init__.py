"""taskbridge: make frozen vision models work on degraded images.

Heavy submodules are imported lazily so `import taskbridge` stays cheap and optional
dependencies are only needed by the parts that use them.
"""

__version__ = "0.1.0"
