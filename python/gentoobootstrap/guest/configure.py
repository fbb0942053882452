"""Make the unpacked stage the instance: name, console, root access, network and the rest.

Everything is done by writing files and symlinks in the mounted root (through
:class:`~gentoobootstrap.guest.tree.GuestRoot`, so no guest symlink can lead a
write onto the node); no guest binary is ever run, so it works on any node.
OpenRC and systemd stages are told apart from the stage itself.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from gentoobootstrap.config import parameters
from gentoobootstrap.config.osenv import Nic, OSEnv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.errors import ConfigError, GuestError, ParameterError
from gentoobootstrap.guest import grow, initsystem, network
from gentoobootstrap.guest.initsystem import Init
from gentoobootstrap.guest.tree import GuestRoot

log = logging.getLogger(__name__)

#: The node's resolver configuration, copied into the guest.
NODE_RESOLV_CONF = Path("/etc/resolv.conf")
#: systemd-resolved's list of real upstream servers (when the node's file is its stub).
RESOLVED_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")

#: Serial console device → inittab id (at most 4 characters) and getty command.
GETTY = {
    "ttyS0": ("s0", "/sbin/agetty -L 115200 ttyS0 vt100"),
    "hvc0": ("h0", "/sbin/agetty -L 115200 hvc0 vt100"),
}


def guest(root: GuestRoot, env: OSEnv, settings: Settings) -> None:
    """Every piece of guest configuration, in order, in the mounted ``root``."""
    init = initsystem.detect(root)
    log.info("guest init system: %s", init)
    set_hostname(root, env.instance_name)
    enable_serial_console(root, init, console_device(env))
    keys = authorized_keys(settings.ssh_authorized_keys, env.params.get("ssh_key"))
    set_root_access(root, init, settings.root_password, keys)
    set_network(root, init, env.nics, settings.network)
    reset_machine_id(root)
    set_timezone(root, settings.timezone)
    if settings.copy_resolv_conf:
        copy_resolv_conf(root)
    remove_ssh_host_keys(root)
    grow.install_service(root, init, settings.grow_root)


# -- name --------------------------------------------------------------------------------------


def set_hostname(root: GuestRoot, fqdn: str) -> None:
    """Short name in /etc/hostname (and OpenRC's conf.d); ``127.0.1.1 FQDN SHORT`` in /etc/hosts.

    The kernel's host name is the short name (one label, at most 64 bytes, as
    hostname(5) recommends); the FQDN resolves through /etc/hosts.
    """
    short = fqdn.split(".", 1)[0]
    root.write_text("/etc/hostname", short + "\n")
    if root.is_dir("/etc/conf.d"):
        conf = root.read_text("/etc/conf.d/hostname") or ""
        line = f'hostname="{short}"'
        new, count = re.subn(r"(?m)^\s*hostname=.*$", line, conf)
        root.write_text("/etc/conf.d/hostname", new if count else conf + line + "\n")
    hosts = [
        line
        for line in (root.read_text("/etc/hosts") or "").splitlines()
        if line.split("#", 1)[0].split()[:1] != ["127.0.1.1"]
    ]
    if not any(line.split()[:1] == ["127.0.0.1"] for line in hosts):
        hosts.insert(0, "127.0.0.1\tlocalhost")
    if not any(line.split()[:1] == ["::1"] for line in hosts):
        hosts.append("::1\t\tlocalhost")
    names = fqdn if short == fqdn else f"{fqdn} {short}"
    at = next(i for i, line in enumerate(hosts) if line.split()[:1] == ["127.0.0.1"]) + 1
    hosts.insert(at, f"127.0.1.1\t{names}")
    root.write_text("/etc/hosts", "\n".join(hosts) + "\n")
    log.info("host name: %s", fqdn)


# -- serial console ----------------------------------------------------------------------------


def console_device(env: OSEnv) -> Optional[str]:
    """The console Ganeti connects to: ttyS0 when KVM's serial_console is on, hvc0 on Xen PV."""
    if env.hypervisor == "xen-pvm":
        return "hvc0"
    if env.hypervisor == "kvm" and env.hv_flag("serial_console"):
        return "ttyS0"
    return None


