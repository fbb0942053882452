"""Make filesystems and swap, read their UUIDs, and write fstab lines for them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gentoobootstrap import runner
from gentoobootstrap.errors import DiskError

log = logging.getLogger(__name__)

#: fs type -> mkfs argv before the device: quiet, no questions, overwrite old signatures.
_MKFS = {
    "ext2": ["mkfs.ext2", "-q", "-F", "-L"],
    "ext3": ["mkfs.ext3", "-q", "-F", "-L"],
    "ext4": ["mkfs.ext4", "-q", "-F", "-L"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-L"],
    "btrfs": ["mkfs.btrfs", "-q", "-f", "-L"],
    "swap": ["mkswap", "-L"],
    "vfat": ["mkfs.vfat", "-F", "32", "-n"],  # the EFI system partition: FAT32
}
#: Longest label each filesystem takes (xfs: 12, ext: 16, FAT: 11, upper case).
_LABEL_MAX = {"xfs": 12, "ext2": 16, "ext3": 16, "ext4": 16, "btrfs": 255, "swap": 15, "vfat": 11}
FSTYPES = tuple(_MKFS)


def make(device: Path, fstype: str, label: str) -> str:
    """Make a filesystem (or swap) labelled ``label`` on ``device``; return its UUID.

    A missing mkfs tool is a ToolNotFoundError naming the package to install.
    """
    if fstype not in _MKFS:
        raise ValueError(f"unknown filesystem {fstype!r}")
    if fstype == "vfat":
        label = label.upper()  # mkfs.vfat warns that lower case may not work everywhere
    runner.run([*_MKFS[fstype], label[: _LABEL_MAX[fstype]], device])
    return uuid_of(device)


def uuid_of(device: Path) -> str:
    """The UUID on ``device``, probed from the device itself (blkid's cache may be stale)."""
    result = runner.run(
        ["blkid", "--probe", "--match-tag", "UUID", "--output", "value", device], check=False
    )
    uuid = str(result.stdout).strip()
    if result.returncode != 0 or not uuid:
        raise DiskError(f"no filesystem UUID found on {device}")
    return uuid


def fstype_of(device: Path) -> str:
    """The filesystem type on ``device`` ("" when blkid finds none)."""
    result = runner.run(
        ["blkid", "--probe", "--match-tag", "TYPE", "--output", "value", device], check=False
    )
    return str(result.stdout).strip() if result.returncode == 0 else ""


def label_of(device: Path) -> str:
    """The filesystem label on ``device`` ("" when none)."""
    result = runner.run(
        ["blkid", "--probe", "--match-tag", "LABEL", "--output", "value", device], check=False
    )
    return str(result.stdout).strip() if result.returncode == 0 else ""


@dataclass(frozen=True)
class FstabEntry:
    uuid: str
    mountpoint: str  # "none" for swap
    fstype: str
    options: str = "defaults"
    passno: int = 0

    def line(self) -> str:
        return (
            f"UUID={self.uuid}\t{self.mountpoint}\t{self.fstype}\t{self.options}\t0 {self.passno}"
        )


def fstab_entry(uuid: str, mountpoint: str, fstype: str) -> FstabEntry:
    """The usual entry: root checked first (pass 1), others after (2), swap and btrfs never.

    The ESP (vfat) is for root's eyes only (umask=0077), never checked (a stage3 has no
    fsck.vfat), and nofail: a guest kernel without vfat still boots.
    """
    if fstype == "swap":
        return FstabEntry(uuid, "none", "swap", "sw", 0)
    if fstype == "vfat":
        return FstabEntry(uuid, mountpoint, "vfat", "umask=0077,nofail", 0)
    passno = 0 if fstype == "btrfs" else (1 if mountpoint == "/" else 2)
    return FstabEntry(uuid, mountpoint, fstype, "noatime", passno)


def fstab_text(entries: Sequence[FstabEntry], original: str = "") -> str:
    """``original`` fstab (Gentoo ships comments only) without its entries, then ``entries``."""
    kept = [line for line in original.splitlines() if not line.strip() or line.lstrip()[0] == "#"]
    while kept and not kept[-1].strip():
        kept.pop()
    header = "# <fs>\t\t\t\t\t<mountpoint>\t<type>\t<opts>\t<dump> <pass>"
    lines = [*kept, "", "# Made by ganeti-instance-gentoobootstrap.", header]
    lines += [entry.line() for entry in entries]
    return "\n".join(lines).lstrip("\n") + "\n"
