"""Guest configuration on Gentoo-shaped trees: hypervisor, console, network, root access."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from gentoobootstrap.config import osenv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.errors import ConfigError, GuestError
from gentoobootstrap.guest import configure
from gentoobootstrap.guest.tree import GuestRoot
from gentoobootstrap.scripts import create
from gentoobootstrap.scripts.install import Mounted
from support import NIC0_NETWORK, canary_state, ganeti_environ, mounted_context
from support.guesttree import INITTAB, TREES, openrc_tree, systemd_tree
from support.logs import plain_logging  # noqa: F401 (autouse)

HASH = "$6$saltsalt$0Bx8RjvKr9ZMa0aTEmeC0G5xcFr6r0j9KcZRm7DQ1k1Z0yTj9QxvK5HLNUoZHj/7E0.Ns4"
KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkQ7bVvVQ2mXH7bRkHVY5N4w0rZ9wWk8m6eR4zE2x1y admin@example"
)
FILE_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBSfileKeyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA ops@example"
)

# NIC 0 on a Ganeti network (IPv4 and IPv6), NIC 1 on none.
NICS = dict(
    NIC0_NETWORK,
    NIC_COUNT="2",
    NIC_0_MAC="aa:00:00:12:34:56",
    NIC_1_MAC="aa:00:00:ab:cd:ef",
    NIC_1_MODE="bridged",
    NIC_1_LINK="br1",
)


def make_ctx(
    tmp_path: Path, top: Path, settings: Settings | None = None, **environ: str
) -> Mounted[Any]:
    disk = tmp_path / "disk.img"
    disk.touch()
    env = osenv.parse("create", ganeti_environ(disk, "web1.example.com", **environ))
    return mounted_context(env, settings or Settings(), top)


def enabled(top: Path, init: str, service: str) -> bool:
    if init == "openrc":
        link = top / "etc/runlevels/default" / service
        return link.is_symlink() and os.readlink(link) == f"/etc/init.d/{service}"
    link = top / "etc/systemd/system/multi-user.target.wants" / f"{service}.service"
    return link.is_symlink() and os.readlink(link).endswith(f"/{service}.service")


HYPERVISORS = [
    ("kvm", "True", "ttyS0"),
    ("kvm", "False", None),
    ("xen-pvm", "", "hvc0"),
    ("xen-hvm", "True", None),
]


@pytest.mark.parametrize("access", ["empty", "locked", "hash", "keys"])
@pytest.mark.parametrize("mode", ["none", "dhcp", "ganeti"])
@pytest.mark.parametrize(("hypervisor", "serial", "console"), HYPERVISORS)
@pytest.mark.parametrize("init", ["openrc", "systemd"])
def test_configure_guest(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    init: str,
    hypervisor: str,
    serial: str,
    console: str | None,
    mode: str,
    access: str,
) -> None:
    top = TREES[init](tmp_path / "root")
    settings = Settings(network=mode, root_password=HASH if access == "hash" else "empty")
    if access == "locked":
        settings = dataclasses.replace(settings, root_password="locked")
    extra = dict(NICS, HYPERVISOR=hypervisor, INSTANCE_HV_serial_console=serial)
    if access == "keys":
        keys_file = tmp_path / "authorized_keys"
        keys_file.write_text(f"# ops team\n{FILE_KEY}\n\n")
        settings = dataclasses.replace(settings, ssh_authorized_keys=keys_file)
        extra["OSP_SSH_KEY"] = KEY
    ctx = make_ctx(tmp_path, top, settings, **extra)
    caplog.set_level(logging.DEBUG)

    create.configure_guest(ctx)

    # Name.
    assert (top / "etc/hostname").read_text() == "web1\n"
    hosts = (top / "etc/hosts").read_text().splitlines()
    assert "127.0.1.1\tweb1.example.com web1" in hosts
    assert "127.0.0.1\tlocalhost" in hosts and "::1\t\tlocalhost" in hosts

    # Serial console.
    wants = top / "etc/systemd/system/getty.target.wants"
    if init == "openrc":
        inittab = (top / "etc/inittab").read_text()
        if console == "ttyS0":
            assert inittab == INITTAB.replace(
                "#s0:12345:respawn:/sbin/agetty -L 9600 ttyS0 vt100",
                "s0:12345:respawn:/sbin/agetty -L 115200 ttyS0 vt100",
            )
        elif console == "hvc0":
            assert inittab == INITTAB + "h0:12345:respawn:/sbin/agetty -L 115200 hvc0 vt100\n"
            assert "hvc0" in (top / "etc/securetty").read_text().split()
        else:
            assert inittab == INITTAB
        assert not wants.exists()
    else:
        assert not (top / "etc/inittab").exists()
        if console:
            unit = wants / f"serial-getty@{console}.service"
            assert os.readlink(unit) == "/usr/lib/systemd/system/serial-getty@.service"
            assert [p.name for p in wants.iterdir()] == [unit.name]
        else:
            assert not wants.exists()

    # Root access: never logged.
    root_entry = (top / "etc/shadow").read_text().splitlines()[0].split(":")
    expected = {"empty": "", "locked": "*", "hash": HASH, "keys": "*"}[access]
    assert root_entry[1] == expected
    assert root_entry[2] != "0"  # no forced password change
    assert (top / "etc/shadow").stat().st_mode & 0o777 == 0o640
    keys_path = top / "root/.ssh/authorized_keys"
    if access == "keys":
        assert keys_path.read_text() == f"{FILE_KEY}\n{KEY}\n"
        assert keys_path.stat().st_mode & 0o777 == 0o600
        assert keys_path.parent.stat().st_mode & 0o777 == 0o700
        assert enabled(top, init, "sshd")
    else:
        assert not keys_path.exists()
        assert not enabled(top, init, "sshd")
    assert HASH not in caplog.text and "AAAAC3" not in caplog.text

    # Network.
    links = sorted(p.name for p in (top / "etc/systemd/network").glob("*.link"))
    if mode == "none":
        assert links == []
        assert not (top / "etc/conf.d/net").exists()
        assert not list((top / "etc").glob("systemd/network/*.network"))
        assert not enabled(top, init, "net.eth0") and not enabled(top, init, "systemd-networkd")
    else:
        assert links == ["10-ganeti-eth0.link", "10-ganeti-eth1.link"]
        static = mode == "ganeti"
        if init == "openrc":
            net = (top / "etc/conf.d/net").read_text()
            if static:
                assert (
                    'config_eth0="192.0.2.10/24\n2001:db8:1:0:a800:ff:fe12:3456/64"\n'
                    'routes_eth0="default via 192.0.2.1\ndefault via 2001:db8:1::1"\n'
                ) in net
            else:
                assert 'config_eth0="dhcp"\n' in net
            assert 'config_eth1="dhcp"\n' in net
            for name in ("eth0", "eth1"):
                assert os.readlink(top / f"etc/init.d/net.{name}") == "net.lo"
                assert enabled(top, init, f"net.{name}")
        else:
            eth0 = (top / "etc/systemd/network/50-ganeti-eth0.network").read_text()
            assert "PermanentMACAddress=aa:00:00:12:34:56" in eth0
            assert ("Address=192.0.2.10/24" in eth0) == static
            assert ("DHCP=no" in eth0) == static
            assert "DHCP=ipv4" in (top / "etc/systemd/network/50-ganeti-eth1.network").read_text()
            assert enabled(top, init, "systemd-networkd")
            socket = top / "etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
            assert os.readlink(socket) == "/usr/lib/systemd/system/systemd-networkd.socket"

    # The rest.
    assert (top / "etc/machine-id").read_text() == ""
    assert os.readlink(top / "etc/localtime") == "/usr/share/zoneinfo/UTC"  # TIMEZONE empty
    assert not list((top / "etc/ssh").glob("ssh_host_*"))
    assert (top / "etc/ssh/sshd_config").exists()


def test_hostname_conf_d_and_a_rename(tmp_path: Path) -> None:
    top = openrc_tree(tmp_path / "root")
    root = GuestRoot(top)
    configure.set_hostname(root, "old.example.com")
    configure.set_hostname(root, "new.example.org")
    assert (top / "etc/conf.d/hostname").read_text() == ('# Hostname fallback\nhostname="new"\n')
    hosts = (top / "etc/hosts").read_text()
    assert hosts == (
        "# /etc/hosts: Local Host Database\n127.0.0.1\tlocalhost\n"
        "127.0.1.1\tnew.example.org new\n::1\t\tlocalhost\n"
    )


def test_hostname_without_hosts_file(tmp_path: Path) -> None:
    top = systemd_tree(tmp_path / "root")
    (top / "etc/hosts").unlink()
    configure.set_hostname(GuestRoot(top), "single")
    assert (top / "etc/hosts").read_text() == (
        "127.0.0.1\tlocalhost\n127.0.1.1\tsingle\n::1\t\tlocalhost\n"
    )
    assert not (top / "etc/conf.d").exists()
    (top / "etc/hosts").write_text("::1 localhost\n")
    configure.set_hostname(GuestRoot(top), "single")
    assert (
        top / "etc/hosts"
    ).read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\tsingle\n::1 localhost\n"


def test_serial_console_with_openrc_init(tmp_path: Path) -> None:
    top = openrc_tree(tmp_path / "root")
    (top / "etc/inittab").unlink()
    (top / "etc/init.d/agetty").write_text("#!/sbin/openrc-run\n")
    configure.enable_serial_console(GuestRoot(top), "openrc", "ttyS0")
    assert os.readlink(top / "etc/init.d/agetty.ttyS0") == "agetty"
    assert os.readlink(top / "etc/runlevels/default/agetty.ttyS0") == "/etc/init.d/agetty.ttyS0"
    assert not (top / "etc/inittab").exists()


@pytest.mark.parametrize("init", ["openrc", "systemd"])
def test_time_zone(tmp_path: Path, init: str) -> None:
    top = TREES[init](tmp_path / "root")
    configure.set_timezone(GuestRoot(top), "Europe/Berlin")
    assert os.readlink(top / "etc/localtime") == "../usr/share/zoneinfo/Europe/Berlin"
    assert (top / "etc/timezone").read_text() == "Europe/Berlin\n"
    with pytest.raises(ConfigError, match=r"TIMEZONE: the stage has no zoneinfo file") as e:
        configure.set_timezone(GuestRoot(top), "Mars/Olympus")
    assert "Mars" not in str(e.value)  # the value may be an OS parameter: never echoed


def test_resolv_conf_replaces_the_stage_link_not_the_node(tmp_path: Path) -> None:
    top = openrc_tree(tmp_path / "root")
    node = tmp_path / "node-resolv.conf"
    node.write_text("search example.com\nnameserver 192.0.2.53\n")
    configure.copy_resolv_conf(GuestRoot(top), node, tmp_path / "none")
    resolv = top / "etc/resolv.conf"
    assert not resolv.is_symlink()
    assert resolv.read_text() == node.read_text()
    assert not Path("/run/systemd/resolve/stub-resolv.conf").is_relative_to(top)


def test_resolv_conf_of_a_local_stub_uses_the_upstream_list(tmp_path: Path) -> None:
    top = openrc_tree(tmp_path / "root")
    stub, upstream = tmp_path / "stub", tmp_path / "upstream"
    stub.write_text("nameserver 127.0.0.53\noptions edns0\n")
    upstream.write_text("nameserver 198.51.100.53\n")
    configure.copy_resolv_conf(GuestRoot(top), stub, upstream)
    assert (top / "etc/resolv.conf").read_text() == "nameserver 198.51.100.53\n"
    upstream.unlink()
    (top / "etc/resolv.conf").unlink()
    configure.copy_resolv_conf(GuestRoot(top), stub, upstream)
    assert not (top / "etc/resolv.conf").exists()


def test_copy_resolv_conf_no(tmp_path: Path) -> None:
    top = openrc_tree(tmp_path / "root")
    ctx = make_ctx(tmp_path, top, Settings(copy_resolv_conf=False))
    create.configure_guest(ctx)
    assert os.readlink(top / "etc/resolv.conf") == "/run/systemd/resolve/stub-resolv.conf"


def test_a_missing_keys_file_names_the_setting(tmp_path: Path) -> None:
    top = openrc_tree(tmp_path / "root")
    ctx = make_ctx(tmp_path, top, Settings(ssh_authorized_keys=tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"^SSH_AUTHORIZED_KEYS: cannot read .*missing"):
        create.configure_guest(ctx)


def test_network_without_netifrc(tmp_path: Path) -> None:
    top = openrc_tree(tmp_path / "root")
    (top / "etc/init.d/net.lo").unlink()
    ctx = make_ctx(tmp_path, top, Settings(network="dhcp"))
    with pytest.raises(GuestError, match=r"NETWORK=dhcp needs netifrc"):
        create.configure_guest(ctx)


def test_dhcp_without_a_client_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    top = openrc_tree(tmp_path / "root", dhcp_client=False)
    create.configure_guest(make_ctx(tmp_path, top, Settings(network="dhcp")))
    assert "no DHCP client" in caplog.text


#: A busybox's applet table is its applets' names, each ended by a NUL.
BUSYBOX = b"\x7fELF...\0[\0[[\0acpid\0udhcpc\0udhcpd\0unzip\0..."


def _busybox(top: Path, applets: bytes = BUSYBOX) -> None:
    (top / "bin").mkdir(exist_ok=True)
    (top / "bin/busybox").write_bytes(applets)
    (top / "bin/busybox").chmod(0o755)


@pytest.mark.parametrize(
    ("clients", "module"),
    [
        (["dhcpcd", "dhclient", "busybox"], "dhcpcd"),  # Gentoo's default first
        (["dhclient", "busybox"], "dhclient"),
        (["pump"], "pump"),
        (["busybox"], "udhcpc"),  # a stage3: @system's busybox, no dhcpcd
        (["busybox without the applet", "udhcpc link"], "udhcpc"),
    ],
)
def test_dhcp_uses_the_client_the_stage_has(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, clients: list[str], module: str
) -> None:
    caplog.set_level(logging.INFO)
    top = openrc_tree(tmp_path / "root", dhcp_client=False)
    for client in clients:
        if client == "busybox":
            _busybox(top)
        elif client == "busybox without the applet":
            _busybox(top, b"\x7fELF...\0acpid\0udhcpd\0...")
        elif client == "udhcpc link":
            os.symlink("/bin/busybox", top / "sbin/udhcpc")
        else:
            (top / "usr/sbin").mkdir(parents=True, exist_ok=True)
            (top / "usr/sbin" / client).write_text(client)
            (top / "usr/sbin" / client).chmod(0o755)
    create.configure_guest(make_ctx(tmp_path, top, Settings(network="ganeti"), **NICS))
    net = (top / "etc/conf.d/net").read_text()
    # NIC 0 is static: no DHCP module; NIC 1 has DHCP through the stage's client.
    assert "modules_eth0" not in net
    assert f'config_eth1="dhcp"\nmodules_eth1="{module}"\n' in net
    assert "no DHCP client" not in caplog.text
    assert f"DHCP by netifrc's {module} module" in caplog.text


@pytest.mark.parametrize("busybox", [None, b"\x7fELF...\0acpid\0udhcpd\0..."])
def test_busybox_without_udhcpc_is_no_dhcp_client(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, busybox: bytes | None
) -> None:
    top = openrc_tree(tmp_path / "root", dhcp_client=False)
    if busybox is not None:
        _busybox(top, busybox)
    else:  # an udhcpc link is no client without the busybox netifrc runs
        os.symlink("/bin/busybox", top / "sbin/udhcpc")
    create.configure_guest(make_ctx(tmp_path, top, Settings(network="dhcp")))
    assert "modules_eth0" not in (top / "etc/conf.d/net").read_text()
    assert "no DHCP client for netifrc (dhcpcd, dhclient, pump, udhcpc)" in caplog.text


def test_static_only_looks_for_no_dhcp_client(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    top = openrc_tree(tmp_path / "root", dhcp_client=False)
    nic0 = {k: v for k, v in NICS.items() if k.startswith("NIC_0_")}
    create.configure_guest(
        make_ctx(tmp_path, top, Settings(network="ganeti"), NIC_COUNT="1", **nic0)
    )
    assert "modules_" not in (top / "etc/conf.d/net").read_text()
    assert "DHCP" not in caplog.text


def test_keys_without_sshd(tmp_path: Path) -> None:
    top = systemd_tree(tmp_path / "root")
    (top / "usr/lib/systemd/system/sshd.service").unlink()
    ctx = make_ctx(tmp_path, top, OSP_SSH_KEY=KEY)
    with pytest.raises(GuestError, match=r"no systemd unit sshd.service"):
        create.configure_guest(ctx)


def test_not_a_gentoo_stage(tmp_path: Path) -> None:
    (tmp_path / "root/etc").mkdir(parents=True)
    with pytest.raises(GuestError, match="cannot tell the stage's init system"):
        create.configure_guest(make_ctx(tmp_path, tmp_path / "root"))


@pytest.mark.parametrize("init", ["openrc", "systemd"])
def test_every_configured_path_linked_to_the_node_stays_in_the_guest(
    tmp_path: Path, init: str
) -> None:
    """Each file and directory guest configuration touches is a link to a node canary."""
    node = tmp_path / "node"
    for name in ("file", "ssh/ssh_host_ed25519_key", "dir/kept"):
        (node / name).parent.mkdir(parents=True, exist_ok=True)
        (node / name).write_text("node's\n")
    before = canary_state(node)
    top = TREES[init](tmp_path / "root")
    files = ["hostname", "hosts", "machine-id", "resolv.conf", "securetty", "inittab"]
    files += ["conf.d/hostname", "conf.d/net", "systemd/network/10-ganeti-eth0.link"]
    for name in files:
        where = top / "etc" / name
        if os.path.lexists(where):
            where.unlink()
        where.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(str(node / "file"), where)
    shutil.rmtree(top / "etc/ssh")
    os.symlink(str(node / "ssh"), top / "etc/ssh")  # host keys: removed only inside the guest
    os.symlink(str(node / "dir"), top / "root/.ssh")  # led nowhere in the guest: an error
    settings = Settings(network="ganeti")
    ctx = make_ctx(tmp_path, top, settings, **dict(NICS, OSP_SSH_KEY=KEY))
    with pytest.raises(GuestError, match=r"^the guest's /root/.ssh is a symbolic link to /"):
        create.configure_guest(ctx)
    (top / "root/.ssh").unlink()
    create.configure_guest(ctx)
    written = [
        "hostname",
        "hosts",
        "machine-id",
        "resolv.conf",
        "systemd/network/10-ganeti-eth0.link",
    ]
    written += ["conf.d/hostname", "conf.d/net", "inittab"] if init == "openrc" else []
    for name in written:
        assert not (top / "etc" / name).is_symlink(), name
    assert (top / "etc/hostname").read_text() == "web1\n"
    assert (top / "root/.ssh/authorized_keys").read_text() == f"{KEY}\n"
    assert canary_state(node) == before
