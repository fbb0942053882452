"""The guest's network: which address each NIC gets, written for netifrc and systemd-networkd.

``NETWORK=none`` leaves only ``lo`` (for admins who configure the network in a hook);
``dhcp`` asks DHCP on every NIC; ``ganeti`` gives a NIC on a Ganeti network
its static ``NIC_n_IP`` with the network's subnet and gateway (and an IPv6
address from the network's IPv6 prefix and the NIC's MAC, EUI-64, with the
IPv6 gateway), and DHCP to NICs that are on no Ganeti network.

Interface names: NIC *n* is ``eth<n>``, pinned to its MAC by a systemd
``.link`` file that udev applies (both Gentoo flavours use systemd's udev).
Ganeti gives NICs PCI slots in NIC order, so the kernel's own ``eth<n>``
names already agree; the ``.link`` file only stops udev's "predictable"
renaming (``enp0s4``) and keeps the name tied to the MAC.  networkd's
``.network`` files match by MAC as well, so they hold whatever the name.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from gentoobootstrap.config.osenv import Nic
from gentoobootstrap.errors import OSEnvError

log = logging.getLogger(__name__)

HEADER = "# Written by ganeti-instance-gentoobootstrap from the instance's NICs (NETWORK={mode}).\n"

# netifrc's /etc/conf.d/net is sourced as shell by root at every boot, and a networkd file
# takes any "Key=" line as a setting: every value is held to one of these right where it is
# written, whatever checked it before.
_SAFE = {
    "interface name": re.compile(r"eth[0-9]{1,2}"),
    "MAC address": re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}"),
    "address": re.compile(r"[0-9a-f.:]+/[0-9]{1,3}"),
    "gateway": re.compile(r"[0-9a-f.:]+"),
    "NETWORK mode": re.compile(r"[a-z]+"),
    "DHCP module": re.compile(r"[a-z]+"),
}


@dataclass(frozen=True)
class Interface:
    """What one NIC of the guest is configured with."""

    name: str
    mac: str
    dhcp: bool  # DHCPv4 (IPv6 router advertisements are always accepted)
    addresses: tuple[str, ...] = ()  # CIDR, IPv4 before IPv6
    gateways: tuple[str, ...] = ()


def eui64(prefix: ipaddress.IPv6Network, mac: str) -> ipaddress.IPv6Interface:
    """The SLAAC address of ``mac`` in a /64 ``prefix`` (RFC 4291 appendix A)."""
    if not _SAFE["MAC address"].fullmatch(mac.lower()):
        raise ValueError(mac)
    octets = bytes(int(x, 16) for x in mac.split(":"))
    ident = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:6]
    address = int(prefix.network_address) | int.from_bytes(ident, "big")
    return ipaddress.IPv6Interface((address, prefix.prefixlen))


def _safe(what: str, value: str) -> str:
    """``value``, if it is plainly a ``what``; anything else never reaches the guest's files."""
    if not _SAFE[what].fullmatch(value):
        raise OSEnvError("NIC", f"refusing to write {what} {value!r} into the guest")
    return value


def _static(nic: Nic) -> tuple[list[str], list[str]]:
    """Addresses and gateways of a NIC on a Ganeti network (osenv has checked and parsed them)."""
    addresses: list[str] = []
    gateways: list[str] = []
    ip, subnet = nic.ip, nic.subnet
    if subnet is not None and isinstance(ip, ipaddress.IPv4Address):
        if ip in subnet:
            addresses.append(f"{ip}/{subnet.prefixlen}")
            if nic.gateway is not None:
                gateways.append(str(nic.gateway))
        else:
            log.warning(
                "NIC %d: IP %s is outside its network's subnet %s", nic.index, ip, nic.subnet
            )
    if nic.subnet6 is not None:
        address6 = None
        if isinstance(ip, ipaddress.IPv6Address) and ip in nic.subnet6:
            address6 = ipaddress.IPv6Interface((ip, nic.subnet6.prefixlen))
        elif nic.subnet6.prefixlen == 64 and nic.mac:
            address6 = eui64(nic.subnet6, nic.mac)
        if address6 is not None:
            addresses.append(str(address6))
            if nic.gateway6 is not None:
                gateways.append(str(nic.gateway6))
    return addresses, gateways


def plan(nics: Sequence[Nic], mode: str) -> list[Interface]:
    """The interfaces of ``NETWORK=mode`` for the instance's NICs."""
    if mode == "none":
        return []
    interfaces = []
    for nic in nics:
        name = f"eth{nic.index}"
        if mode == "dhcp" or not nic.network_name:
            interfaces.append(Interface(name, nic.mac, dhcp=True))
            continue
        addresses, gateways = _static(nic)
        has_ipv4 = any(":" not in a for a in addresses)
        interfaces.append(Interface(name, nic.mac, not has_ipv4, tuple(addresses), tuple(gateways)))
    return interfaces


def netifrc(interfaces: Sequence[Interface], mode: str, dhcp_module: str = "") -> str:
    """``/etc/conf.d/net`` for OpenRC's netifrc (entries of a setting one a line).

    ``dhcp_module`` (``dhcpcd``, ``dhclient``, ``pump``, ``udhcpc``) is named in
    ``modules_IFACE`` of each DHCP interface: with several clients installed
    netifrc would otherwise take whichever module it loads last.
    """
    lines = [HEADER.format(mode=_safe("NETWORK mode", mode)).rstrip("\n")]
    for i in interfaces:
        name = _safe("interface name", i.name)
        config = (["dhcp"] if i.dhcp else []) + [_safe("address", a) for a in i.addresses]
        lines.append(f'config_{name}="' + "\n".join(config) + '"')
        if i.dhcp and dhcp_module:
            lines.append(f'modules_{name}="{_safe("DHCP module", dhcp_module)}"')
        if i.gateways:
            routes = "\n".join(f"default via {_safe('gateway', g)}" for g in i.gateways)
            lines.append(f'routes_{name}="{routes}"')
    return "\n".join(lines) + "\n"


def networkd(interface: Interface, mode: str) -> str:
    """A systemd-networkd ``.network`` file for ``interface``, matched by MAC."""
    name = _safe("interface name", interface.name)
    if interface.mac:
        match = f"PermanentMACAddress={_safe('MAC address', interface.mac)}"
    else:
        match = f"Name={name}"
    lines = [
        HEADER.format(mode=_safe("NETWORK mode", mode)).rstrip("\n"),
        "[Match]",
        match,
        "",
        "[Network]",
        f"DHCP={'ipv4' if interface.dhcp else 'no'}",
        "IPv6AcceptRA=yes",
    ]
    lines += [f"Address={_safe('address', a)}" for a in interface.addresses]
    lines += [f"Gateway={_safe('gateway', g)}" for g in interface.gateways]
    return "\n".join(lines) + "\n"


def link(interface: Interface) -> str:
    """A systemd ``.link`` file naming the NIC with ``interface.mac`` ``interface.name``."""
    name = _safe("interface name", interface.name)
    mac = _safe("MAC address", interface.mac)
    return (
        "# Written by ganeti-instance-gentoobootstrap: Ganeti NIC "
        f"{name[3:]} is {name}.\n"
        f"[Match]\nPermanentMACAddress={mac}\n\n[Link]\nName={name}\n"
    )
