"""Which address each NIC gets, with and without Ganeti networks, IPv4 and IPv6."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest

from gentoobootstrap.config import osenv
from gentoobootstrap.config.osenv import Nic
from gentoobootstrap.errors import OSEnvError
from gentoobootstrap.guest import network
from gentoobootstrap.guest.network import Interface
from support import NIC0_NETWORK, ganeti_environ
from support.logs import plain_logging  # noqa: F401 (autouse)

MAC = "aa:00:00:12:34:56"


def make_nic(
    index: int,
    mac: str,
    ip: str = "",
    *,
    mode: str = "",
    network_name: str = "",
    subnet: str = "",
    gateway: str = "",
    subnet6: str = "",
    gateway6: str = "",
) -> Nic:
    """A NIC as osenv gives it: its addresses parsed."""
    return Nic(
        index,
        mac,
        ipaddress.ip_address(ip) if ip else None,
        mode,
        network_name=network_name,
        subnet=ipaddress.IPv4Network(subnet) if subnet else None,
        gateway=ipaddress.IPv4Address(gateway) if gateway else None,
        subnet6=ipaddress.IPv6Network(subnet6) if subnet6 else None,
        gateway6=ipaddress.IPv6Address(gateway6) if gateway6 else None,
    )


def test_eui64_is_rfc4291() -> None:
    prefix = ipaddress.IPv6Network("2001:db8::/64")
    assert str(network.eui64(prefix, "52:54:00:12:34:56")) == "2001:db8::5054:ff:fe12:3456/64"


@pytest.mark.parametrize(
    ("nic", "expected"),
    [
        # No Ganeti network: DHCP, even with an IP (nothing says its prefix or gateway).
        (make_nic(0, MAC), Interface("eth0", MAC, True)),
        (make_nic(0, MAC, ip="203.0.113.5", mode="routed"), Interface("eth0", MAC, True)),
        # IPv4 network.
        (
            make_nic(0, MAC, "192.0.2.10", network_name="n", subnet="192.0.2.0/24",
                     gateway="192.0.2.1"),
            Interface("eth0", MAC, False, ("192.0.2.10/24",), ("192.0.2.1",)),
        ),
        # No gateway: address only.
        (
            make_nic(1, MAC, "10.1.2.3", network_name="n", subnet="10.0.0.0/8"),
            Interface("eth1", MAC, False, ("10.1.2.3/8",)),
        ),
        # On a network but no IP from its pool: DHCP.
        (
            make_nic(0, MAC, network_name="n", subnet="192.0.2.0/24", gateway="192.0.2.1"),
            Interface("eth0", MAC, True),
        ),
        # IPv4 and IPv6: EUI-64 in the /64.
        (
            make_nic(0, MAC, "192.0.2.10", network_name="n", subnet="192.0.2.0/24",
                gateway="192.0.2.1", subnet6="2001:db8:1::/64", gateway6="2001:db8:1::1"),
            Interface("eth0", MAC, False,
                      ("192.0.2.10/24", "2001:db8:1:0:a800:ff:fe12:3456/64"),
                      ("192.0.2.1", "2001:db8:1::1")),
        ),
        # An IPv6 NIC IP in the network's IPv6 subnet is used as it is.
        (
            make_nic(0, MAC, "2001:db8:2::10", network_name="n", subnet6="2001:db8:2::/48",
                gateway6="2001:db8:2::1"),
            Interface("eth0", MAC, True, ("2001:db8:2::10/48",), ("2001:db8:2::1",)),
        ),
        # IPv6 prefix not a /64 and no IPv6 IP: left to router advertisements.
        (
            make_nic(0, MAC, "192.0.2.10", network_name="n", subnet="192.0.2.0/24",
                subnet6="2001:db8:3::/56", gateway6="2001:db8:3::1"),
            Interface("eth0", MAC, False, ("192.0.2.10/24",)),
        ),
    ],
)  # fmt: skip
def test_plan_ganeti(nic: Nic, expected: Interface) -> None:
    assert network.plan([nic], "ganeti") == [expected]


def test_plan_takes_the_nics_osenv_checked() -> None:
    env = osenv.parse("create", ganeti_environ(Path("/dev/xvda"), **NIC0_NETWORK))
    assert network.plan(env.nics, "ganeti") == [
        Interface("eth0", MAC, False,
                  ("192.0.2.10/24", "2001:db8:1:0:a800:ff:fe12:3456/64"),
                  ("192.0.2.1", "2001:db8:1::1")),
    ]  # fmt: skip


def test_plan_none_and_dhcp() -> None:
    nics = [make_nic(0, MAC, "192.0.2.10", network_name="n", subnet="192.0.2.0/24")]
    nics.append(make_nic(1, ""))
    assert network.plan(nics, "none") == []
    assert network.plan(nics, "dhcp") == [
        Interface("eth0", MAC, True),
        Interface("eth1", "", True),
    ]


def test_ip_outside_the_subnet_falls_back_to_dhcp(caplog: pytest.LogCaptureFixture) -> None:
    nic = make_nic(0, MAC, "198.51.100.7", network_name="n", subnet="192.0.2.0/24")
    assert network.plan([nic], "ganeti") == [Interface("eth0", MAC, True)]
    assert "outside its network's subnet" in caplog.text


def test_renderings() -> None:
    static = Interface("eth0", MAC, False, ("192.0.2.10/24",), ("192.0.2.1",))
    dhcp = Interface("eth1", "", True)
    assert network.netifrc([static, dhcp], "ganeti").splitlines()[1:] == [
        'config_eth0="192.0.2.10/24"',
        'routes_eth0="default via 192.0.2.1"',
        'config_eth1="dhcp"',
    ]
    assert network.networkd(static, "ganeti").splitlines()[1:] == [
        "[Match]",
        f"PermanentMACAddress={MAC}",
        "",
        "[Network]",
        "DHCP=no",
        "IPv6AcceptRA=yes",
        "Address=192.0.2.10/24",
        "Gateway=192.0.2.1",
    ]
    assert "Name=eth1" in network.networkd(dhcp, "dhcp")  # no MAC: matched by name
    assert network.link(static).splitlines()[1:] == [
        "[Match]",
        f"PermanentMACAddress={MAC}",
        "",
        "[Link]",
        "Name=eth0",
    ]


def test_netifrc_names_the_dhcp_module_of_dhcp_interfaces_only() -> None:
    static = Interface("eth0", MAC, False, ("192.0.2.10/24",), ("192.0.2.1",))
    dhcp = Interface("eth1", "", True)
    assert network.netifrc([static, dhcp], "ganeti", "udhcpc").splitlines()[1:] == [
        'config_eth0="192.0.2.10/24"',
        'routes_eth0="default via 192.0.2.1"',
        'config_eth1="dhcp"',
        'modules_eth1="udhcpc"',
    ]


# -- hostile values never land in the guest's files ---------------------------------------------

# osenv refuses them (test_osenv); the writers hold every value to a plain one as well.
GATEWAY_ATTACK = '192.0.2.1"; touch /x; "'
MAC_ATTACK = f"{MAC}\n[Network]\nDNS=203.0.113.66"


@pytest.mark.parametrize("mode", ["dhcp", "ganeti"])
def test_a_mac_with_a_newline_never_reaches_a_networkd_file(mode: str) -> None:
    (interface,) = network.plan([make_nic(0, MAC_ATTACK)], mode)
    for render in (network.link, lambda i: network.networkd(i, mode)):
        with pytest.raises(OSEnvError, match="refusing to write MAC address"):
            render(interface)


@pytest.mark.parametrize(
    "interface",
    [
        Interface("eth0", MAC, False, ("192.0.2.10/24",), (GATEWAY_ATTACK,)),
        Interface("eth0", MAC, False, ('192.0.2.10/24"\nreboot #',)),
        Interface("eth0$(reboot)", MAC, True),
    ],
)
def test_the_writers_refuse_anything_but_plain_values(interface: Interface) -> None:
    for render in (
        lambda: network.netifrc([interface], "ganeti"),
        lambda: network.networkd(interface, "ganeti"),
    ):
        with pytest.raises(OSEnvError, match="refusing to write"):
            render()
    with pytest.raises(OSEnvError, match="refusing to write"):
        network.netifrc([], 'ganeti"\nreboot #')


def test_netifrc_config_reads_back_as_written_when_sourced(tmp_path: Path) -> None:
    nics = [
        make_nic(0, MAC, "192.0.2.10", network_name="n", subnet="192.0.2.0/24", gateway="192.0.2.1",
            subnet6="2001:db8:1::/64", gateway6="fe80::1"),
        make_nic(1, "aa:00:00:ab:cd:ef"),
    ]  # fmt: skip
    conf = tmp_path / "net"
    conf.write_text(network.netifrc(network.plan(nics, "ganeti"), "ganeti"))
    script = '. "$1"; printf "%s|%s|%s" "$config_eth0" "$routes_eth0" "$config_eth1"'
    out = subprocess.run(
        ["sh", "-c", script, "sh", str(conf)], capture_output=True, text=True, check=True
    ).stdout
    assert out.split("|") == [
        "192.0.2.10/24\n2001:db8:1:0:a800:ff:fe12:3456/64",
        "default via 192.0.2.1\ndefault via fe80::1",
        "dhcp",
    ]