def enable_serial_console(root: GuestRoot, init: Init, device: Optional[str]) -> None:
    """A login prompt on ``device``: an inittab getty (OpenRC) or serial-getty@ (systemd)."""
    if device is None:
        return
    if init == "systemd":
        initsystem.enable(root, init, f"serial-getty@{device}.service", target="getty.target")
    elif not root.exists("/etc/inittab") and root.exists("/etc/init.d/agetty"):
        # openrc-init has no inittab: gettys are agetty.DEVICE services.
        root.symlink(f"/etc/init.d/agetty.{device}", "agetty")
        initsystem.enable(root, init, f"agetty.{device}")
    else:
        ident, command = GETTY[device]
        entry = f"{ident}:12345:respawn:{command}"
        lines = (root.read_text("/etc/inittab") or "").splitlines()
        # Gentoo ships "#s0:12345:respawn:/sbin/agetty -L 9600 ttyS0 vt100": take its place.
        mine = [
            i
            for i, line in enumerate(lines)
            if line.lstrip("#").strip().startswith(f"{ident}:")
            or (not line.startswith("#") and re.search(rf"getty\b.*\b{device}\b", line))
        ]
        if mine:
            lines[mine[0]] = entry
            lines = [line for i, line in enumerate(lines) if i not in mine[1:]]
        else:
            lines.append(entry)
        root.write_text("/etc/inittab", "\n".join(lines) + "\n")
    securetty = root.read_text("/etc/securetty")
    if securetty is not None and device not in securetty.split():
        root.write_text("/etc/securetty", securetty.rstrip("\n") + f"\n{device}\n")
    log.info("serial console: login on %s", device)


# -- root access -------------------------------------------------------------------------------


def authorized_keys(keys_file: Optional[Path], parameter: object) -> list[str]:
    """The SSH public keys for root: SSH_AUTHORIZED_KEYS's lines, then the ssh_key parameter."""
    keys: list[str] = []
    if keys_file is not None:
        try:
            text = keys_file.read_text()
        except OSError as e:
            raise ConfigError(
                f"cannot read {keys_file}: {e.strerror}", key="SSH_AUTHORIZED_KEYS"
            ) from None
        keys += [k.strip() for k in text.splitlines() if k.strip() and not k.startswith("#")]
    if isinstance(parameter, str) and parameter.strip():
        # Checked when the environment was parsed; checked again where it is written, so that
        # nothing but one key line (no options, no second key) can reach authorized_keys.
        try:
            keys.append(parameters.ssh_key(parameter))
        except ValueError as e:
            raise ParameterError(f"OS parameter 'ssh_key' has a bad value; {e}") from None
    return list(dict.fromkeys(keys))


