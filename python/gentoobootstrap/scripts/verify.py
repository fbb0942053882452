"""``verify parameters``: check the OS parameters with only what Ganeti passes to verify.

Ganeti gives verify no instance, disk or NIC variables; the OS parameters
were already parsed (and checked) with the environment, and the variant's
settings were loaded, so reaching here means everything is valid.
"""

from __future__ import annotations

import logging

from gentoobootstrap.config.osenv import OSEnv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.errors import ParameterError

log = logging.getLogger(__name__)

CHECKS = ("parameters",)


def main(env: OSEnv, settings: Settings, argv: list[str]) -> None:
    unknown = [a for a in argv if a not in CHECKS]
    if unknown:
        raise ParameterError(f"unknown verify check {unknown[0]!r} (allowed: {', '.join(CHECKS)})")
    log.debug(
        "verify: variant %s, parameters %s are valid", env.variant, ", ".join(env.params) or "none"
    )
