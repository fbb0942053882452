"""The disk layout of an instance, computed from the settings: pure, no I/O.

``PARTITION_STYLE`` msdos (default) or gpt gives a partition table with the
root filesystem, an optional ``/boot`` (``BOOT_SIZE``) and optional swap
(``SWAP``/``SWAP_SIZE``, default the instance's maxmem); root takes the rest.
``none`` puts the root filesystem on the whole disk.  ``SWAP=file`` makes no
partition: a swap file of that size on root (``filesystems.SWAP_FILE``), which
root's minimum size then includes.  Partitions start and end
on 1 MiB boundaries.

The root filesystem goes on the partition that ``INSTANCE_HV_root_path`` names
when it names a partition of the first disk (Ganeti KVM's default
``/dev/vda1``), so an instance booted with the node's kernel finds its root;
the other partitions take the remaining numbers in the order boot, swap.
Whatever its number, root is the partition physically last on the disk — boot
and swap sit before it — so that it can grow into space added at the disk's end.

``BOOT_FIRMWARE`` decides what a gpt disk gets for booting from itself: a BIOS
boot partition (GRUB's i386-pc core image) and/or an EFI system partition
(FAT32, mounted at ``/efi``); both by default.  msdos boots only under BIOS
(its boot code sits in the gap before the first partition).  Both take the
numbers after the others, ESP first, so root, boot and swap are numbered as
without them; the ESP is the first partition on the disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Optional

from gentoobootstrap.config.settings import BootFirmware, PartitionStyle, Settings
from gentoobootstrap.disk.filesystems import FILESYSTEMS
from gentoobootstrap.errors import ConfigError, DiskError, OSEnvError

MIB = 1 << 20
#: No disk below 256 MiB, whatever the layout: the README promises that minimum.
MIN_DISK_MIB = 256
MIN_BOOT_MIB = 32
MIN_SWAP_MIB = 16
#: The filesystem of a separate /boot: every boot loader reads it.
BOOT_FILESYSTEM = "ext4"
#: gpt: a BIOS boot partition in the gap before the first MiB (after the partition
#: entries), numbered last, so that GRUB can boot a gpt disk and root keeps its number.
BIOS_BOOT_START = 64 << 10
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
#: The EFI system partition: FAT32 (the one filesystem UEFI firmware must read), 100 MiB
#: (room for GRUB's EFI image, a few MiB, and more boot loaders), at /efi: not below /boot,
#: which may be a filesystem of its own, and where the Gentoo Handbook and systemd put it.
ESP_MIB = 100
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ESP_FILESYSTEM = "vfat"
#: What a partition is for: "bios" is gpt's BIOS boot partition; "" a partition read from
#: a disk, which says nothing of its role.
Role = Literal["root", "boot", "swap", "esp", "bios", ""]
#: Where each role's filesystem is mounted in the guest.
MOUNTPOINTS: dict[Role, str] = {"root": "/", "boot": "/boot", "esp": "/efi"}
#: Firmware a disk can boot under from itself.
Firmware = Literal["bios", "uefi"]
#: What each BOOT_FIRMWARE asks of a gpt disk.
FIRMWARE: dict[BootFirmware, tuple[Firmware, ...]] = {
    "bios": ("bios",),
    "uefi": ("uefi",),
    "both": ("bios", "uefi"),
}

#: First-disk partition names a hypervisor's root_path may use: /dev/vda1, /dev/sda2, /dev/xvda1.
_FIRST_DISK_PARTITION = re.compile(
    r"/dev/(?:vd|sd|xvd|hd)a([1-9][0-9]*)|/dev/nvme0n1p([1-9][0-9]*)"
)


@dataclass(frozen=True)
class Partition:
    """One partition (or, with style none, the whole disk as number 0); bytes."""

    number: int
    role: Role
    start: int
    size: int
    fstype: str = ""  # filesystem to make: ext4, xfs, ..., "swap"

    @property
    def mountpoint(self) -> Optional[str]:
        return MOUNTPOINTS.get(self.role)


@dataclass(frozen=True)
class Layout:
    style: PartitionStyle
    partitions: tuple[Partition, ...]
    swap_file: int = 0  # bytes of the swap file on root (0: none)

    def role(self, role: Role) -> Optional[Partition]:
        return next((p for p in self.partitions if p.role == role), None)

    @property
    def root(self) -> Partition:
        root = self.role("root")
        assert root is not None
        return root

    @property
    def firmware(self) -> tuple[Firmware, ...]:
        """What this disk boots under from itself: ``bios`` and/or ``uefi``."""
        bios = self.style == "msdos" or self.role("bios") is not None
        return (*(("bios",) if bios else ()), *(("uefi",) if self.role("esp") else ()))

    def describe(self) -> str:
        """One line for the log: ``msdos: 1 root ext4 1023 MiB, 2 swap 512 MiB``."""
        parts = ", ".join(
            f"{p.number} BIOS boot"
            if p.role == "bios"
            else f"{p.number} {p.role} {p.fstype + ' ' if p.fstype != 'swap' else ''}"
            f"{p.size // MIB} MiB"
            for p in self.partitions
        )
        swap_file = f", swap file {self.swap_file // MIB} MiB" if self.swap_file else ""
        return f"{self.style}: {parts}{swap_file}"

    def sfdisk_script(self, sector_size: int = 512) -> str:
        """Input for ``sfdisk`` that writes this table (style msdos or gpt)."""
        if self.style == "none":
            raise ValueError("style none has no partition table")
        label = "dos" if self.style == "msdos" else "gpt"
        lines = [f"label: {label}", "unit: sectors"]
        if self.role("bios"):
            lines.append(f"first-lba: {BIOS_BOOT_START // sector_size}")
        lines.append("")
        bootable = self.role("boot") or self.root
        for p in self.partitions:
            kind = {"swap": "S", "bios": BIOS_BOOT_TYPE, "esp": ESP_TYPE}.get(p.role, "L")
            flag = ", bootable" if self.style == "msdos" and p is bootable else ""
            lines.append(
                f"{p.number}: start={p.start // sector_size}, size={p.size // sector_size}, "
                f"type={kind}{flag}"
            )
        return "\n".join(lines) + "\n"


def first_disk_partition(name: str) -> Optional[int]:
    """The partition number the device ``name`` names on the first disk, else None.

    Partitions count from 1: ``/dev/vda0`` names nothing (number 0 is the whole disk here).
    """
    match = _FIRST_DISK_PARTITION.fullmatch(name.strip())
    if not match:
        return None
    return int(match.group(1) or match.group(2))


def swap_mib(settings: Settings, maxmem_mib: Optional[int]) -> int:
    """The swap size in MiB (partition or file): 0 without, else SWAP_SIZE or the maxmem."""
    if settings.swap == "no" or (settings.swap == "yes" and settings.partition_style == "none"):
        return 0
    size = settings.swap_size if settings.swap_size is not None else maxmem_mib
    if size is None:
        raise ConfigError(
            f"SWAP={settings.swap} but SWAP_SIZE is empty and the instance has no "
            "INSTANCE_BE_maxmem; set SWAP_SIZE",
            key="SWAP_SIZE",
        )
    if size < MIN_SWAP_MIB:
        raise ConfigError(f"{size} MiB is below the minimum of {MIN_SWAP_MIB}", key="SWAP_SIZE")
    return size


def firmware(settings: Settings) -> tuple[Firmware, ...]:
    """What BOOT_FIRMWARE asks the disk to boot under, given its PARTITION_STYLE."""
    style, wanted = settings.partition_style, settings.boot_firmware
    if style == "none":
        if wanted:
            raise ConfigError(
                "PARTITION_STYLE=none has no partition table to boot from; "
                "leave BOOT_FIRMWARE empty, or use msdos or gpt",
                key="BOOT_FIRMWARE",
            )
        return ()
    if style == "msdos":
        if wanted not in ("", "bios"):
            raise ConfigError(
                f"{wanted} needs an EFI system partition, which only PARTITION_STYLE=gpt gets; "
                "set PARTITION_STYLE=gpt, or BOOT_FIRMWARE=bios",
                key="BOOT_FIRMWARE",
            )
        return ("bios",)
    return FIRMWARE[wanted or "both"]


def check_boot_type(planned: Layout, boot_type: str) -> None:
    """``INSTANCE_HV_boot_type`` (bios, uefi, direct_kernel) against what the disk boots under."""
    if boot_type not in ("bios", "uefi") or boot_type in planned.firmware:
        return
    has = planned.firmware
    fix = (
        'PARTITION_STYLE="gpt" with BOOT_FIRMWARE empty, uefi or both'
        if boot_type == "uefi"
        else "BOOT_FIRMWARE empty, bios or both"
    )
    raise OSEnvError(
        "INSTANCE_HV_boot_type",
        f"{boot_type}, but the disk's {planned.style} layout "
        + (f"boots only under {' and '.join(has)}" if has else "has no boot partitions")
        + f": set {fix} in the variant, or boot the instance with boot_type="
        + (has[0] if has else "direct_kernel"),
    )


def plan(
    settings: Settings,
    disk_size: int,
    *,
    root_path: str = "",
    maxmem_mib: Optional[int] = None,
    min_root_mib: int = 0,
) -> Layout:
    """The layout for a disk of ``disk_size`` bytes, or DiskError naming found and needed sizes.

    ``min_root_mib`` raises the root minimum (e.g. to what the stage needs unpacked).
    """
    style, fstype = settings.partition_style, settings.filesystem
    swap_file = swap_mib(settings, maxmem_mib) if settings.swap == "file" else 0
    root_min = max(FILESYSTEMS[fstype].min_root_mib, min_root_mib) + swap_file
    root_what = f"root {root_min} MiB ({fstype}" + (
        f", swap file {swap_file} MiB)" if swap_file else ")"
    )
    if style == "none":
        firmware(settings)
        if settings.swap == "yes" or settings.boot_size:
            raise ConfigError(
                "PARTITION_STYLE=none puts the root filesystem on the whole disk; "
                "set SWAP=no or file and BOOT_SIZE=0, or use msdos or gpt",
                key="PARTITION_STYLE",
            )
        _check_size(disk_size, max(root_min, MIN_DISK_MIB), root_what)
        return Layout(style, (Partition(0, "root", 0, disk_size, fstype),), swap_file * MIB)
    if settings.boot_size and settings.boot_size < MIN_BOOT_MIB:
        raise ConfigError(
            f"{settings.boot_size} MiB is below the minimum of {MIN_BOOT_MIB} (0: no /boot)",
            key="BOOT_SIZE",
        )
    boots = firmware(settings)
    others: list[tuple[Role, int, str]] = []  # (role, MiB, fstype) in disk and numbering order
    if settings.boot_size:
        others.append(("boot", settings.boot_size, BOOT_FILESYSTEM))
    if settings.swap == "yes":
        others.append(("swap", swap_mib(settings, maxmem_mib), "swap"))
    count = len(others) + 1
    root_number = first_disk_partition(root_path) or 1
    if root_number > count:
        names = ", ".join(["root", *(role for role, _, _ in others)])
        raise ConfigError(
            f"{root_path} names partition {root_number} but the layout has {count} "
            f"({names}); set the instance's root_path to /dev/vda1 or add partitions",
            key="INSTANCE_HV_root_path",
        )
    # 1 MiB before the first partition; gpt keeps its backup table in the last MiB.
    reserved = 1 + (1 if style == "gpt" else 0)
    esp = ESP_MIB if "uefi" in boots else 0
    fixed = sum(size for _, size, _ in others) + esp
    needed = max(MIN_DISK_MIB, reserved + fixed + root_min)
    what = " + ".join(
        [f"EFI system {esp} MiB"] * bool(esp)
        + [f"{role} {size} MiB" for role, size, _ in others]
        + [root_what, f"{reserved} MiB partition table"]
    )
    _check_size(disk_size, needed, what)
    root_mib = disk_size // MIB - reserved - fixed
    # On the disk: the ESP, boot, swap, then root up to the end (so it can grow there);
    # root keeps its number, boot and swap take the remaining numbers in their disk order,
    # the ESP and the BIOS boot partition the numbers after them.
    on_disk = [*others, ("root", root_mib, fstype)]
    numbers = [*(n for n in range(1, count + 1) if n != root_number), root_number]
    partitions: list[Partition] = []
    start = MIB
    if esp:
        count += 1
        partitions.append(Partition(count, "esp", start, esp * MIB, ESP_FILESYSTEM))
        start += esp * MIB
    for number, (role, size, kind) in zip(numbers, on_disk):
        partitions.append(Partition(number, role, start, size * MIB, kind))
        start += size * MIB
    if style == "gpt" and "bios" in boots:
        partitions.append(Partition(count + 1, "bios", BIOS_BOOT_START, MIB - BIOS_BOOT_START))
    return Layout(style, tuple(sorted(partitions, key=lambda p: p.number)), swap_file * MIB)


def _check_size(disk_size: int, needed_mib: int, what: str) -> None:
    if disk_size < needed_mib * MIB:
        raise DiskError(
            f"the disk has {disk_size // MIB} MiB but this layout needs at least {needed_mib} MiB "
            f"({what}): give the instance a bigger disk or lower BOOT_SIZE/SWAP_SIZE"
        )
