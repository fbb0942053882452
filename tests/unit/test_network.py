"""Which address each NIC gets, with and without Ganeti networks, IPv4 and IPv6."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest

from gentoobootstrap.config.osenv import Nic
from gentoobootstrap.errors import OSEnvError
from gentoobootstrap.guest import network
from gentoobootstrap.guest.network import Interface
from support.logs import plain_logging  # noqa: F401 (autouse)

MAC = "aa:00:00:12:34:56"


def test_eui64_is_rfc4291() -> None:
    prefix = ipaddress.IPv6Network("2001:db8::/64")
    assert str(network.eui64(prefix, "52:54:00:12:34:56")) == "2001:db8::5054:ff:fe12:3456/64"


@pytest.mark.parametrize(
    ("nic", "expected"),
    [
        # No Ganeti network: DHCP, even with an IP (nothing says its prefix or gateway).
        (Nic(0, MAC), Interface("eth0", MAC, True)),
        (Nic(0, MAC, ip="203.0.113.5", mode="routed"), Interface("eth0", MAC, True)),
        # IPv4 network.
        (
            Nic(0, MAC, "192.0.2.10", network_name="n", subnet="192.0.2.0/24", gateway="192.0.2.1"),
            Interface("eth0", MAC, False, ("192.0.2.10/24",), ("192.0.2.1",)),
        ),
        # No gateway: address only.
        (
            Nic(1, MAC, "10.1.2.3", network_name="n", subnet="10.0.0.0/8"),
            Interface("eth1", MAC, False, ("10.1.2.3/8",)),
        ),
        # On a network but no IP from its pool: DHCP.
        (
            Nic(0, MAC, network_name="n", subnet="192.0.2.0/24", gateway="192.0.2.1"),
            Interface("eth0", MAC, True),
        ),
        # IPv4 and IPv6: EUI-64 in the /64.
        (
            Nic(0, MAC, "192.0.2.10", network_name="n", subnet="192.0.2.0/24",
                gateway="192.0.2.1", subnet6="2001:db8:1::/64", gateway6="2001:db8:1::1"),
            Interface("eth0", MAC, False,
                      ("192.0.2.10/24", "2001:db8:1:0:a800:ff:fe12:3456/64"),
                      ("192.0.2.1", "2001:db8:1::1")),
        ),
        # An IPv6 NIC IP in the network's IPv6 subnet is used as it is.
        (
            Nic(0, MAC, "2001:db8:2::10", network_name="n", subnet6="2001:db8:2::/48",
                gateway6="2001:db8:2::1"),
            Interface("eth0", MAC, True, ("2001:db8:2::10/48",), ("2001:db8:2::1",)),
        ),
        # IPv6 prefix not a /64 and no IPv6 IP: left to router advertisements.
        (
            Nic(0, MAC, "192.0.2.10", network_name="n", subnet="192.0.2.0/24",
                subnet6="2001:db8:3::/56", gateway6="2001:db8:3::1"),
            Interface("eth0", MAC, False, ("192.0.2.10/24",)),
        ),
    ],
)  # fmt: skip
def test_plan_ganeti(nic: Nic, expected: Interface) -> None:
    assert network.plan([nic], "ganeti") == [expected]


def test_plan_none_and_dhcp() -> None:
    nics = [Nic(0, MAC, "192.0.2.10", network_name="n", subnet="192.0.2.0/24"), Nic(1, "")]
    assert network.plan(nics, "none") == []
    assert network.plan(nics, "dhcp") == [
        Interface("eth0", MAC, True),
        Interface("eth1", "", True),
    ]


def test_ip_outside_the_subnet_falls_back_to_dhcp(caplog: pytest.LogCaptureFixture) -> None:
    nic = Nic(0, MAC, "198.51.100.7", network_name="n", subnet="192.0.2.0/24")
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


@pytest.mark.parametrize(
    ("nic", "variable"),
    [
        (Nic(3, MAC, "192.0.2.300", network_name="n", subnet="192.0.2.0/24"), "NIC_3_IP"),
        (Nic(0, MAC, "192.0.2.3", network_name="n", subnet="192.0.2/24x"), "NIC_0_NETWORK_SUBNET"),
        (Nic(0, MAC, network_name="n", subnet6="2001:db8::/129"), "NIC_0_NETWORK_SUBNET6"),
    ],
)
def test_malformed_addresses_name_the_variable(nic: Nic, variable: str) -> None:
    with pytest.raises(OSEnvError, match=f"^{variable}: not a valid address"):
        network.plan([nic], "ganeti")


# -- hostile values never land in the guest's files ---------------------------------------------

GATEWAY_ATTACK = '192.0.2.1"; touch /x; "'
MAC_ATTACK = f"{MAC}\n[Network]\nDNS=203.0.113.66"


def test_a_gateway_with_shell_in_it_is_refused() -> None:
    nic = Nic(0, MAC, "192.0.2.10", network_name="n", subnet="192.0.2.0/24", gateway=GATEWAY_ATTACK)
    with pytest.raises(OSEnvError, match=r"^NIC_0_NETWORK_GATEWAY: not a valid address"):
        network.plan([nic], "ganeti")


def test_an_ipv6_gateway_with_a_scope_is_refused() -> None:
    nic = Nic(0, MAC, network_name="n", subnet6="2001:db8::/64", gateway6="fe80::1%$(touch /x)")
    with pytest.raises(OSEnvError, match=r"^NIC_0_NETWORK_GATEWAY6: not a valid address"):
        network.plan([nic], "ganeti")


def test_a_bad_mac_with_an_ipv6_subnet_is_a_clean_error() -> None:
    nic = Nic(0, "zz:zz", network_name="n", subnet6="2001:db8::/64")
    with pytest.raises(OSEnvError, match=r"^NIC_0_MAC: "):
        network.plan([nic], "ganeti")


@pytest.mark.parametrize("mode", ["dhcp", "ganeti"])
def test_a_mac_with_a_newline_never_reaches_a_networkd_file(mode: str) -> None:
    (interface,) = network.plan([Nic(0, MAC_ATTACK)], mode)
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
        Nic(0, MAC, "192.0.2.10", network_name="n", subnet="192.0.2.0/24", gateway="192.0.2.1",
            subnet6="2001:db8:1::/64", gateway6="fe80::1"),
        Nic(1, "aa:00:00:ab:cd:ef"),
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
