"""Turn SIGTERM, SIGINT and SIGHUP into one :class:`Interrupted` exception.

The exception unwinds the stack, so every context manager on the way releases
its resource (mounts, loop devices, children).  Later signals are ignored so
that they cannot cut the cleanup short.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any, Optional

from gentoobootstrap.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum, signal.Signals(signum).name)

    for sig in SIGNALS:
        previous[int(sig)] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
