"""Each filesystem declared once; filesystems and swap made; their UUIDs, types, labels read."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from gentoobootstrap import runner
from gentoobootstrap.errors import DiskError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpaceMap:
    """How a filesystem's own tool lists its free extents, reading an unmounted image."""

    argv: tuple[str, ...]  # + image
    #: Its output -> the free extents, (offset, length) in bytes; ValueError when the output
    #: is not what it should be.
    parse: Callable[[str], list[tuple[int, int]]]


def _ext_free(output: str) -> list[tuple[int, int]]:
    """dumpe2fs: each group's "Free blocks: a-b, c, ..." (absolute block numbers), checked
    against the superblock's count of free blocks."""
    block = re.search(r"^Block size:\s+(\d+)$", output, re.MULTILINE)
    count = re.search(r"^Free blocks:\s+(\d+)$", output, re.MULTILINE)
    if block is None or count is None:
        raise ValueError("no block size or free block count")
    size = int(block.group(1))
    free = []
    for ranges in re.findall(r"^[ \t]+Free blocks: (.*)$", output, re.MULTILINE):
        for item in filter(None, (part.strip() for part in ranges.split(","))):
            first, _, last = item.partition("-")
            start, end = int(first), int(last or first)
            free.append((start * size, (end - start + 1) * size))
    if sum(length for _, length in free) != int(count.group(1)) * size:
        raise ValueError("the groups' free blocks do not add up to the superblock's count")
    return free


def _xfs_free(output: str) -> list[tuple[int, int]]:
    """xfs_db's "freesp -d -s": each free extent as "agno agbno len" (the AG free-space btrees and
    free lists), checked against its total; placed by the superblock's blocksize and agblocks."""
    fields = dict(re.findall(r"^(blocksize|agblocks) = (\d+)$", output, re.MULTILINE))
    total = re.search(r"^total free blocks (\d+)$", output, re.MULTILINE)
    if len(fields) != 2 or total is None:
        raise ValueError("no blocksize, agblocks or total of free blocks")
    size, per_group = int(fields["blocksize"]), int(fields["agblocks"])
    free = [
        ((int(group) * per_group + int(start)) * size, int(length) * size)
        for group, start, length in re.findall(r"^\s*(\d+)\s+(\d+)\s+(\d+)$", output, re.MULTILINE)
    ]
    if sum(length for _, length in free) != int(total.group(1)) * size:
        raise ValueError("the free extents do not add up to their total")
    return free


@dataclass(frozen=True)
class Filesystem:
    """What this project knows of one filesystem: how to make it and how to install an image.

    The argv tuples stop before their operands, given where each is used.
    """

    mkfs: tuple[str, ...]  # + label, device: quiet, no questions, overwrite old signatures
    label_max: int  # longest label it takes
    #: Lists a prepared image's free extents: create writes the rest (None: no image is used).
    space_map: Optional[SpaceMap] = None
    grow: tuple[str, ...] = ()  # + the device (or, ``grow_online``, the mount point)
    grow_online: bool = False
    new_uuid: tuple[str, ...] = ()  # + device: cheap, whatever the size of the tree
    seal: tuple[str, ...] = ()  # + device: run on a finished image (resize2fs wants it checked)
    max_growth: int = 0  # an image grown more than this many times over is not used (0: any)
    #: Smallest root filesystem it makes (0: it holds no root or /boot: swap).
    min_root_mib: int = 0
    #: Read-only mount options to try in turn on a disk that must not change; the later ones
    #: never write to the device (no journal replay).
    readonly_options: tuple[tuple[str, ...], ...] = (("ro",),)
    checked_at_boot: bool = True  # fsck checks it at boot (fstab pass 1 for root, 2 after)
    fstab_options: str = "noatime"
    upper_label: bool = False  # its labels are upper case (lower case may not work everywhere)
    #: A swap file on it must be NOCOW (chattr +C while still empty): copy-on-write extents
    #: move, and the kernel swaps to fixed blocks.
    nocow_swap_file: bool = False


#: Every filesystem (and swap) this project makes.  ext's ``tune2fs -U`` rewrites the
#: metadata checksums of the small fresh tree; ``metadata_csum_seed`` would spare that but
#: GRUB before 2.12 cannot read such a filesystem.
_EXT4 = Filesystem(
    ("mkfs.ext4", "-q", "-F", "-L"),
    16,
    space_map=SpaceMap(("dumpe2fs",), _ext_free),
    grow=("resize2fs",),
    new_uuid=("tune2fs", "-U", "random"),
    seal=("e2fsck", "-f", "-p"),
    min_root_mib=64,
    readonly_options=(("ro",), ("ro", "noload")),
)
FILESYSTEMS = {
    "ext2": replace(_EXT4, mkfs=("mkfs.ext2", "-q", "-F", "-L"), readonly_options=(("ro",),)),
    "ext3": replace(_EXT4, mkfs=("mkfs.ext3", "-q", "-F", "-L")),
    "ext4": _EXT4,
    "xfs": Filesystem(
        ("mkfs.xfs", "-q", "-f", "-L"),
        12,
        space_map=SpaceMap(
            ("xfs_db", "-r", "-c", "sb 0", "-c", "print blocksize agblocks", "-c", "freesp -d -s"),
            _xfs_free,
        ),
        grow=("xfs_growfs",),
        grow_online=True,
        new_uuid=("xfs_admin", "-U", "generate"),
        # Growing keeps the image's allocation group size: a partition this many times
        # bigger would get hundreds of small groups, so it is made and unpacked instead.
        max_growth=64,
        min_root_mib=300,  # mkfs.xfs refuses anything smaller
        # A dirty log is replayed even by a read-only mount, unless told not to.
        readonly_options=(("ro", "norecovery"),),
    ),
    # No tool copies a btrfs filesystem's used blocks to a device of another identity simply
    # (btrfs-image leaves the data out): it is always unpacked.
    "btrfs": Filesystem(
        ("mkfs.btrfs", "-q", "-f", "-L"),
        255,
        min_root_mib=128,
        readonly_options=(("ro",), ("ro", "rescue=nologreplay")),
        checked_at_boot=False,  # its fsck does nothing; btrfs checks itself when mounted
        nocow_swap_file=True,
    ),
    "swap": Filesystem(("mkswap", "-L"), 15, checked_at_boot=False),
    # The EFI system partition: FAT32, for root's eyes only, never checked (a stage3 has no
    # fsck.vfat), and nofail, so that a guest kernel without vfat still boots.
    "vfat": Filesystem(
        ("mkfs.vfat", "-F", "32", "-n"),
        11,
        checked_at_boot=False,
        fstab_options="umask=0077,nofail",
        upper_label=True,
    ),
}
#: The filesystems an instance's root (and /boot) may have: the FILESYSTEM setting's values.
ROOT_FILESYSTEMS = tuple(name for name, fs in FILESYSTEMS.items() if fs.min_root_mib)
#: SWAP=file: the swap file's guest path, on root (the guest names it so in fstab).
SWAP_FILE = "/swapfile"


def make(device: Path, fstype: str, label: str) -> str:
    """Make a filesystem (or swap) labelled ``label`` on ``device``; return its UUID.

    A missing mkfs tool is a ToolNotFoundError naming the package to install.
    """
    if fstype not in FILESYSTEMS:
        raise ValueError(f"unknown filesystem {fstype!r}")
    fs = FILESYSTEMS[fstype]
    label = label.upper() if fs.upper_label else label
    runner.run([*fs.mkfs, label[: fs.label_max], device])
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
