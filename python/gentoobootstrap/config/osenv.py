"""The Ganeti OS-interface environment, parsed once into a frozen :class:`OSEnv`.

Ganeti clears the environment and passes the instance, its disks, NICs,
hypervisor and backend parameters and the OS parameters in variables
(see ganeti-os-interface(7)).  Their values are data that may be odd, so every
variable the scripts use is checked here, before anything uses it, and kept in
its canonical spelling: a value that reaches the guest's files, a command or the
log has passed its check.  What an operation lacks, or a bad value, is a
one-line :class:`~gentoobootstrap.errors.OSEnvError` naming the variable and
the allowed values.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Optional, TypeVar, Union

from gentoobootstrap.config import parameters
from gentoobootstrap.config.settings import Check, choice, pattern, whole
from gentoobootstrap.errors import OSEnvError
from gentoobootstrap.log import printable

SUPPORTED_API_VERSIONS = (10, 15, 20)
#: How much of a bad value the one error line shows (Ganeti shows the admin the last lines).
ERROR_VALUE_MAX = 80
#: Ganeti's own limits (constants.MAX_DISKS, MAX_NICS).
MAX_DISKS = 16
MAX_NICS = 8

T = TypeVar("T")
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# -- what each variable may hold ---------------------------------------------------------------
#
# Each variable has a check (settings.Check): it returns the value parsed or in its one
# canonical spelling, or raises ValueError("allowed values: ...").  Nothing else of a variable
# is ever used: only canonical values reach the guest's files, the node's commands and the log.

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_MAC_PREFIX = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){2}")
# Linux's dev_valid_name() allows more; nothing sane needs more than this.  A routed NIC's
# link is a routing table instead: a name of the same letters (rt_tables(5)), or a number.
_INTERFACE = re.compile(r"[A-Za-z0-9_.@+-]{1,15}")
_ROUTING_TABLE = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
_VLAN = re.compile(r"(\.[0-9]{1,4})?(:[0-9]{1,4})*")
_OBJECT_NAME = re.compile(r"[A-Za-z0-9_.:@+-]{1,255}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ROOT_PATH = re.compile(r"[A-Za-z0-9/_.:=+,@-]*")
_UUID = re.compile(r"[0-9A-Fa-f-]{1,64}")
_HYPERVISOR = re.compile(r"[a-z][a-z0-9-]*")
_BACKEND_TYPE = re.compile(r"block|file:[a-z0-9_-]+")


def host_name(raw: str) -> str:
    """An RFC 1123 host name or FQDN: labels of letters, digits and inner hyphens."""
    if not _HOST_NAME.fullmatch(raw) or len(raw) > 253:
        raise ValueError(
            "allowed values: a host name or FQDN (labels of at most 63 letters, digits and "
            "inner hyphens, separated by dots; at most 253 characters)"
        )
    return raw


def mac_address(raw: str) -> str:
    if not _MAC.fullmatch(raw):
        raise ValueError("allowed values: six colon-separated hex octets such as aa:00:00:12:34:56")
    return raw.lower()


def mac_prefix(raw: str) -> str:
    if not _MAC_PREFIX.fullmatch(raw):
        raise ValueError("allowed values: three colon-separated hex octets such as aa:00:00")
    return raw.lower()


def _no_scope(raw: str) -> str:
    # ipaddress takes "fe80::1%anything" as an address with a scope: never one of Ganeti's.
    if "%" in raw:
        raise ValueError("a scope (%...) is not allowed")
    return raw


def _address(kind: str, parse: Callable[[str], T]) -> Check[T]:
    def check(raw: str) -> T:
        try:
            return parse(_no_scope(raw))
        except ValueError:
            raise ValueError(f"allowed values: {kind}") from None

    return check


def _network(kind: str, parse: Callable[[str], T]) -> Check[T]:
    def check(raw: str) -> T:
        try:
            if "/" not in raw:
                raise ValueError(raw)
            return parse(_no_scope(raw))
        except ValueError:
            raise ValueError(f"allowed values: {kind} in CIDR notation") from None

    return check


ip_address = _address("an IPv4 or IPv6 address", ipaddress.ip_address)
ipv4_address = _address("an IPv4 address such as 192.0.2.1", ipaddress.IPv4Address)
ipv6_address = _address("an IPv6 address such as 2001:db8::1", ipaddress.IPv6Address)
ipv4_network = _network(
    "an IPv4 network such as 192.0.2.0/24", partial(ipaddress.IPv4Network, strict=False)
)
ipv6_network = _network(
    "an IPv6 network such as 2001:db8::/64", partial(ipaddress.IPv6Network, strict=False)
)


def interface_name(raw: str) -> str:
    if not _INTERFACE.fullmatch(raw) or raw in (".", ".."):
        raise ValueError(
            "allowed values: a Linux interface name (1 to 15 letters, digits, '_', '.', "
            "'@', '+' or '-')"
        )
    return raw


#: A routed NIC's link: a routing table's name or number.
routing_table = pattern(
    _ROUTING_TABLE,
    "a routing table's name or number for a routed NIC "
    "(letters, digits, '_', '.', '@', '+' or '-')",
)


def vlan(raw: str) -> str:
    if not raw or not _VLAN.fullmatch(raw) or any(int(v) > 4095 for v in re.findall("[0-9]+", raw)):
        raise ValueError(
            "allowed values: Ganeti's VLAN syntax (.ID untagged, :ID:ID... tagged, or both; "
            "IDs 0 to 4095)"
        )
    return raw


object_name = pattern(_OBJECT_NAME, "letters, digits, '_', '.', ':', '@', '+' and '-'")
uuid = pattern(_UUID, "a UUID")


def absolute_path(raw: str) -> Path:
    """An absolute path without control characters or ``..`` components."""
    if not raw.startswith("/") or _CONTROL.search(raw) or ".." in raw.split("/"):
        raise ValueError(
            "allowed values: an absolute path without '..' components or control characters"
        )
    return Path(raw)


def root_path(raw: str) -> str:
    if not _ROOT_PATH.fullmatch(raw):
        raise ValueError(
            "allowed values: a device such as /dev/vda1 (letters, digits and / _ . : = + , @ -)"
        )
    return raw


def boolean(raw: str) -> str:
    if raw.lower() not in ("true", "false"):
        raise ValueError("allowed values: True, False")
    return raw


#: NIC_<n>_<KEY>: the Nic field it fills (None: checked only, for hooks) and its check.  MODE
#: comes before LINK: a routed NIC's link is a routing table, any other's an interface.
NIC_VARIABLES: dict[str, tuple[Optional[str], Check[object]]] = {
    "MAC": ("mac", mac_address),
    "IP": ("ip", ip_address),
    "MODE": ("mode", choice("bridged", "routed", "openvswitch", "pool")),
    "LINK": ("link", interface_name),
    "BRIDGE": (None, interface_name),
    "VLAN": (None, vlan),
    "NAME": ("name", object_name),
    "UUID": (None, uuid),
    "NETWORK_NAME": ("network_name", object_name),
    "NETWORK_UUID": (None, uuid),
    "NETWORK_SUBNET": ("subnet", ipv4_network),
    "NETWORK_GATEWAY": ("gateway", ipv4_address),
    "NETWORK_SUBNET6": ("subnet6", ipv6_network),
    "NETWORK_GATEWAY6": ("gateway6", ipv6_address),
    "NETWORK_MAC_PREFIX": (None, mac_prefix),
}
#: The hypervisor (INSTANCE_HV_<key>) and backend (INSTANCE_BE_<key>) parameters the scripts
#: use; the others are passed to hooks as Ganeti gave them and never read.
HV_CHECKS: dict[str, Check[str]] = {
    "root_path": root_path,
    "serial_console": boolean,
    # KVM's firmware (Ganeti 4.0): BIOS, UEFI (OVMF) or the node's kernel.
    "boot_type": choice("bios", "uefi", "direct_kernel"),
}
BE_CHECKS: dict[str, Check[str]] = {
    k: pattern(re.compile("[0-9]{1,9}"), "a whole number of MiB") for k in ("maxmem", "memory")
}


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
    """One NIC's checked values; the addresses parsed, as the guest's network is planned."""

    index: int
    mac: str = ""
    ip: Optional[IPAddress] = None
    mode: str = ""
    link: str = ""
    name: str = ""
    network_name: str = ""
    subnet: Optional[ipaddress.IPv4Network] = None
    gateway: Optional[ipaddress.IPv4Address] = None
    subnet6: Optional[ipaddress.IPv6Network] = None
    gateway6: Optional[ipaddress.IPv6Address] = None


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
    def first_disk_path(self) -> Path:
        """DISK_0_PATH, the disk create installs onto and rename opens (OSEnvError if unset)."""
        return _first_disk_path(self.disks)

    @property
    def maxmem_mib(self) -> Optional[int]:
        value = self.be.get("maxmem") or self.be.get("memory")
        return int(value) if value else None

    def hv_flag(self, key: str) -> bool:
        return self.hv.get(key, "").lower() == "true"

    def hook_environment(self) -> dict[str, str]:
        """Ganeti's variables as given, for hooks (they may need any of them)."""
        return dict(self.raw)


