"""``import``: not implemented yet."""

from __future__ import annotations

from gentoobootstrap.errors import GentooBootstrapError
from gentoobootstrap.osenv import OSEnv
from gentoobootstrap.settings import Settings


def main(env: OSEnv, settings: Settings, argv: list[str]) -> None:
    raise GentooBootstrapError("import is not implemented yet")
