"""``gentoobootstrap-try``: run the installed OS's ``create`` on a disk image, as Ganeti would.

For admins testing a variant before ``gnt-instance add``::

    gentoobootstrap-try /var/tmp/test.img --size 4G --name test.example.com --variant default

It makes (or grows) the sparse image, runs ``OSDIR/create`` the way Ganeti's
node daemon does — cleared environment, cwd the OS directory,
``PATH=/sbin:/bin:/usr/sbin:/usr/bin``, stdin closed, the OS-interface
variables (``INSTANCE_*``, ``INSTANCE_HV_*``, ``INSTANCE_BE_*``, ``NIC_0_*``,
``DISK_0_*``, ``OSP_*``) — with its output in a log file named like Ganeti's,
then prints what it made: partition table, filesystems and the guest's fstab.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import re
import stat
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Optional, TextIO

from gentoobootstrap import paths, runner
from gentoobootstrap.cli import exit_status
from gentoobootstrap.disk import devices, filesystems, mounts
from gentoobootstrap.disk.layout import Partition
from gentoobootstrap.errors import DiskError, GentooBootstrapError
from gentoobootstrap.guest import installed
from gentoobootstrap.guest.tree import GuestRoot
from gentoobootstrap.log import setup as log_setup

log = logging.getLogger(__name__)

GANETI_PATH = "/sbin:/bin:/usr/sbin:/usr/bin"
_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

#: What Ganeti passes for each hypervisor with its default parameters.
HYPERVISOR_PARAMETERS = {
    "kvm": {
        "root_path": "/dev/vda1",
        "kernel_path": "/boot/vmlinuz-3-kvmU",
        "kernel_args": "ro",
        "initrd_path": "",
        "serial_console": "True",
        "serial_speed": "38400",
        "disk_type": "paravirtual",
        "nic_type": "paravirtual",
        "boot_order": "disk",
        "migration_mode": "live",
    },
    "xen-pvm": {
        "root_path": "/dev/xvda1",
        "kernel_path": "/boot/vmlinuz-3-xenU",
        "kernel_args": "ro",
        "initrd_path": "",
        "bootloader_path": "",
        "migration_mode": "live",
    },
}


def parse_size(text: str) -> int:
    """``4G``, ``512M``, ``2048`` (MiB) -> bytes."""
    match = re.fullmatch(r"(\d+)\s*([KMGT]?)i?B?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4G, 512M)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gentoobootstrap-try",
        description="Run the installed OS definition's create on a disk image the way "
        "Ganeti's node daemon does, then show what it made.",
    )
    p.add_argument("disk", type=Path, help="disk image file (made sparse if missing) or device")
    p.add_argument("--size", type=parse_size, help="image size, e.g. 4G (grows, never shrinks)")
    p.add_argument("--name", default="try.example.com", help="instance name (host name)")
    p.add_argument("--variant", default="default", help="OS variant (default: default)")
    for flag, dest, text in (
        ("-O", "params", "OS parameter, as gnt-instance add -O"),
        ("-B", "backend", "backend parameter (maxmem=1024, ...)"),
        ("-H", "hvparams", "hypervisor parameter (root_path=/dev/vda2, ...)"),
    ):
        p.add_argument(
            flag, dest=dest, action="append", type=_key_value, default=[], metavar="KEY=VALUE",
            help=text,
        )  # fmt: skip
    p.add_argument("--hypervisor", choices=sorted(HYPERVISOR_PARAMETERS), default="kvm")
    p.add_argument("--reinstall", action="store_true", help="set INSTANCE_REINSTALL=1")
    p.add_argument("--debug", action="store_true", help="DEBUG_LEVEL=1: log every command")
    p.add_argument(
        "--os-dir",
        type=Path,
        default=paths.OS_PATH,
        help=f"the OS definition to run (default: {paths.OS_PATH})",
    )
    p.add_argument(
        "--log",
        type=Path,
        help="log file (default: next to the image, named "
        "like Ganeti's add-OS+VARIANT-NAME-TIMESTAMP.log)",
    )
    return p


def prepare_image(disk: Path, size: Optional[int]) -> int:
    """Make the sparse image or grow it to ``size``; its size in bytes."""
    if devices.is_block_device(disk):
        return devices.size_of(disk)
    current = disk.stat().st_size if disk.exists() else None
    if current is None and size is None:
        raise DiskError(f"{disk} does not exist: give --size to make it")
    if size is not None and (current is None or size > current):
        # Never through a symlink: a sticky /var/tmp lets anyone plant one at the name.
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        flags |= os.O_CREAT | os.O_EXCL if current is None else 0
        try:
            fd = os.open(disk, flags, 0o600)
        except OSError as e:
            raise DiskError(f"{disk}: {_problem(e)}; give the image file itself") from None
        with open(fd, "wb") as f:
            f.truncate(size)
        return size
    if size is not None and size < (current or 0):
        log.warning("%s is already %d MiB; not shrinking it", disk, (current or 0) >> 20)
    return current or 0


def instance_os(args: argparse.Namespace) -> str:
    """Ganeti's OS+VARIANT name of the instance."""
    return f"{args.os_dir.name}+{args.variant}"


