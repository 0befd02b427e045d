"""Moved to :mod:`ferkit.models.pretrained` (training and evaluation resolve model names
too, and lower layers may not import ``inference/``). This name stays an alias of that very
module, so ``from ferkit.inference.pretrained import resolve_pretrained`` keeps working
and patching ``WEIGHTS_DIR`` here patches the real one.
"""

import sys

from ferkit.models import pretrained as _pretrained

sys.modules[__name__] = _pretrained