def _value(environ: Mapping[str, str], name: str, check: Check[T]) -> Optional[T]:
    """``name``'s value passed through ``check``; None when it is unset or empty."""
    raw = environ.get(name, "")
    if raw == "":
        return None
    try:
        return check(raw)
    except ValueError as e:
        raise OSEnvError(name, f"bad value '{printable(raw, ERROR_VALUE_MAX)}'; {e}") from None


def _int(
    environ: Mapping[str, str], name: str, check: Check[int], default: Optional[int] = None
) -> int:
    value = _value(environ, name, check)
    if value is None:
        if default is None:
            raise OSEnvError(name, "required but not set")
        return default
    return value


def _required(environ: Mapping[str, str], name: str, check: Check[T]) -> T:
    value = _value(environ, name, check)
    if value is None:
        raise OSEnvError(name, "required but not set")
    return value


def _disks(environ: Mapping[str, str], need_path: bool) -> tuple[Disk, ...]:
    count = _int(environ, "DISK_COUNT", whole(0, MAX_DISKS))
    disks = []
    for i in range(count):
        path = _value(environ, f"DISK_{i}_PATH", absolute_path)
        disks.append(
            Disk(
                index=i,
                path=path,
                size_mib=_value(environ, f"DISK_{i}_SIZE", whole(0)),
                backend_type=_value(
                    environ,
                    f"DISK_{i}_BACKEND_TYPE",
                    pattern(_BACKEND_TYPE, "block, file:DRIVER"),
                )
                or "block",
                access=_value(environ, f"DISK_{i}_ACCESS", choice("rw", "ro")) or "rw",
                uuid=_value(environ, f"DISK_{i}_UUID", uuid) or "",
            )
        )
    if need_path and not disks:
        raise OSEnvError("DISK_COUNT", "the instance has no disk to install onto")
    if need_path:
        _first_disk_path(disks)
    return tuple(disks)