def environment(args: argparse.Namespace, size: int) -> dict[str, str]:
    """The variables Ganeti's node daemon gives ``create`` for this instance."""
    os_name = args.os_dir.name
    block = devices.is_block_device(args.disk)
    env = {
        "PATH": GANETI_PATH,
        "OS_API_VERSION": "20",
        "OS_NAME": os_name,
        "OS_VARIANT": args.variant,
        "DEBUG_LEVEL": "1" if args.debug else "0",
        "INSTANCE_NAME": args.name,
        "INSTANCE_OS": instance_os(args),
        "INSTANCE_UUID": str(uuid.uuid4()),
        "INSTANCE_PRIMARY_NODE": str(uuid.uuid4()),
        "INSTANCE_SECONDARY_NODES": "",
        "INSTANCE_CTIME": str(time.time()),
        "INSTANCE_MTIME": str(time.time()),
        "HYPERVISOR": args.hypervisor,
        "DISK_COUNT": "1",
        "DISK_0_PATH": str(args.disk.resolve()),
        "DISK_0_ACCESS": "rw",
        "DISK_0_SIZE": str(size >> 20),
        "DISK_0_UUID": str(uuid.uuid4()),
        "DISK_0_BACKEND_TYPE": "block" if block else "file:loop",
        "DISK_0_FRONTEND_TYPE": "paravirtual",
        "NIC_COUNT": "1",
        "NIC_0_MAC": "aa:00:00:" + ":".join(f"{b:02x}" for b in os.urandom(3)),
        "NIC_0_MODE": "bridged",
        "NIC_0_LINK": "br0",
        "NIC_0_BRIDGE": "br0",
        "NIC_0_UUID": str(uuid.uuid4()),
        "NIC_0_FRONTEND_TYPE": "paravirtual",
    }
    backend = {
        "maxmem": "512",
        "minmem": "512",
        "vcpus": "1",
        "always_failover": "False",
        "auto_balance": "True",
        "spindle_use": "1",
    }
    backend.update(args.backend)
    hvparams = dict(HYPERVISOR_PARAMETERS[args.hypervisor])
    hvparams.update(args.hvparams)
    env.update({f"INSTANCE_BE_{k}": v for k, v in backend.items()})
    env.update({f"INSTANCE_HV_{k}": v for k, v in hvparams.items()})
    env.update({"OSP_" + k.upper().replace("-", "_"): v for k, v in args.params})
    if args.reinstall:
        env["INSTANCE_REINSTALL"] = "1"
    return env


def _problem(error: OSError) -> str:
    return "it is a symlink" if error.errno == errno.ELOOP else error.strerror or str(error)


