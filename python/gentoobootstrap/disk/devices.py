"""The instance disk as a block device, its partition table and partition devices.

Works on nodes whose kernel scans partition tables (``/dev/vda1``,
``/dev/loop0p1``, ``/dev/rbd0p1``) and on kernels or devices that do not
(no partition parsers, device-mapper LVs, DRBD): partitions are found through
sysfs — never by guessing names — added with ``partx`` (BLKPG) when the kernel
did not, and as a last resort given one loop device each (an offset and a size
limit), so neither kpartx nor device-mapper is needed.

Loop devices are set up with the kernel's ioctls, with ``LO_FLAGS_AUTOCLEAR``
from the start: the kernel frees one when its last user goes.  We hold it open
while we use it, so even a SIGKILL leaves nothing attached once our process and
its mount namespace are gone.

Each resource is a context manager; compose them on an ExitStack:

    disk = stack.enter_context(attach(path))        # loop device for a file
    check_unused(disk, path)                        # refuse a busy disk
    wipe(disk); write_table(disk, layout)
    devices = stack.enter_context(partitions(disk, layout.partitions))  # number -> Path
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat
import struct
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Callable, Optional, Union

from gentoobootstrap import runner
from gentoobootstrap.disk.layout import Layout, Partition
from gentoobootstrap.errors import CommandError, DiskError
from gentoobootstrap.resources import releasing

log = logging.getLogger(__name__)

#: How long the kernel (or udev) may take to show a device node.
DEVICE_TIMEOUT = 10.0
#: A loop device is freed on its last close, after the writes a busy node may queue behind.
RELEASE_TIMEOUT = 30.0
SYS_BLOCK = Path("/sys/block")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEVICE_TIMEOUT) -> None:
    """Poll ``condition`` until it holds; DiskError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not condition():
        if time.monotonic() > deadline:
            raise DiskError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def is_block_device(path: Path) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def size_of(path: Path) -> int:
    """Size in bytes of a block device or regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def sector_size(device: Path) -> int:
    if not is_block_device(device):
        return 512
    return int(runner.output(["blockdev", "--getss", device]))


# --- sysfs: what the kernel knows about a block device -----------------------------------


def sysfs_dir(device: Path) -> Path:
    """/sys/class/block/NAME of a block device node, whatever its name."""
    rdev = os.stat(device).st_rdev
    return Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}").resolve()


def kernel_partitions(device: Path) -> dict[int, tuple[Path, int, int]]:
    """The partitions the kernel knows on ``device``: number -> (node, start, size) in bytes."""
    found = {}
    base = sysfs_dir(device)
    for entry in base.iterdir():
        number_file = entry / "partition"
        if not number_file.exists():
            continue
        number = int(number_file.read_text())
        start = int((entry / "start").read_text()) * 512  # sysfs counts 512-byte sectors
        size = int((entry / "size").read_text()) * 512
        found[number] = (Path("/dev") / entry.name, start, size)
    return found


def _devnum(device: Path) -> str:
    rdev = os.stat(device).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def loops_of(file: Path) -> list[Path]:
    """Loop devices whose backing file is ``file``."""
    target = os.path.realpath(file)
    found = []
    for backing in SYS_BLOCK.glob("loop*/loop/backing_file"):
        try:
            name = backing.read_text().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if name == target:
            found.append(Path("/dev") / backing.parent.parent.name)
    return found


def users_of(device: Path) -> list[str]:
    """What uses ``device`` or one of its partitions: mounts, swap, holders (dm, md, ...)."""
    nodes = [device] + [node for node, _, _ in kernel_partitions(device).values()]
    numbers = {}
    for node in nodes:
        with contextlib.suppress(OSError):
            numbers[_devnum(node)] = node
    paths = {os.path.realpath(node): node for node in nodes}
    users = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            # btrfs shows an anonymous device number: match the mount source too.
            source = fields[fields.index("-") + 2] if "-" in fields else ""
            mounted = numbers.get(fields[2]) or paths.get(source)
            if mounted is not None:
                users.append(f"{mounted} is mounted on {fields[4]}")
    with open("/proc/swaps") as f:
        for line in list(f)[1:]:
            name = line.split()[0]
            with contextlib.suppress(OSError):
                if _devnum(Path(name)) in numbers:
                    users.append(f"{name} is in use as swap")
    for node in nodes:
        with contextlib.suppress(OSError):
            for holder in (sysfs_dir(node) / "holders").iterdir():
                users.append(f"{node} is held by {holder.name}")
    return users


def check_unused(device: Path, source: Optional[Path] = None) -> None:
    """Refuse a disk that is mounted, swapped on or held (and, for a file, its other loops)."""
    devices = [device]
    if source is not None and not is_block_device(source):
        devices += [loop for loop in loops_of(source) if loop != device]
    found = {dev: users_of(dev) for dev in devices}
    users = [use for dev in devices for use in found[dev]]
    idle = [str(dev) for dev in devices[1:] if not found[dev]]
    if idle:
        log.warning(
            "%s is also attached to %s (left by an earlier run?); nothing uses it: "
            "detach it with losetup --detach",
            source,
            ", ".join(idle),
        )
    if not users:
        # The kernel's own test: an exclusive open fails while anything claims the disk.
        try:
            os.close(os.open(device, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC))
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            users.append(f"{device} is busy (opened exclusively by another program)")
    if users:
        raise DiskError(
            f"the disk {source or device} is in use: {'; '.join(users)}; "
            "stop what uses it (is the instance running?) and try again"
        )


# --- the disk as a block device ------------------------------------------------------------


@contextlib.contextmanager
def attach(path: Path, *, readonly: bool = False) -> Iterator[Path]:
    """The block device of disk ``path``: a block device as is, a regular file on a loop device.

    The loop device asks for partition scanning so kernels that parse tables
    show ``/dev/loopNpM`` by themselves; it is released on leaving.
    """
    if is_block_device(path):
        yield path
        return
    if not path.is_file():
        raise DiskError(f"{path} is neither a block device nor a regular file")
    with loop_device(path, readonly=readonly, partscan=True) as loop:
        log.debug("attached %s to %s", path, loop)
        yield loop


# --- loop devices ----------------------------------------------------------------------------

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_CONFIGURE = 0x4C0A  # Linux 5.8: attach and set the flags in one step
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_PARTSCAN = 8
#: struct loop_info64: device, inode, rdevice, offset, sizelimit, number, encrypt type,
#: encrypt key size, flags, file name, crypt name, encrypt key, init[2].
_LOOP_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")
LOOP_CONTROL = Path("/dev/loop-control")
#: Free loop devices taken by someone else first, before we give up.
LOOP_ATTEMPTS = 16


@contextlib.contextmanager
def loop_device(
    backing: Path,
    *,
    offset: int = 0,
    size: int = 0,
    readonly: bool = False,
    partscan: bool = False,
) -> Iterator[Path]:
    """A loop device on ``backing`` (``size`` bytes from ``offset``; 0: to the end), freed by
    the kernel when its last user goes: on leaving, or when our process dies."""
    loop, fd = _new_loop(backing, offset, size, readonly, partscan)
    backing_file: list[Optional[str]] = []  # read once, before the device is closed

    def free() -> None:
        if not backing_file:
            backing_file.append(_read(SYS_BLOCK / loop.name / "loop" / "backing_file"))
            os.close(fd)  # our last reference: the kernel clears the device (autoclear)
        _wait_released(loop, backing_file[0])

    with releasing(loop.name, free):
        wait_for(lambda: is_block_device(loop), f"{loop} to appear")
        yield loop


def _new_loop(
    backing: Path, offset: int, size: int, readonly: bool, partscan: bool
) -> tuple[Path, int]:
    """A free loop device set up on ``backing`` with autoclear: its node and our open fd."""
    flags = LO_FLAGS_AUTOCLEAR
    flags |= LO_FLAGS_READ_ONLY if readonly else 0
    flags |= LO_FLAGS_PARTSCAN if partscan else 0
    name = os.fsencode(os.path.realpath(backing))[:63]
    info = _LOOP_INFO64.pack(0, 0, 0, offset, size, 0, 0, 0, flags, name, b"", b"", 0, 0)
    file_fd = os.open(backing, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
    try:
        for _ in range(LOOP_ATTEMPTS):
            control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
            try:
                loop = Path(f"/dev/loop{fcntl.ioctl(control, LOOP_CTL_GET_FREE)}")
            finally:
                os.close(control)
            wait_for(lambda loop=loop: is_block_device(loop), f"{loop} to appear")  # type: ignore[misc]
            fd = os.open(loop, os.O_RDWR | os.O_CLOEXEC)
            try:
                _configure(fd, file_fd, info)
            except OSError as e:
                os.close(fd)
                if e.errno == errno.EBUSY:
                    continue  # another program took it between the two calls
                raise DiskError(f"cannot set up a loop device for {backing}: {e}") from None
            except BaseException:
                os.close(fd)  # autoclear: closing it frees the device
                raise
            return loop, fd
    finally:
        os.close(file_fd)
    raise DiskError(f"no free loop device for {backing} after {LOOP_ATTEMPTS} attempts")


def _configure(fd: int, file_fd: int, info: bytes) -> None:
    """Attach ``file_fd`` to loop device ``fd`` with ``info`` (its flags include autoclear)."""
    try:
        fcntl.ioctl(fd, LOOP_CONFIGURE, struct.pack("=2I", file_fd, 0) + info + bytes(64))
        return
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
    # Kernels before 5.8: attach, then set offset, size and flags.
    fcntl.ioctl(fd, LOOP_SET_FD, file_fd)
    try:
        fcntl.ioctl(fd, LOOP_SET_STATUS64, info)
    except BaseException:
        fcntl.ioctl(fd, LOOP_CLR_FD)
        raise


def _wait_released(loop: Path, before: Optional[str]) -> None:
    """Wait until ``loop`` is really free.

    While anyone still has it open (a probing blkid, a filesystem finishing its
    unmount) the kernel clears it only on their last close.
    """
    if before is None:
        return
    backing = SYS_BLOCK / loop.name / "loop" / "backing_file"
    # Gone, or already attached anew by someone else.
    wait_for(
        lambda: _read(backing) != before,
        f"{loop} to be released (something keeps it open)",
        RELEASE_TIMEOUT,
    )


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except OSError:
        return None


def wipe(device: Path) -> None:
    """Erase old signatures: those of the partitions the kernel knows, then the disk's own.

    A reinstall or a half-finished create leaves partition tables, filesystem and
    swap signatures behind; blkid and mkfs would otherwise trip over them.
    """
    for node, _, _ in kernel_partitions(device).values():
        if is_block_device(node):
            runner.run(["wipefs", "--all", "--force", node])
    runner.run(["wipefs", "--all", "--force", device])


def write_table(device: Path, layout: Layout) -> None:
    """Write the partition table of ``layout`` (msdos or gpt) with sfdisk."""
    script = layout.sfdisk_script(sector_size(device))
    # --no-reread: partitions() tells the kernel itself, whatever the device supports.
    runner.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "always", device],
        input=script,
    )


def read_table(device: Path) -> tuple[str, list[Partition]]:
    """The partition table on ``device``: style (msdos, gpt; none without one) and partitions."""
    result = runner.run(["sfdisk", "--json", device], check=False)
    if result.returncode != 0:
        return "none", []
    table = json.loads(result.stdout)["partitiontable"]
    unit = int(table.get("sectorsize", 512))
    style = {"dos": "msdos", "gpt": "gpt"}.get(table["label"], table["label"])
    found = []
    for entry in table.get("partitions", []):
        # The node name ends in the number whatever the prefix (loop0p1, vda1, file.img1).
        digits = ""
        for c in reversed(entry["node"]):
            if not c.isdigit():
                break
            digits = c + digits
        number = int(digits)
        found.append(Partition(number, "", entry["start"] * unit, entry["size"] * unit))
    return style, found


# --- partition devices ---------------------------------------------------------------------


def _matches(known: dict[int, tuple[Path, int, int]], wanted: Sequence[Partition]) -> bool:
    return all(
        p.number in known and known[p.number][1:] == (p.start, p.size) for p in wanted
    ) and len(known) == len(wanted)


@contextlib.contextmanager
def partitions(
    device: Path, wanted: Sequence[Partition], *, readonly: bool = False
) -> Iterator[dict[int, Path]]:
    """Device nodes for the partitions ``wanted`` of ``device``: number -> node.

    Uses the kernel's partitions when they match the table, else adds them with
    ``partx`` (deleted again on leaving), else attaches one loop device per
    partition (read-only with ``readonly``).  Partition number 0 (style none)
    is the whole device.
    """
    if len(wanted) == 1 and wanted[0].number == 0:
        yield {0: device}
        return
    with contextlib.ExitStack() as stack:
        nodes = _kernel_nodes(device, wanted, stack)
        if nodes is None:
            nodes = {}
            for p in wanted:
                nodes[p.number] = stack.enter_context(
                    _loop_slice(device, p.start, p.size, f"partition {p.number}", readonly)
                )
        for number, node in nodes.items():
            wait_for(lambda node=node: is_block_device(node), f"{node} to appear")  # type: ignore[misc]
            log.debug("partition %d of %s is %s", number, device, node)
        yield nodes


def _kernel_nodes(
    device: Path, wanted: Sequence[Partition], stack: contextlib.ExitStack
) -> Optional[dict[int, Path]]:
    """The kernel's own partition nodes, added with partx if needed; None if it cannot."""
    if not is_block_device(device):
        return None
    known = kernel_partitions(device)
    if not _matches(known, wanted):
        # A kernel that parses tables reads the new one itself; the partitions stay, as
        # they would after a reboot.  (Here, without parsers, it just finds none.)
        runner.run(["blockdev", "--rereadpt", device], check=False)
        known = kernel_partitions(device)
    if not _matches(known, wanted):
        stack.enter_context(releasing(f"the partitions of {device}", lambda: _partx_delete(device)))
        try:
            runner.run(["partx", "--update", device])
        except CommandError as e:
            log.debug("partx cannot add partitions of %s (%s); using loop devices", device, e)
            return None
        known = kernel_partitions(device)
        if not _matches(known, wanted):
            log.debug("kernel partitions of %s do not match the table: %s", device, known)
            return None
    return {p.number: known[p.number][0] for p in wanted}


def _partx_delete(device: Path) -> None:
    """The kernel refuses to delete a partition someone has open (EBUSY), and a probe by
    udev's blkid or a btrfs device scan opens every partition for a moment: try again
    until they are gone."""
    # partx cannot delete through a symlink such as Ganeti's /dev/disk/... adopted
    # devices ("specified range <1:0> does not make sense"): give it the node.
    argv: list[Union[str, Path]] = ["partx", "--delete", device.resolve()]

    def deleted() -> bool:
        return not kernel_partitions(device) or runner.run(argv, check=False).returncode == 0

    try:
        wait_for(deleted, f"the partitions of {device} to be released", RELEASE_TIMEOUT)
    except DiskError:
        runner.run(argv)  # once more: its error carries partx's complaint


def _loop_slice(
    device: Path, offset: int, size: int, what: str, readonly: bool = False
) -> contextlib.AbstractContextManager[Path]:
    log.debug("%s of %s gets a loop device", what, device)
    return loop_device(device, offset=offset, size=size, readonly=readonly)