def _first_disk_path(disks: Sequence[Disk]) -> Path:
    if not disks or disks[0].path is None:
        raise OSEnvError("DISK_0_PATH", "required but not set")
    return disks[0].path


def _nic(environ: Mapping[str, str], i: int) -> Nic:
    fields: dict[str, object] = {}
    for key, (name, check) in NIC_VARIABLES.items():
        if key == "LINK" and fields.get("mode") == "routed":
            check = routing_table
        value = _value(environ, f"NIC_{i}_{key}", check)
        if name is not None and value is not None:
            fields[name] = value
    nic = Nic(i, **fields)  # type: ignore[arg-type]
    # As Ganeti's own address pool holds them: an IPv4 gateway inside its subnet, an IPv6
    # one inside its subnet or link-local.
    if nic.gateway is not None and nic.subnet is not None and nic.gateway not in nic.subnet:
        raise OSEnvError(
            f"NIC_{i}_NETWORK_GATEWAY",
            f"{nic.gateway} is outside NIC_{i}_NETWORK_SUBNET {nic.subnet}; "
            "allowed values: an address inside the subnet",
        )
    gateway6, subnet6 = nic.gateway6, nic.subnet6
    if gateway6 and subnet6 and gateway6 not in subnet6 and not gateway6.is_link_local:
        raise OSEnvError(
            f"NIC_{i}_NETWORK_GATEWAY6",
            f"{gateway6} is outside NIC_{i}_NETWORK_SUBNET6 {subnet6}; "
            "allowed values: an address inside the subnet or a link-local one",
        )
    return nic


