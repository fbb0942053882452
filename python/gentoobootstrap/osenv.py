"""The Ganeti OS-interface environment, parsed once into a frozen :class:`OSEnv`.

Ganeti clears the environment and passes the instance, its disks, NICs,
hypervisor and backend parameters and the OS parameters in variables
(see ganeti-os-interface(7)).  What an operation needs and lacks is a one-line
:class:`~gentoobootstrap.errors.OSEnvError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from gentoobootstrap import parameters
from gentoobootstrap.errors import OSEnvError

SUPPORTED_API_VERSIONS = (10, 15, 20)
_NAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


@dataclass(frozen=True)
class Disk:
    index: int
    path: Optional[Path]  # absent for userspace-only disks
    size_mib: Optional[int]  # Ganeti 3.0+
    backend_type: str  # "block" or "file:DRIVER"
    access: str = "rw"
    uuid: str = ""


@dataclass(frozen=True)
class Nic:
    index: int
    mac: str
    ip: str = ""
    mode: str = ""
    link: str = ""
    name: str = ""
    network_name: str = ""
    subnet: str = ""
    gateway: str = ""
    subnet6: str = ""
    gateway6: str = ""


class Secret(dict):  # type: ignore[type-arg]
    """OS parameter values: never shown in a repr or a log line."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: ***" for k in self) + "}"


@dataclass(frozen=True)
class OSEnv:
    api_version: int
    os_name: str
    variant: str
    debug_level: int
    params: Mapping[str, object] = field(default_factory=Secret)
    instance_name: str = ""
    hypervisor: str = ""
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    be: Mapping[str, str] = field(default_factory=dict)  # INSTANCE_BE_*, Ganeti's lower-case keys
    hv: Mapping[str, str] = field(default_factory=dict)  # INSTANCE_HV_*
    reinstall: bool = False
    old_instance_name: str = ""
    # export / import: the device to read or write, which disk it is, size fd.
    device: Optional[Path] = None
    disk_index: Optional[int] = None
    exp_size_fd: Optional[int] = None
    raw: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def maxmem_mib(self) -> Optional[int]:
        value = self.be.get("maxmem") or self.be.get("memory")
        return int(value) if value and value.isdigit() else None

    def hv_flag(self, key: str) -> bool:
        return self.hv.get(key, "").lower() == "true"

    def hook_environment(self) -> dict[str, str]:
        """Ganeti's variables as given, for hooks (they may need any of them)."""
        return dict(self.raw)


def _int(environ: Mapping[str, str], name: str, default: Optional[int] = None) -> int:
    value = environ.get(name, "")
    if value == "":
        if default is None:
            raise OSEnvError(name, "required but not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise OSEnvError(name, f"must be a whole number, not {value!r}") from None


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "")
    if not value:
        raise OSEnvError(name, "required but not set")
    return value


def _instance_name(environ: Mapping[str, str], name: str) -> str:
    value = _required(environ, name)
    if not _NAME.fullmatch(value) or len(value) > 253:
        raise OSEnvError(name, f"not a valid host name: {value!r}")
    return value


def _disks(environ: Mapping[str, str], need_path: bool) -> tuple[Disk, ...]:
    count = _int(environ, "DISK_COUNT")
    disks = []
    for i in range(count):
        path = environ.get(f"DISK_{i}_PATH") or None
        if need_path and i == 0 and path is None:
            raise OSEnvError("DISK_0_PATH", "required but not set")
        size = environ.get(f"DISK_{i}_SIZE", "")
        disks.append(
            Disk(
                index=i,
                path=Path(path) if path else None,
                size_mib=_int(environ, f"DISK_{i}_SIZE") if size else None,
                backend_type=environ.get(f"DISK_{i}_BACKEND_TYPE", "block"),
                access=environ.get(f"DISK_{i}_ACCESS", "rw"),
                uuid=environ.get(f"DISK_{i}_UUID", ""),
            )
        )
    if need_path and not disks:
        raise OSEnvError("DISK_COUNT", "the instance has no disk to install onto")
    return tuple(disks)


def _nics(environ: Mapping[str, str]) -> tuple[Nic, ...]:
    count = _int(environ, "NIC_COUNT", 0)

    def get(i: int, key: str) -> str:
        return environ.get(f"NIC_{i}_{key}", "")

    return tuple(
        Nic(
            i,
            get(i, "MAC"),
            get(i, "IP"),
            get(i, "MODE"),
            get(i, "LINK"),
            get(i, "NAME"),
            get(i, "NETWORK_NAME"),
            get(i, "NETWORK_SUBNET"),
            get(i, "NETWORK_GATEWAY"),
            get(i, "NETWORK_SUBNET6"),
            get(i, "NETWORK_GATEWAY6"),
        )
        for i in range(count)
    )


def _prefixed(environ: Mapping[str, str], prefix: str) -> dict[str, str]:
    return {k[len(prefix) :]: v for k, v in environ.items() if k.startswith(prefix)}


#: What each operation requires beyond the core variables.
OPERATIONS = ("create", "import", "export", "rename", "verify")


def parse(operation: str, environ: Mapping[str, str]) -> OSEnv:
    """Parse the environment for ``operation``; raise OSEnvError on what is missing or malformed."""
    if operation not in OPERATIONS:
        raise ValueError(operation)
    api = _int(environ, "OS_API_VERSION", 20)
    if api not in SUPPORTED_API_VERSIONS:
        raise OSEnvError("OS_API_VERSION", f"{api} is not supported (supported: 10, 15, 20)")
    core = dict(
        api_version=api,
        os_name=environ.get("OS_NAME", "gentoobootstrap"),
        variant=environ.get("OS_VARIANT") or "default",
        debug_level=_int(environ, "DEBUG_LEVEL", 0),
        params=Secret(parameters.parse(environ)),
        raw=dict(environ),
    )
    if operation == "verify":
        return OSEnv(**core)  # type: ignore[arg-type]
    instance = dict(
        instance_name=_instance_name(environ, "INSTANCE_NAME"),
        hypervisor=environ.get("HYPERVISOR", ""),
        disks=_disks(environ, need_path=operation == "create"),
        nics=_nics(environ),
        be=_prefixed(environ, "INSTANCE_BE_"),
        hv=_prefixed(environ, "INSTANCE_HV_"),
        reinstall=environ.get("INSTANCE_REINSTALL", "") in ("1", "True", "true", "yes"),
    )
    extra: dict[str, object] = {}
    if operation == "rename":
        extra["old_instance_name"] = _instance_name(environ, "OLD_INSTANCE_NAME")
    elif operation in ("export", "import"):
        prefix = operation.upper()
        extra["device"] = Path(_required(environ, f"{prefix}_DEVICE"))
        extra["disk_index"] = _int(environ, f"{prefix}_INDEX")
        if environ.get("EXP_SIZE_FD"):
            extra["exp_size_fd"] = _int(environ, "EXP_SIZE_FD")
    return OSEnv(**core, **instance, **extra)  # type: ignore[arg-type]