def open_log(path: Path) -> TextIO:
    """``path`` opened for create's output, mode 0600: made new, or an earlier log of ours
    emptied, but never written through a symlink or into a file of someone else (a sticky
    directory such as /var/tmp lets anyone plant either at a predictable name)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fd = _reopen_log(path, flags)
    except OSError as e:
        raise GentooBootstrapError(f"log file {path}: {_problem(e)}") from None
    os.fchmod(fd, 0o600)
    return open(fd, "w+")


def _reopen_log(path: Path, flags: int) -> int:
    """An existing ``path``, emptied, if it is an earlier log of ours: a regular file we own
    with no other link."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK)
    except OSError as e:
        raise GentooBootstrapError(
            f"log file {path}: {_problem(e)}; remove it or give another --log"
        ) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
        os.close(fd)
        raise GentooBootstrapError(
            f"log file {path} exists and is not an earlier log of ours: "
            "remove it or give another --log"
        )
    os.ftruncate(fd, 0)
    return fd


def run_create(os_dir: Path, env: dict[str, str], log_file: IO[str]) -> int:
    """Run ``OSDIR/create`` like Ganeti: env as given, cwd the OS dir, output to ``log_file``."""
    script = os_dir / "create"
    if not os.access(script, os.X_OK):
        raise GentooBootstrapError(f"{script} is not an executable OS script: give --os-dir")
    result = runner.run(
        [script], stdout=log_file, stderr=runner.STDOUT, env=env, cwd=os_dir, check=False
    )
    return int(result.returncode)


def describe(disk: Path) -> str:
    """What is on ``disk``: partition table, filesystems, and the root filesystem's fstab."""
    lines = []
    with contextlib.ExitStack() as stack:
        device = stack.enter_context(devices.attach(disk, readonly=True))
        style, found = devices.read_table(device)
        lines.append(f"partition table: {style}")
        if not found:
            found = [Partition(0, "", 0, devices.size_of(device))]
        nodes = stack.enter_context(devices.partitions(device, found, readonly=True))
        root = None
        for p in sorted(found, key=lambda p: p.start):  # as they lie on the disk
            node = nodes[p.number]
            fstype = filesystems.fstype_of(node) or "-"
            label = filesystems.label_of(node)
            uuid_ = filesystems.uuid_of(node) if fstype != "-" else "-"
            where = f"partition {p.number}" if p.number else "whole disk"
            lines.append(
                f"  {where}: start {p.start >> 20} MiB, size {p.size >> 20} MiB, "
                f"{fstype}, label {label or '-'}, UUID {uuid_}"
            )
            if label == "root" or (root is None and fstype in filesystems.ROOT_FILESYSTEMS):
                root = (node, fstype)
        if root is not None:
            target = stack.enter_context(mounts.temporary_directory())
            installed.mount_readonly(stack, root[0], target, root[1])
            lines.append("/etc/fstab:")
            text = GuestRoot(target).read_text("/etc/fstab") or "(none)\n"
            lines += [
                "  " + line for line in text.splitlines() if line and not line.startswith("#")
            ]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    log_setup(plain=True)
    return exit_status("", lambda: _try(args))


def _try(args: argparse.Namespace) -> int:
    stamp = time.strftime("%Y-%m-%d_%H_%M_%S")
    logfile = args.log or args.disk.resolve().parent / (
        f"add-{instance_os(args)}-{args.name}-{stamp}.log"
    )
    with open_log(logfile) as log_file:
        size = prepare_image(args.disk, args.size)
        env = environment(args, size)
        print(f"running {args.os_dir / 'create'} on {args.disk} (log: {logfile})", flush=True)
        start = time.monotonic()
        status = run_create(args.os_dir, env, log_file)
        took = time.monotonic() - start
        if status != 0:
            print(
                f"create failed with exit status {status} after {took:.1f}s; last lines of the log:"
            )
            log_file.seek(0)  # the file we wrote, whatever its name points to now
            print("\n".join(log_file.read().splitlines()[-20:]))
            return 1
    print(f"create succeeded in {took:.1f}s")
    print(describe(args.disk))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
