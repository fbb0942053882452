"""Obtain the stage to install: for now only a local ``STAGE4_FILE``.

The stages work (download, verification, cache) replaces this module; its
interface stays ``obtain(settings) -> Path``: a verified local tarball.
"""

from __future__ import annotations

from pathlib import Path

from gentoobootstrap.errors import StageError
from gentoobootstrap.settings import Settings


def obtain(settings: Settings) -> Path:
    """The local stage tarball to unpack, checked to exist before anything touches the disk."""
    if not settings.stage4_file:
        raise StageError(
            "STAGE4_FILE is empty: set it to a local stage tarball in the variant's settings"
        )
    if "://" in settings.stage4_file:
        raise StageError(f"STAGE4_FILE: downloading {settings.stage4_file} is not supported yet")
    path = Path(settings.stage4_file)
    if not path.is_file():
        raise StageError(f"STAGE4_FILE: {path} does not exist or is not a file")
    return path
