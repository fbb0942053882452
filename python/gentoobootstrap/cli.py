"""Entry point of the OS scripts: ``sys.exit(cli.main("create", sys.argv[1:]))``.

Only here are errors turned into an exit status: one ``ERROR:`` line, last in
the log (Ganeti shows the admin the last 20 lines).  Unexpected exceptions
keep their traceback: the log is the only record.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Optional

from gentoobootstrap import config, log, mounts, osenv
from gentoobootstrap.errors import GentooBootstrapError, Interrupted
from gentoobootstrap.signals import interrupts_as_exceptions

logger = logging.getLogger("gentoobootstrap")

#: OS script → module with ``main(env, settings, argv)``.
MODULES = {
    "create": "gentoobootstrap.create",
    "import": "gentoobootstrap.import_",
    "export": "gentoobootstrap.export",
    "rename": "gentoobootstrap.rename",
    "verify": "gentoobootstrap.verify",
}


def main(
    operation: str, argv: Sequence[str] = (), environ: Optional[Mapping[str, str]] = None
) -> int:
    """Run ``operation``; ``environ`` None means a real run as an OS script.

    A real run of an operation that mounts gets a private mount namespace (see
    mounts.private_namespace); tests that pass ``environ`` run in-process and do not.
    """
    isolate = environ is None and operation != "verify"
    environ = os.environ if environ is None else environ
    debug = environ.get("DEBUG_LEVEL", "0") not in ("", "0")
    log.setup(debug)
    module = importlib.import_module(MODULES[operation])
    with interrupts_as_exceptions():
        try:
            if isolate:
                mounts.private_namespace()
            env = osenv.parse(operation, environ)
            settings = config.apply_parameters(config.load(env.variant), env.params)
            if settings.debug and not debug:
                log.setup(True)
            module.main(env, settings, list(argv))
        except GentooBootstrapError as e:
            logger.error("%s: %s", operation, e)
            return 1
        except Interrupted as e:
            logger.error("%s: %s; everything it made was released", operation, e)
            return 128 + e.signum
    return 0