def set_root_access(root: GuestRoot, init: Init, password: str, keys: Sequence[str]) -> None:
    """Root's password field (``empty``, ``locked`` or a crypt hash) and SSH keys.

    Injected keys enable sshd; with keys, the default ``empty`` becomes locked:
    a passwordless root must not come with a network login.  ``*`` locks
    without marking the account locked, which sshd would refuse even for keys.
    """
    if keys and password == "empty":
        password = "locked"
    field = {"empty": "", "locked": "*"}.get(password, password)
    shadow = root.read_text("/etc/shadow")
    if shadow is None:
        raise GuestError("the stage has no /etc/shadow")
    lines = shadow.splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) >= 3:
            fields[1] = field
            if fields[2] == "0":  # 0 would force a password change at the first login
                fields[2] = str(int(time.time()) // 86400)
            lines[i] = ":".join(fields)
            break
    else:
        raise GuestError("the stage's /etc/shadow has no root entry")
    root.write_text("/etc/shadow", "\n".join(lines) + "\n")
    if keys:
        home = _home(root, "root")
        root.mkdir(f"{home}/.ssh", 0o700)
        root.write_text(f"{home}/.ssh/authorized_keys", "\n".join(keys) + "\n", mode=0o600)
        initsystem.enable(root, init, "sshd")
    kind = "a crypt hash" if password not in ("empty", "locked") else password
    log.info("root password: %s; SSH keys: %d%s", kind, len(keys), ", sshd enabled" if keys else "")


def _home(root: GuestRoot, user: str) -> str:
    for line in (root.read_text("/etc/passwd") or "").splitlines():
        fields = line.split(":")
        if fields[0] == user and len(fields) >= 6 and fields[5].startswith("/"):
            return fields[5]
    return "/root"


# -- network -----------------------------------------------------------------------------------


def set_network(root: GuestRoot, init: Init, nics: Sequence[Nic], mode: str) -> None:
    """NETWORK: nothing for ``none``; else per NIC config, a name pinned to its MAC, enabled."""
    interfaces = network.plan(nics, mode)
    if not interfaces:
        log.info("network: lo only (NETWORK=%s, %d NICs)", mode, len(nics))
        return
    for i in interfaces:
        if i.mac:
            root.write_text(f"/etc/systemd/network/10-ganeti-{i.name}.link", network.link(i))
    if init == "systemd":
        for i in interfaces:
            root.write_text(
                f"/etc/systemd/network/50-ganeti-{i.name}.network", network.networkd(i, mode)
            )
        initsystem.enable(root, init, "systemd-networkd")
    else:
        if not root.exists("/etc/init.d/net.lo"):
            raise GuestError(
                f"NETWORK={mode} needs netifrc in the stage (/etc/init.d/net.lo is missing)"
            )
        dhcp = any(i.dhcp for i in interfaces)
        client = _dhcp_client(root) if dhcp else None
        root.write_text("/etc/conf.d/net", network.netifrc(interfaces, mode, client or ""))
        for i in interfaces:
            root.symlink(f"/etc/init.d/net.{i.name}", "net.lo")
            initsystem.enable(root, init, f"net.{i.name}")
        if dhcp and client is None:
            log.warning(
                "network: the stage has no DHCP client for netifrc (%s); "
                "DHCP interfaces stay down until one is installed",
                ", ".join(DHCP_CLIENTS),
            )
        elif client is not None:
            log.info("network: DHCP by netifrc's %s module", client)
    for i in interfaces:
        how = ", ".join((["dhcp"] if i.dhcp else []) + list(i.addresses))
        log.info("network: %s (%s): %s", i.name, i.mac or "no MAC", how)


#: netifrc's DHCP modules, preferred first (dhcpcd is Gentoo's default client), and the
#: program each one needs; netifrc's udhcpc module runs busybox's applet.
DHCP_CLIENTS = {
    "dhcpcd": ("/sbin/dhcpcd", "/usr/sbin/dhcpcd", "/usr/bin/dhcpcd"),
    "dhclient": ("/sbin/dhclient", "/usr/sbin/dhclient", "/usr/bin/dhclient"),
    "pump": ("/sbin/pump", "/usr/sbin/pump", "/usr/bin/pump"),
    "udhcpc": ("/bin/busybox",),
}
UDHCPC_LINKS = ("/sbin/udhcpc", "/usr/sbin/udhcpc", "/bin/udhcpc", "/usr/bin/udhcpc")


def _dhcp_client(root: GuestRoot) -> Optional[str]:
    """The netifrc DHCP module the stage has the client of (preferred first), or None."""
    for module, programs in DHCP_CLIENTS.items():
        has_program = any(root.is_file(p) for p in programs)
        if has_program and (module != "udhcpc" or _busybox_has_udhcpc(root)):
            return module
    return None


def _busybox_has_udhcpc(root: GuestRoot) -> bool:
    """An ``udhcpc`` link, or the name in /bin/busybox's applet table (read, never run)."""
    if any(root.exists(p) for p in UDHCPC_LINKS):
        return True
    try:
        busybox = root.read_bytes("/bin/busybox") or b""
    except GuestError:  # bigger than any busybox: not one
        return False
    return b"\0udhcpc\0" in busybox


# -- the rest ----------------------------------------------------------------------------------


def reset_machine_id(root: GuestRoot) -> None:
    """An empty /etc/machine-id: each instance makes its own at first boot."""
    root.write_text("/etc/machine-id", "", mode=0o444)


def set_timezone(root: GuestRoot, zone: str) -> None:
    """TIMEZONE: /etc/localtime → the zoneinfo file, and /etc/timezone; empty keeps the stage's."""
    if not zone:
        return
    # The zone may be the timezone OS parameter: never echoed nor logged.
    if not root.is_file(f"/usr/share/zoneinfo/{zone}"):
        raise ConfigError(
            "the stage has no zoneinfo file of that name (from TIMEZONE or the timezone "
            "OS parameter); allowed values: a zoneinfo name the stage ships, such as Europe/Berlin",
            key="TIMEZONE",
        )
    root.symlink("/etc/localtime", f"../usr/share/zoneinfo/{zone}")
    root.write_text("/etc/timezone", zone + "\n")
    log.info("time zone: set")


def copy_resolv_conf(
    root: GuestRoot, node: Path = NODE_RESOLV_CONF, upstream: Path = RESOLVED_UPSTREAM
) -> None:
    """The node's resolv.conf in the guest (as debootstrap does); a resolved stub is skipped."""
    try:
        text = node.read_text()
    except OSError:
        log.info("resolv.conf: the node has none to copy")
        return
    servers = re.findall(r"(?m)^\s*nameserver\s+(\S+)", text)
    if servers and all(s.startswith("127.") for s in servers):
        # A local stub (systemd-resolved, dnsmasq) means nothing inside the guest.
        if not upstream.is_file():
            log.warning("resolv.conf: the node's only name servers are local; not copied")
            return
        text = upstream.read_text()
    root.write_text("/etc/resolv.conf", text)


def remove_ssh_host_keys(root: GuestRoot) -> None:
    """No host keys baked in: sshd makes each instance's own at first start."""
    for path in root.glob("/etc/ssh", "ssh_host_*key*"):
        root.unlink(path)
