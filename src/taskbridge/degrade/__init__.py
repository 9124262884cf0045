"""degrade family: clean -> degraded (+ the parameters used), seeded and differentiable.

PLUGINS lists the modules imported lazily by the registry ("haze" lives in `atmospheric`,
"lowlight" in `darken`, "face" in `face`). The functional forms are re-exported here for direct use.
"""

from taskbridge.degrade.atmospheric import HAZE_LEVELS, Haze, depth_proxy, haze
from taskbridge.degrade.base import Degradation, run_degradation
from taskbridge.degrade.darken import LowLight, lowlight

PLUGINS: tuple[str, ...] = ("atmospheric", "darken", "face")

__all__ = ["HAZE_LEVELS", "PLUGINS", "Degradation", "Haze", "LowLight", "depth_proxy", "haze", "lowlight", "run_degradation"]
