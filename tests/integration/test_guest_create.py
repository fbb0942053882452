"""The whole create, as Ganeti runs it, then the guest's files read back from the disk image:
name, console, root access, network, time zone, no host keys, and hooks (the grub example
among them) run with their environment and chroot mounts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support import NIC0_NETWORK, REPO, ganeti_environ, osdef, stage
from support.logs import plain_logging  # noqa: F401 (autouse)

pytestmark = pytest.mark.root

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGuestCreateTestKeyAAAAAAAAAAAAAAAAAAAAAAAAA t@example"
HASH = "$6$rounds=5000$salt$4LkMsCpXD2X5kEq0ZMRKXJbZR7Ey6QaFyDcRA9dY0CnvTqgE0dQf6Qd"
NICS = {
    **NIC0_NETWORK,
    "NIC_COUNT": "2",
    "NIC_0_MAC": "aa:00:00:12:34:56",
    "NIC_1_MAC": "aa:00:00:ab:cd:ef",
}
RECORD = """#!/bin/sh
# Records what a hook sees: its environment and the mounts inside TARGET.
env > "$TARGET/root/hook-env"
grep " $TARGET/" /proc/mounts | cut -d" " -f2 > "$TARGET/root/hook-mounts"
"""
needs_grub = pytest.mark.skipif(
    shutil.which("grub-install") is None or not Path("/usr/lib/grub/i386-pc").is_dir(),
    reason="needs grub-install for i386-pc (Debian: grub-pc-bin grub2-common)",
)


@needs_grub
@pytest.mark.parametrize("flavour", ["openrc", "systemd"])
def test_create_configures_the_guest(
    flavour: str,
    no_leaks: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    stages: dict[tuple[str, str], stage.Stage],
) -> None:
    built = stages[flavour, "zstd"]
    image = no_leaks / "disk.img"
    with open(image, "wb") as f:
        f.truncate(320 << 20)
    hooks = no_leaks / "conf/hooks"
    hooks.mkdir(parents=True)
    for name, text in (
        ("10-record", RECORD),
        ("90-grub", (REPO / "examples/hooks/grub").read_text()),
    ):
        (hooks / name).write_text(text)
        (hooks / name).chmod(0o755)
    openrc = flavour == "openrc"
    settings = {"network": "ganeti" if openrc else "dhcp", "timezone": "UTC"}
    if not openrc:
        settings["root_password"] = HASH
    confdir = osdef.configure(no_leaks / "conf", stage4_file=built.tarball, **settings)
    osdef.point_paths_at(confdir, monkeypatch)
    environ = ganeti_environ(image, "web1.example.com", **NICS)
    if openrc:
        environ["OSP_SSH_KEY"] = KEY
    else:
        environ["HYPERVISOR"] = "xen-pvm"

    status = osdef.create(environ)
    log = capfd.readouterr().err

    assert status == 0, log
    assert "configure guest done" in log and "hook 90-grub done" in log
    assert KEY.split()[1] not in log and HASH not in log
    (part,) = osdef.partitions(image)
    uuid = osdef.probe(image, part["start"], part["size"])["UUID"]
    with osdef.mounted(image, no_leaks / "check", part["start"], part["size"]) as root:
        etc = root / "etc"
        assert (etc / "hostname").read_text() == "web1\n"
        assert "127.0.1.1\tweb1.example.com web1" in (etc / "hosts").read_text().splitlines()
        assert (etc / "machine-id").read_text() == ""
        assert os.readlink(etc / "localtime") == "../usr/share/zoneinfo/UTC"
        assert not list(etc.glob("ssh/ssh_host_*"))
        shadow_root = (etc / "shadow").read_text().splitlines()[0].split(":")
        if openrc:
            assert (
                "s0:12345:respawn:/sbin/agetty -L 115200 ttyS0 vt100"
                in (etc / "inittab").read_text()
            )
            assert shadow_root[1] == "*"  # keys given: the empty password is locked
            assert (root / "root/.ssh/authorized_keys").read_text() == KEY + "\n"
            assert os.readlink(etc / "runlevels/default/sshd") == "/etc/init.d/sshd"
            net = (etc / "conf.d/net").read_text()
            assert 'config_eth0="192.0.2.10/24\n2001:db8:1:0:a800:ff:fe12:3456/64"' in net
            assert 'config_eth1="dhcp"' in net
            for nic in ("eth0", "eth1"):
                assert os.readlink(etc / f"init.d/net.{nic}") == "net.lo"
                assert os.readlink(etc / f"runlevels/default/net.{nic}") == f"/etc/init.d/net.{nic}"
        else:
            getty = etc / "systemd/system/getty.target.wants/serial-getty@hvc0.service"
            assert os.readlink(getty) == "/usr/lib/systemd/system/serial-getty@.service"
            assert shadow_root[1] == HASH
            assert not (root / "root/.ssh").exists()
            eth0 = (etc / "systemd/network/50-ganeti-eth0.network").read_text()
            assert "PermanentMACAddress=aa:00:00:12:34:56" in eth0 and "DHCP=ipv4" in eth0
            wants = etc / "systemd/system/multi-user.target.wants/systemd-networkd.service"
            assert os.readlink(wants) == "/usr/lib/systemd/system/systemd-networkd.service"
        link = (etc / "systemd/network/10-ganeti-eth1.link").read_text()
        assert "PermanentMACAddress=aa:00:00:ab:cd:ef" in link and "Name=eth1" in link
        # The hooks: environment and chroot mounts.
        env = dict(line.split("=", 1) for line in (root / "root/hook-env").read_text().splitlines())
        assert env["INSTANCE_NAME"] == "web1.example.com"
        assert env["BLOCKDEV"].startswith("/dev/loop") and env["ROOT_DEV"].startswith("/dev/loop")
        assert env["BOOT_DEV"] == env["SWAP_DEV"] == ""
        assert env["NETWORK"] == settings["network"] and env["TIMEZONE"] == "UTC"
        target = env["TARGET"]
        assert (root / "root/hook-mounts").read_text().split() == [
            f"{target}/{m}" for m in ("proc", "sys", "dev", "dev/pts")
        ]
        # The grub hook: a config for the stage's kernel, root by UUID, GRUB in the MBR.
        grub_cfg = (root / "boot/grub/grub.cfg").read_text()
        assert f"linux /boot/vmlinuz-6.6.0-gentoo root=UUID={uuid} ro" in grub_cfg
        assert f"--set=root {uuid}" in grub_cfg
    with open(image, "rb") as f:
        assert b"GRUB" in f.read(512)
    assert not Path(target).exists()  # the mount directory went with the mounts
