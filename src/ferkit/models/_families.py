"""Imports every model family module so their ``@register_model`` decorators run.

A new family is one new module in ``ferkit/models/``: it is found by name (as
``ferkit <command>`` modules are), with nothing else to edit. The modules that
hold the machinery rather than models are skipped.
"""

import importlib
import pkgutil

import ferkit.models as _pkg

#: Modules of ferkit/models/ that define no model.
MACHINERY = frozenset({"registry", "checkpoint", "input_config", "pretrained", "flops", "ensemble"})

FAMILIES = tuple(
    info.name
    for info in sorted(pkgutil.iter_modules(_pkg.__path__), key=lambda m: m.name)
    if not info.name.startswith("_") and info.name not in MACHINERY
)

for _name in FAMILIES:
    importlib.import_module(f"ferkit.models.{_name}")
