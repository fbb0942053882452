"""Logging for the Ganeti OS log: one line per step with its duration.

Everything goes to stderr (export's stdout carries only data).  Ganeti shows
the admin the last 20 lines of a failed script, so the last line is the error.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

log = logging.getLogger("gentoobootstrap")


class _Plain(logging.Formatter):
    """The message alone, a warning or an error led by its level: for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname}: {text}"


def setup(debug: bool = False, *, plain: bool = False) -> None:
    """Send the library's log to stderr; ``debug`` shows every command run.

    Each line carries its time and level, or, ``plain``, only the message (see _Plain)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _Plain()
        if plain
        else logging.Formatter("%(asctime)s %(levelname)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger("gentoobootstrap")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False


#: The longest untrusted value shown in a log line.
PRINTABLE_MAX = 200


def printable(value: str, limit: int = PRINTABLE_MAX) -> str:
    """An untrusted ``value`` fit for one log line: control characters (newlines included),
    other unprintable characters and backslashes escaped, cut at ``limit`` characters."""
    shown = "".join(
        c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii")
        for c in value[:limit]
    )
    return shown + ("..." if len(value) > limit else "")


@contextlib.contextmanager
def complete_step(name: str) -> Iterator[None]:
    """Log ``name`` when it starts and its duration when it ends (mkosi's complete_step)."""
    log.info("%s ...", name)
    start = time.monotonic()
    yield
    log.info("%s done (%.1fs)", name, time.monotonic() - start)
