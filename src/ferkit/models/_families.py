"""Imports every model family module so their registrations run.

A new family: add a module under ferkit/models/ and import it here.
"""

from ferkit.models import boulis  # noqa: F401

for _optional in ("li", "transfer", "wiranata", "awei", "vgg_fer", "resnet_fer"):
    try:
        __import__(f"ferkit.models.{_optional}")
    except ModuleNotFoundError as e:  # family not written yet, or optional dep missing
        if e.name != f"ferkit.models.{_optional}":
            raise
