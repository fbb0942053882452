"""Open an installed instance disk: find its root filesystem and its /boot, and mount them.

Export opens a snapshot read-only (a read-only loop device for a file, and
mount options that never write: ``ro,noload`` for an ext3/4 journal that needs
recovery, ``ro,norecovery`` for XFS, ``ro,rescue=nologreplay`` for btrfs);
rename opens the instance's disk read-write.  The root is the filesystem that
holds ``/etc/fstab`` (the one ``root_path`` names is tried first), and /boot is
the partition the root's fstab names for it.

The disk is its owner's: every byte of it may be hostile.  Its filesystems are
mounted ``nosuid,nodev,noexec`` (mounts.FOREIGN), each on a directory of our own
(``root`` and ``boot`` in a private directory), never on a path inside another
guest filesystem, which the guest could have made a symlink to the node.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from gentoobootstrap import runner
from gentoobootstrap.disk import devices, filesystems, fstab, layout, mounts
from gentoobootstrap.disk.filesystems import FILESYSTEMS, ROOT_FILESYSTEMS
from gentoobootstrap.disk.layout import Partition
from gentoobootstrap.errors import CommandError, DiskError, GentooBootstrapError
from gentoobootstrap.guest.tree import GuestRoot

log = logging.getLogger(__name__)


#: Where root and /boot are mounted, in the private directory (``InstanceDisk.private``).
ROOT_DIR = "root"
BOOT_DIR = "boot"


@dataclass
class InstanceDisk:
    """An opened instance disk: its devices and where its filesystems are mounted."""

    disk: Path
    private: Path  # our own directory: root on private/ROOT_DIR, /boot on private/BOOT_DIR
    root: Path
    root_fstype: str
    boot: Optional[Path] = None
    boot_fstype: str = ""
    swaps: list[Path] = field(default_factory=list)

    @property
    def target(self) -> Path:
        """Where the root filesystem is mounted."""
        return self.private / ROOT_DIR

    @property
    def boot_target(self) -> Optional[Path]:
        """Where /boot is mounted (None when it is on the root filesystem)."""
        return self.private / BOOT_DIR if self.boot is not None else None

    def uuids(self) -> dict[str, list[str]]:
        """role -> UUIDs of the filesystems and swaps found (for the stream header)."""
        found: dict[str, list[str]] = {"root": [filesystems.uuid_of(self.root)]}
        if self.boot is not None:
            found["boot"] = [filesystems.uuid_of(self.boot)]
        swaps = []
        for swap in self.swaps:
            with contextlib.suppress(DiskError):
                swaps.append(filesystems.uuid_of(swap))
        if swaps:
            found["swap"] = swaps
        return found


def mount_readonly(
    stack: contextlib.ExitStack, device: Path, target: Path, fstype: str, snapshot: bool = True
) -> None:
    """Mount ``device`` read-only on ``target``; on a ``snapshot``, with options that never write
    (else plain ``ro``, which a ``remount,rw`` can follow: XFS's norecovery could not)."""
    attempts = FILESYSTEMS[fstype].readonly_options if snapshot else (("ro",),)
    for i, options in enumerate(attempts):
        try:
            stack.enter_context(
                mounts.mount(device, target, fstype=fstype, options=(*options, *mounts.FOREIGN))
            )
            if i:
                log.warning(
                    "%s needs journal recovery; mounted with %s (the snapshot is read as it is)",
                    device,
                    ",".join(options),
                )
            return
        except CommandError:
            if i == len(attempts) - 1:
                raise


def open_disk(
    stack: contextlib.ExitStack,
    source: Path,
    *,
    readonly: bool,
    root_path: str = "",
    with_boot: bool = True,
) -> InstanceDisk:
    """Attach ``source``, find root and /boot, mount them (rw unless ``readonly``) on ``stack``.

    Without ``with_boot`` only the root is mounted.
    """
    disk = stack.enter_context(devices.attach(source, readonly=readonly))
    devices.check_unused(disk, source)
    style, found = devices.read_table(disk)
    if style == "none" or not found:
        found = [Partition(0, "", 0, devices.size_of(disk))]
    nodes = stack.enter_context(devices.partitions(disk, found, readonly=readonly))
    types = {number: filesystems.fstype_of(node) for number, node in nodes.items()}
    log.debug("filesystems on %s: %s", source, types)
    wanted = layout.first_disk_partition(root_path)
    candidates = sorted(
        (n for n, kind in types.items() if kind in ROOT_FILESYSTEMS), key=lambda n: (n != wanted, n)
    )
    private = stack.enter_context(mounts.temporary_directory())
    target = private / ROOT_DIR
    target.mkdir(mode=0o700)
    root_number, guest_fstab = None, None
    for number in candidates:
        probe = contextlib.ExitStack()
        with probe:
            mount_readonly(probe, nodes[number], target, types[number], snapshot=readonly)
            root = GuestRoot(target)
            guest_fstab = _guest_file(root, "/etc/fstab")
            if guest_fstab is not None or root.exists("/etc/os-release"):
                stack.enter_context(probe.pop_all())
                root_number = number
                break
    if root_number is None:
        kinds = ", ".join(f"{n}: {k or 'nothing'}" for n, k in sorted(types.items())) or "none"
        raise DiskError(
            f"no installed system found on {source}: no filesystem holds /etc/fstab "
            f"(partitions: {kinds})"
        )
    if not readonly:
        # All options again: a remount sets every per-mount flag anew.
        runner.run(["mount", "-o", ",".join(("remount", "rw", *mounts.FOREIGN)), target])
    opened = InstanceDisk(
        disk, private, nodes[root_number], types[root_number],
        swaps=[nodes[n] for n, kind in sorted(types.items()) if kind == "swap"],
    )  # fmt: skip
    log.info("root: %s (%s) on %s", opened.root, opened.root_fstype, source)
    boot_number = (
        _boot_partition(guest_fstab or "", nodes, types, root_number) if with_boot else None
    )
    if boot_number is not None:
        opened.boot, opened.boot_fstype = nodes[boot_number], types[boot_number]
        boot = private / BOOT_DIR
        boot.mkdir(mode=0o700)
        if readonly:
            mount_readonly(stack, opened.boot, boot, opened.boot_fstype)
        else:
            stack.enter_context(
                mounts.mount(opened.boot, boot, fstype=opened.boot_fstype, options=mounts.FOREIGN)
            )
        log.info("/boot: %s (%s)", opened.boot, opened.boot_fstype)
    return opened


def _guest_file(root: GuestRoot, path: str) -> Optional[str]:
    """The text of the guest's regular file ``path`` (None when there is none).

    Anything else (a FIFO, a device) is not opened: reading it could hang or fail.
    """
    try:
        if not root.is_file(path):
            return None
        return root.read_text(path)
    except (OSError, GentooBootstrapError) as e:
        raise DiskError(f"cannot read the guest's {path}: {e}") from None


def _boot_partition(
    guest_fstab: str, nodes: dict[int, Path], types: dict[int, str], root_number: int
) -> Optional[int]:
    """The partition ``guest_fstab`` mounts on /boot; None when /boot is on the root."""
    entry = fstab.lookup(guest_fstab, "/boot")
    if entry is None:
        return None
    source = fstab.normal_source(entry.source)
    others = {
        n: node for n, node in nodes.items() if n != root_number and types[n] in ROOT_FILESYSTEMS
    }
    number = layout.first_disk_partition(source)
    if number is not None and number in others:
        return number
    tag, _, value = source.partition("=")
    if tag in ("UUID", "LABEL"):
        for n, node in others.items():
            probe = filesystems.uuid_of(node) if tag == "UUID" else filesystems.label_of(node)
            if probe == value:
                return n
    raise DiskError(
        f"the guest's /etc/fstab mounts /boot from {entry.source}, which is no filesystem on "
        "this disk: fix its fstab, or its /boot would be missing from the result"
    )
