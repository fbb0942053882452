"""The exceptions of the library.

Library code raises these and never exits; only :mod:`gentoobootstrap.cli`
turns them into one ``ERROR:`` line and an exit status.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional


class GentooBootstrapError(Exception):
    """Root of every error this project reports to the admin."""


class OSEnvError(GentooBootstrapError):
    """A Ganeti OS-interface variable is missing or malformed."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {problem}")


class ConfigError(GentooBootstrapError):
    """A configuration file or setting is wrong; names file, line and key when known."""

    def __init__(
        self,
        message: str,
        *,
        path: Optional[Path] = None,
        line: Optional[int] = None,
        key: Optional[str] = None,
    ) -> None:
        self.path, self.line, self.key = path, line, key
        where = ""
        if path is not None:
            where = str(path) + (f":{line}" if line else "") + ": "
        if key:
            where += f"{key}: "
        super().__init__(where + message)


class ParameterError(GentooBootstrapError):
    """An OS parameter (``-O name=value``) is unknown or has a bad value."""


class CommandError(GentooBootstrapError):
    """An external command failed; carries its exit status and the tail of stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        tail = " | ".join(line for line in stderr.strip().splitlines()[-3:] if line.strip())
        message = f"{argv[0]} failed with exit status {returncode}"
        if tail:
            message += f": {tail}"
        super().__init__(message)


class ToolNotFoundError(GentooBootstrapError):
    """A required tool is not installed on the node."""

    def __init__(self, tool: str, package: Optional[str] = None) -> None:
        self.tool = tool
        hint = f": install {package}" if package else ""
        super().__init__(f"{tool} not found{hint}")


class DiskError(GentooBootstrapError):
    """The instance disk cannot be used as asked (too small, busy, unreadable layout)."""


class StageError(GentooBootstrapError):
    """A stage or snapshot cannot be found, downloaded or unpacked."""


class VerificationError(StageError):
    """A download failed its checksum or signature check."""


class GuestError(GentooBootstrapError):
    """The unpacked stage cannot be configured as asked (a file or service it lacks)."""


class HookError(GentooBootstrapError):
    """A customization hook failed."""


class StreamError(GentooBootstrapError):
    """An export/import stream is truncated, corrupt or of an unknown format."""


class Interrupted(BaseException):
    """SIGTERM, SIGINT or SIGHUP arrived; unwinds the stack so every resource is released.

    A BaseException so that no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signum: int, name: str) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {name}")
