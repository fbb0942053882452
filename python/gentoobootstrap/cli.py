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
from typing import Callable, Optional

from gentoobootstrap import log
from gentoobootstrap.config import files, osenv
from gentoobootstrap.disk import mounts
from gentoobootstrap.errors import GentooBootstrapError, Interrupted, OSEnvError
from gentoobootstrap.signals import interrupts_as_exceptions

logger = logging.getLogger("gentoobootstrap")

#: OS script → module with ``main(env, settings, argv)``.
MODULES = {
    "create": "gentoobootstrap.scripts.create",
    "import": "gentoobootstrap.scripts.import_",
    "export": "gentoobootstrap.scripts.export",
    "rename": "gentoobootstrap.scripts.rename",
    "verify": "gentoobootstrap.scripts.verify",
}


#: The OS scripts that take arguments (verify: the checks); the others take none.
TAKE_ARGUMENTS = ("verify",)
#: The OS scripts that mount nothing: they need no mount namespace of their own.
MOUNT_NOTHING = ("verify",)


def main(
    operation: str,
    argv: Sequence[str] = (),
    environ: Optional[Mapping[str, str]] = None,
    *,
    isolate: bool = True,
) -> int:
    """Run ``operation`` as Ganeti does, in ``environ`` (None: this process's environment).

    With ``isolate``, an operation that mounts gets a private mount namespace (see
    mounts.private_namespace); tests that run it inside their own process pass False.
    """
    environ = os.environ if environ is None else environ
    log.setup()
    module = importlib.import_module(MODULES[operation])

    def run() -> None:
        if argv and operation not in TAKE_ARGUMENTS:
            raise OSEnvError("argv", f"{operation} takes no arguments, got {' '.join(argv)!r}")
        env = osenv.parse(operation, environ)
        settings = files.apply_parameters(files.load(env.variant), env.params)
        if env.debug_level or settings.debug:
            log.setup(True)
        if isolate and operation not in MOUNT_NOTHING:
            mounts.private_namespace()
        module.main(env, settings, list(argv))

    return exit_status(operation, run)


def exit_status(name: str, work: Callable[[], Optional[int]]) -> int:
    """Run ``work`` with signals as exceptions, the one error policy of every entry point.

    Our errors become one ``ERROR:`` line, last in the log (``name:`` first, when given)
    and exit status 1; a signal 128 + its number.  Unexpected exceptions keep their
    traceback: the log is the only record.  ``work`` may return its own exit status.
    """
    prefix = f"{name}: " if name else ""
    with interrupts_as_exceptions():
        try:
            return work() or 0
        except GentooBootstrapError as e:
            logger.error("%s%s", prefix, e)
            return 1
        except Interrupted as e:
            logger.error("%s%s; everything it made was released", prefix, e)
            return 128 + e.signum
