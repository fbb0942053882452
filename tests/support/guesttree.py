"""Tiny Gentoo-shaped root trees (OpenRC and systemd) for guest configuration tests.

Only the files guest configuration reads or replaces, with the contents
Gentoo's stage3s ship — including the absolute symlinks that would lead a
careless write onto the node.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from gentoobootstrap.guest import grow

INITTAB = """\
# /etc/inittab:  This file describes how the INIT process should set up
id:3:initdefault:
si::sysinit:/sbin/openrc sysinit
rc::bootwait:/sbin/openrc boot
l3:3:wait:/sbin/openrc default

# TERMINALS
c1:12345:respawn:/sbin/agetty 38400 tty1 linux
c2:2345:respawn:/sbin/agetty 38400 tty2 linux

# SERIAL CONSOLES
#s0:12345:respawn:/sbin/agetty -L 9600 ttyS0 vt100
#s1:12345:respawn:/sbin/agetty -L 9600 ttyS1 vt100
"""

HOSTS = """\
# /etc/hosts: Local Host Database
127.0.0.1\tlocalhost
::1\t\tlocalhost
"""

SHADOW = "root:*:10770:0:::::\nportage:!:20000::::::\n"
PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\nportage:x:250:250:portage:/var/tmp/portage:/sbin/nologin\n"
)

UNITS = {
    "serial-getty@.service": "[Unit]\nDescription=Serial Getty on %I\n\n"
    "[Service]\nExecStart=-/sbin/agetty -o '-p -- \\\\u' --keep-baud 115200,57600 - $TERM\n\n"
    "[Install]\nWantedBy=getty.target\n",
    "sshd.service": "[Unit]\nDescription=OpenSSH server daemon\n\n"
    "[Service]\nExecStart=/usr/sbin/sshd -D -e\n\n[Install]\nWantedBy=multi-user.target\n",
    "systemd-networkd.service": "[Unit]\nDescription=Network Configuration\n\n"
    "[Service]\nExecStart=/usr/lib/systemd/systemd-networkd\n\n"
    "[Install]\nWantedBy=multi-user.target\nAlso=systemd-networkd.socket\n"
    "Alias=dbus-org.freedesktop.network1.service\n",
    "systemd-networkd.socket": "[Socket]\nListenNetlink=route 1361\n\n"
    "[Install]\nWantedBy=sockets.target\n",
}


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _common(top: Path) -> None:
    _write(top / "etc/hosts", HOSTS)
    _write(top / "etc/passwd", PASSWD)
    _write(top / "etc/shadow", SHADOW, 0o640)
    _write(top / "etc/machine-id", "0123456789abcdef0123456789abcdef\n", 0o444)
    _write(top / "etc/gentoo-release", "Gentoo Base System release 2.17\n")
    for zone in ("UTC", "Europe/Berlin", "America/New_York"):
        _write(top / "usr/share/zoneinfo" / zone, "TZif2 fake\n")
    os.symlink("/usr/share/zoneinfo/UTC", top / "etc/localtime")  # absolute, as Gentoo ships it
    for key in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key"):
        _write(top / "etc/ssh" / key, "fake key\n", 0o600)
    _write(top / "etc/ssh/sshd_config", "# sshd_config\n")
    (top / "root").mkdir(mode=0o700)
    (top / "run").mkdir()
    # A stub resolver link: written through from the node, it would change the node's /run.
    os.symlink("/run/systemd/resolve/stub-resolv.conf", top / "etc/resolv.conf")


def openrc_tree(top: Path, dhcp_client: bool = True) -> Path:
    """A Gentoo OpenRC stage's relevant files under ``top``."""
    _common(top)
    _write(top / "sbin/init", "sysvinit\n", 0o755)
    _write(top / "sbin/openrc", "openrc\n", 0o755)
    _write(top / "etc/inittab", INITTAB)
    _write(top / "etc/conf.d/hostname", '# Hostname fallback\nhostname="localhost"\n')
    _write(top / "etc/securetty", "console\ntty1\nttyS0\n")
    for script in ("net.lo", "sshd", "hostname", "local"):
        _write(top / "etc/init.d" / script, "#!/sbin/openrc-run\n", 0o755)
    for level in ("boot", "default", "sysinit", "shutdown"):
        (top / "etc/runlevels" / level).mkdir(parents=True)
    os.symlink("/etc/init.d/local", top / "etc/runlevels/default/local")
    if dhcp_client:
        _write(top / "sbin/dhcpcd", "dhcpcd\n", 0o755)
    return top


def systemd_tree(top: Path) -> Path:
    """A Gentoo systemd stage (merged /usr) under ``top``."""
    (top / "usr/bin").mkdir(parents=True)
    for link, to in (("bin", "usr/bin"), ("sbin", "usr/bin"), ("lib", "usr/lib")):
        os.symlink(to, top / link)
    _common(top)
    _write(top / "usr/lib/systemd/systemd", "systemd\n", 0o755)
    os.symlink("../lib/systemd/systemd", top / "usr/bin/init")
    for name, text in UNITS.items():
        _write(top / "usr/lib/systemd/system" / name, text)
    (top / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    return top


TREES = {"openrc": openrc_tree, "systemd": systemd_tree}


#: What the grow service (GROW_ROOT) adds to an OpenRC or a systemd stage.
GROW_FILES = (
    grow.SCRIPT,
    grow.UDEV_RULE,
    grow.OPENRC_SERVICE,
    f"/etc/runlevels/default/{grow.NAME}",
    grow.SYSTEMD_UNIT,
    f"/etc/systemd/system/multi-user.target.wants/{grow.NAME}.service",
)


def _with_parents(path: str) -> set[str]:
    """``path`` relative to the root, with its directories (their mtimes change too)."""
    rel = PurePosixPath(path).relative_to("/")
    return {str(rel), *(str(p) for p in rel.parents if str(p) != ".")}


#: Relative paths the grow service adds or touches: tests comparing the stage skip them.
GROWN = {p for path in GROW_FILES for p in _with_parents(path)}


#: What guest configuration changes in a stage with the default settings on KVM with a
#: serial console (support.ganeti_environ): tests comparing the unpacked stage skip these.
CONFIGURED = {
    "etc",
    "etc/hostname",
    "etc/hosts",
    "etc/shadow",
    "etc/machine-id",
    "etc/resolv.conf",
    "etc/inittab",
    "etc/securetty",
    "etc/conf.d",
    "etc/conf.d/hostname",
    "etc/systemd/system/getty.target.wants",
    "etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
    "etc/ssh",
    *(f"etc/ssh/ssh_host_{k}_key{p}" for k in ("rsa", "ecdsa", "ed25519") for p in ("", ".pub")),
    *GROWN,
}
