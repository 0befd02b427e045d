"""Face detection and face crops: moved to :mod:`ferkit.faces` (below every layer that
uses it); this name stays so existing imports keep working. Same objects, not copies:
registering a detector through either name registers it once.
"""

from ferkit.faces import *
from ferkit.faces import __all__  # noqa: F401
from ferkit.faces.registry import _DETECTORS, _cache  # noqa: F401
