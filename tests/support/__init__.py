"""Helpers shared by the test suites (importable as ``support``)."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import sh

from gentoobootstrap.config.osenv import OSEnv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.disk import layout
from gentoobootstrap.disk.layout import Layout
from gentoobootstrap.scripts.install import Mounted

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "python" / "gentoobootstrap"


def library_modules() -> dict[str, Path]:
    """Every module of the library by its name inside the package (``disk.layout``)."""
    return {
        ".".join(path.relative_to(LIBRARY).with_suffix("").parts): path
        for path in sorted(LIBRARY.rglob("*.py"))
    }


def loop_devices_of(under: Path) -> list[str]:
    """Loop devices whose backing file lies under ``under`` (others may be in use by others)."""
    found = []
    for line in sh.losetup("-a", "--noheadings", "-O", "NAME,BACK-FILE", "--raw").splitlines():
        name, _, back = line.partition(" ")
        back = re.sub(r" \(deleted\)$", "", back)
        if back.startswith(str(under)):
            found.append(f"{name} ({back})")
    return found


def mounts_under(under: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(str(under))]


def leaks(under: Path) -> list[str]:
    """Everything of ours still attached or mounted below ``under``."""
    return loop_devices_of(under) + mounts_under(under)


def canary_state(path: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every entry under ``path`` and itself: mode, owner, mtime, and content or link target.
    Node files a hostile input aims at must keep all of it."""
    found = {}
    for p in [path, *sorted(path.rglob("*"))]:
        st = p.lstat()
        body = os.readlink(p).encode() if p.is_symlink() else p.read_bytes() if p.is_file() else b""
        found[str(p.relative_to(path))] = (st.st_mode, st.st_uid, st.st_mtime_ns, body)
    return found


#: NIC 0 on a Ganeti network, IPv4 and IPv6: what Ganeti adds to ganeti_environ's NIC.
NIC0_NETWORK = {
    "NIC_0_IP": "192.0.2.10",
    "NIC_0_NETWORK_NAME": "lan",
    "NIC_0_NETWORK_SUBNET": "192.0.2.0/24",
    "NIC_0_NETWORK_GATEWAY": "192.0.2.1",
    "NIC_0_NETWORK_SUBNET6": "2001:db8:1::/64",
    "NIC_0_NETWORK_GATEWAY6": "2001:db8:1::1",
}


def ganeti_environ(disk: Path, name: str = "inst1.example.com", **extra: str) -> dict[str, str]:
    """The environment Ganeti 3.0 gives ``create`` for a one-disk, one-NIC instance."""
    size_mib = os.stat(disk).st_size // 2**20 if disk.is_file() else 0
    env = {
        "PATH": "/sbin:/bin:/usr/sbin:/usr/bin",
        "OS_API_VERSION": "20",
        "OS_NAME": "gentoobootstrap",
        "OS_VARIANT": "default",
        "DEBUG_LEVEL": "0",
        "INSTANCE_NAME": name,
        "INSTANCE_OS": "gentoobootstrap+default",
        "HYPERVISOR": "kvm",
        "INSTANCE_BE_maxmem": "512",
        "INSTANCE_BE_minmem": "512",
        "INSTANCE_BE_vcpus": "1",
        "INSTANCE_HV_root_path": "/dev/vda1",
        "INSTANCE_HV_serial_console": "True",
        "DISK_COUNT": "1",
        "DISK_0_PATH": str(disk),
        "DISK_0_ACCESS": "rw",
        "DISK_0_BACKEND_TYPE": "file:loop" if disk.is_file() else "block",
        "DISK_0_SIZE": str(size_mib),
        "NIC_COUNT": "1",
        "NIC_0_MAC": "aa:00:00:12:34:56",
        "NIC_0_MODE": "bridged",
        "NIC_0_LINK": "br0",
        "NIC_0_BRIDGE": "br0",
    }
    env.update(extra)
    return env


def mounted_context(
    env: OSEnv,
    settings: Settings,
    target: Path,
    job: Any = None,
    *,
    planned: Layout | None = None,
    devices: dict[str, Path] | None = None,
) -> Mounted[Any]:
    """The context of an install's last phase, for a step run on its own on ``target``:
    the disk /dev/loop7, root on /dev/loop7p1 (unless ``devices`` says otherwise)."""
    return Mounted(
        env,
        settings,
        contextlib.ExitStack(),
        Path("/dev/loop7"),
        job,
        disk=Path("/dev/loop7"),
        layout=planned or layout.plan(settings, 1 << 30),
        devices=devices or {"root": Path("/dev/loop7p1")},
        made=frozenset(),
        target=target,
    )
