"""``rename``: give the guest its new name (/etc/hostname, /etc/conf.d/hostname, /etc/hosts).

Ganeti runs rename for ``gnt-instance rename`` and after every import, with
``OLD_INSTANCE_NAME`` the source instance's name, which may equal the new one:
then nothing is done (the disk is not even opened).  A guest whose host name
is neither the old nor the new name was renamed by its admin: it is left as
it is, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Optional

from gentoobootstrap import log
from gentoobootstrap.config.osenv import OSEnv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.guest import configure, installed
from gentoobootstrap.guest.tree import GuestRoot

logger = logging.getLogger(__name__)


def short(name: str) -> str:
    return name.split(".", 1)[0]


def current_hostname(root: GuestRoot) -> Optional[str]:
    """The guest's name: /etc/hostname, else OpenRC's /etc/conf.d/hostname; None if neither."""
    text = root.read_text("/etc/hostname")
    if text is not None and text.strip():
        return text.strip().split()[0]
    conf = root.read_text("/etc/conf.d/hostname") or ""
    match = re.search(r"(?m)^\s*hostname=[\"']?([^\"'\s]+)", conf)
    return match.group(1) if match else None


def _rename_hosts(root: GuestRoot, old: str, new: str) -> None:
    """Other /etc/hosts lines that name the guest (an address of its own) get the new name."""
    text = root.read_text("/etc/hosts")
    if text is None:
        return
    names = {old: new, short(old): short(new)}
    lines = []
    for line in text.splitlines():
        content, hash_, comment = line.partition("#")
        words = re.split(r"(\s+)", content)
        lines.append("".join(names.get(w, w) for w in words) + hash_ + comment)
    root.write_text("/etc/hosts", "\n".join(lines) + "\n")


def rename_guest(root: GuestRoot, old: str, new: str) -> bool:
    """Rename the guest in ``root`` from ``old`` to ``new``; False when it is left as it was."""
    current = current_hostname(root)
    if current in (new, short(new)):
        logger.info("the guest is already named %s; nothing to change", current)
        return False
    if current not in (old, short(old)):
        logger.warning(
            "the guest's host name is %s, neither the old name %s nor the new name %s: "
            "left as it is (its admin chose it)",
            log.printable(current) if current else "unset",
            old,
            new,
        )
        return False
    _rename_hosts(root, old, new)
    configure.set_hostname(root, new)
    return True


def main(env: OSEnv, settings: Settings, argv: list[str]) -> None:
    old, new = env.old_instance_name, env.instance_name
    if old == new:
        logger.info("the name stays %s; nothing to do", new)
        return
    with contextlib.ExitStack() as stack:
        with log.complete_step("open the instance disk"):
            opened = installed.open_disk(
                stack,
                env.first_disk_path,
                readonly=False,
                root_path=env.hv.get("root_path", ""),
                with_boot=False,
            )
        with log.complete_step(f"rename the guest from {old} to {new}"):
            renamed = rename_guest(GuestRoot(opened.target), old, new)
    if renamed:
        logger.info("%s is now named %s", old, new)
