"""The guest's init system, told from the stage itself, and services enabled by symlinks.

Enabling is done the way ``rc-update add`` and ``systemctl enable`` do it —
runlevel links and ``[Install]`` links — without running any guest binary, so
it works on any node whatever its distribution or architecture.
"""

from __future__ import annotations

from typing import Literal, Optional

from gentoobootstrap.errors import GuestError
from gentoobootstrap.guest.tree import GuestRoot

Init = Literal["openrc", "systemd"]

#: Where systemd looks for unit files, most specific first.
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")


def detect(root: GuestRoot) -> Init:
    """``systemd`` when the guest's /sbin/init is systemd, ``openrc`` for sysvinit/openrc-init."""
    init = root.realpath("/sbin/init")
    if init is not None and init.endswith("/systemd"):
        return "systemd"
    if any(root.exists(p) for p in ("/sbin/openrc", "/etc/runlevels", "/etc/inittab")):
        return "openrc"
    raise GuestError(
        f"cannot tell the stage's init system: {root.top} has no /sbin/init that is systemd "
        "and no OpenRC (/sbin/openrc, /etc/runlevels, /etc/inittab); is it a Gentoo stage?"
    )


def unit_file(root: GuestRoot, unit: str) -> Optional[str]:
    """The guest path of ``unit``'s file (``foo@bar.service`` → ``foo@.service``), or None."""
    name = unit
    if "@" in unit:
        prefix, _, rest = unit.partition("@")
        name = f"{prefix}@.{rest.rpartition('.')[2]}"
    for directory in UNIT_DIRS:
        for candidate in (f"{directory}/{unit}", f"{directory}/{name}"):
            if root.is_file(candidate):
                return candidate
    return None


def _install_section(text: str) -> dict[str, list[str]]:
    """The ``[Install]`` keys of a unit file; keys may repeat (configparser would refuse)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Install" and "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).extend(value.split())
    return values


def enable(
    root: GuestRoot,
    init: Init,
    name: str,
    runlevel: str = "default",
    target: str = "multi-user.target",
) -> None:
    """Enable service ``name`` (an OpenRC script, or a systemd unit; ``.service`` implied).

    A systemd unit is linked where its ``[Install]`` section says; one without
    that section is wanted by ``target``.
    """
    if init == "openrc":
        if not root.is_file(f"/etc/init.d/{name}"):
            raise GuestError(f"the stage has no OpenRC service {name} (/etc/init.d/{name})")
        root.symlink(f"/etc/runlevels/{runlevel}/{name}", f"/etc/init.d/{name}")
    else:
        _enable_unit(root, name if "." in name else f"{name}.service", target, set())


def _enable_unit(root: GuestRoot, unit: str, target: str, seen: set[str]) -> None:
    if unit in seen:
        return
    seen.add(unit)
    found = unit_file(root, unit)
    if found is None:
        raise GuestError(f"the stage has no systemd unit {unit} (looked in {', '.join(UNIT_DIRS)})")
    install = _install_section(root.read_text(found) or "") or {"WantedBy": [target]}
    instance = unit.partition("@")[2].rpartition(".")[0]
    for key in ("WantedBy", "RequiredBy"):
        suffix = ".wants" if key == "WantedBy" else ".requires"
        for wanted_by in install.get(key, []):
            wanted_by = wanted_by.replace("%i", instance)
            root.symlink(f"/etc/systemd/system/{wanted_by}{suffix}/{unit}", found)
    for alias in install.get("Alias", []):
        root.symlink(f"/etc/systemd/system/{alias}", found)
    for also in install.get("Also", []):
        _enable_unit(root, also, target, seen)
