"""Processes that use a directory: found through ``/proc``, and killed.

A process left running in a mounted guest tree (a daemon a hook started in a chroot, a
shell left in a directory) keeps the filesystem busy and the disk attached; nothing can be
unmounted until it is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

#: How long a left-over process gets to exit after SIGTERM, then after SIGKILL.
KILL_TIMEOUT = 5.0


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str
    uses: str  # what of it lies under the directory: root, cwd, exe, an open file, a mapping


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def holders(target: Path, proc: Path = Path("/proc")) -> list[Holder]:
    """Processes whose root, cwd, executable, open files or mappings lie under ``target``."""
    top = os.path.realpath(target)
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        uses = _uses(entry, top)
        if uses:
            try:
                command = (entry / "comm").read_text().strip()
            except OSError:
                continue  # gone meanwhile
            found.append(Holder(int(entry.name), command, uses))
    return found


def _uses(entry: Path, top: str) -> Optional[str]:
    try:
        for link in ("root", "cwd", "exe"):
            with contextlib.suppress(FileNotFoundError):
                if _under(os.readlink(entry / link), top):
                    return link
        for fd in (entry / "fd").iterdir():
            with contextlib.suppress(FileNotFoundError):
                if _under(os.readlink(fd), top):
                    return "an open file"
        for line in (entry / "maps").read_text().splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and _under(fields[5], top):
                return "a mapped file"
    except (PermissionError, ProcessLookupError, FileNotFoundError):
        pass  # a kernel thread, or it exited while we looked
    return None


def kill_holders(target: Path, who: str) -> list[Holder]:
    """Kill what still uses ``target`` (SIGTERM, then SIGKILL), with a warning for each that
    names ``who`` left it; what survives even SIGKILL (normally nothing)."""
    found = holders(target)
    if not found:
        return []
    for h in found:
        log.warning(
            "%s left process %d (%s) using %s in %s: killing it",
            who,
            h.pid,
            h.command,
            h.uses,
            target,
        )
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for h in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(h.pid, sig)
        deadline = time.monotonic() + KILL_TIMEOUT
        while time.monotonic() < deadline:
            found = holders(target)
            if not found:
                return []
            time.sleep(0.05)
    return found