def _nics(environ: Mapping[str, str]) -> tuple[Nic, ...]:
    count = _int(environ, "NIC_COUNT", whole(0, MAX_NICS), 0)
    return tuple(_nic(environ, i) for i in range(count))


def _parameters(
    environ: Mapping[str, str], prefix: str, checks: Mapping[str, Check[str]]
) -> dict[str, str]:
    """``prefix``'s variables by key, the ones in ``checks`` checked (Ganeti's lower-case keys)."""
    values = {}
    for variable, raw in environ.items():
        if variable.startswith(prefix):
            key = variable[len(prefix) :]
            check = checks.get(key)
            values[key] = raw if check is None else (_value(environ, variable, check) or "")
    return values


#: What each operation requires beyond the core variables.
OPERATIONS = ("create", "import", "export", "rename", "verify")


def parse(operation: str, environ: Mapping[str, str]) -> OSEnv:
    """Parse the environment for ``operation``; raise OSEnvError on what is missing or malformed.

    Every variable the scripts use is checked here, before anything uses it.
    """
    if operation not in OPERATIONS:
        raise ValueError(operation)
    api = _int(environ, "OS_API_VERSION", whole(0), 20)
    if api not in SUPPORTED_API_VERSIONS:
        raise OSEnvError("OS_API_VERSION", f"{api} is not supported (supported: 10, 15, 20)")
    core = dict(
        api_version=api,
        os_name=environ.get("OS_NAME", "gentoobootstrap"),
        variant=environ.get("OS_VARIANT") or "default",
        debug_level=_int(environ, "DEBUG_LEVEL", whole(0), 0),
        params=Secret(parameters.parse(environ)),
        raw=dict(environ),
    )
    if operation == "verify":
        return OSEnv(**core)  # type: ignore[arg-type]
    instance = dict(
        instance_name=_required(environ, "INSTANCE_NAME", host_name),
        hypervisor=_value(
            environ, "HYPERVISOR", pattern(_HYPERVISOR, "a hypervisor name such as kvm")
        )
        or "",
        disks=_disks(environ, need_path=operation == "create"),
        nics=_nics(environ),
        be=_parameters(environ, "INSTANCE_BE_", BE_CHECKS),
        hv=_parameters(environ, "INSTANCE_HV_", HV_CHECKS),
        reinstall=environ.get("INSTANCE_REINSTALL", "") in ("1", "True", "true", "yes"),
    )
    extra: dict[str, object] = {}
    if operation == "rename":
        extra["old_instance_name"] = _required(environ, "OLD_INSTANCE_NAME", host_name)
    elif operation in ("export", "import"):
        prefix = operation.upper()
        extra["device"] = _required(environ, f"{prefix}_DEVICE", absolute_path)
        extra["disk_index"] = _int(environ, f"{prefix}_INDEX", whole(0, MAX_DISKS - 1))
        extra["exp_size_fd"] = _value(environ, "EXP_SIZE_FD", whole(0))
    return OSEnv(**core, **instance, **extra)  # type: ignore[arg-type]
