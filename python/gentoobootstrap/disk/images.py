"""Prepared filesystem images: a stage unpacked once per filesystem, installed at disk speed.

For each cached stage and each root filesystem type, the cache keeps a sparse
image of a filesystem made with the same ``mkfs`` as create's and holding the
stage unpacked exactly as create unpacks it (:func:`unpack.extract`).  It is
made the first time that pair is needed, under the stage entry's lock, in the
entry's scratch directory, then renamed in beside the stage, mode 0644; it is
named after the stage file, so it ages and goes with it (:meth:`cache.Entry.store`).
Only an image beside the current file of an entry of ``CACHE_DIR`` is used, as
only such a stage counts as member-checked.

Installing writes the image's used blocks onto the root partition, or, when the
disk is a file on the same reflink-capable filesystem as the cache, shares the
image's blocks with it (``FICLONERANGE``); then the filesystem grows to the
partition and gets a new UUID.  What cannot be used that way raises
:class:`Unusable` with the reason: create then unpacks.

The used blocks are those the filesystem's own tool does not list as free
(dumpe2fs, xfs_db: :attr:`filesystems.Filesystem.space_map`), as e2image -ra
and xfs_copy would write them; they are read from the image whatever the
image file holds there (a hole reads as the zeros the filesystem expects), so
nothing depends on which blocks the cache's filesystem keeps as holes.  They go
in large direct reads and writes, reading ahead while writing: on a virtual disk
that both holds the cache and takes the root, e2image's block-at-a-time copy
through the page cache took three times as long, and xfs_copy about twice.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import queue
import stat
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from gentoobootstrap import runner
from gentoobootstrap.disk import devices, filesystems, layout, mounts
from gentoobootstrap.errors import DiskError
from gentoobootstrap.log import complete_step
from gentoobootstrap.stages import cache, unpack

log = logging.getLogger(__name__)

#: Root gets this much more than the stage holds unpacked (metadata, journal, logs); the
#: image is made this big, so every root partition planned for the stage can take it.
ROOT_HEADROOM = 1.1
ROOT_EXTRA_MIB = 64
#: ioctl(2) number of FICLONERANGE: _IOW(0x94, 13, struct file_clone_range).
FICLONERANGE = 0x4020940D
#: fallocate(2) modes: free a range of a file (it then reads as zeros), keeping its size.
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
#: The used blocks are copied this much at a time, their extents widened to whole
#: ``_ALIGN`` pieces of the image (its own bytes: only more of the same is written) so that
#: each read and write is aligned for O_DIRECT and small gaps do not split them.
_CHUNK = 8 * layout.MIB
_ALIGN = 64 << 10
_BUFFERS = 4
#: Bumped when the way images are made changes, so that old ones are not used.
_FORMAT = "1"
#: The label create gives the root filesystem (its role).
_LABEL = "root"


class Unusable(Exception):
    """No image can be used here; the message says why (create unpacks instead)."""


def root_mib(content_bytes: int) -> int:
    """The smallest root, in MiB, for a stage holding ``content_bytes`` unpacked."""
    return int(content_bytes * ROOT_HEADROOM) // layout.MIB + ROOT_EXTRA_MIB


def _image_name(stage: Path, fstype: str) -> str:
    fs = filesystems.FILESYSTEMS[fstype]
    recipe = "\0".join([_FORMAT, *fs.mkfs, *unpack.TAR_EXTRACT_OPTIONS])
    return cache.derived_name(
        stage.name, f"{fstype}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}.img"
    )


def prepared(stage: Path, cache_dir: Path, fstype: str) -> Path:
    """The image of ``stage`` on ``fstype``, made now if it is not in the cache yet."""
    fs = filesystems.FILESYSTEMS[fstype]
    if fs.space_map is None:
        raise Unusable(f"no tool lists the used blocks of {fstype}")
    for tool in (fs.mkfs[0], fs.space_map.argv[0], *fs.grow[:1], *fs.new_uuid[:1], *fs.seal[:1]):
        if not runner.have_tool(tool):
            raise Unusable(f"{tool} is not installed ({runner.PACKAGES.get(tool, tool)})")
    entry = cache.entry_holding(stage, cache_dir)
    if entry is None or not cache.recorded_member_count(stage, cache_dir):
        raise Unusable(f"{stage} is not a checked file of the cache {cache_dir}")
    image = entry.path / _image_name(stage, fstype)
    with entry.locked():
        meta = entry.meta
        if meta is None or meta.file != stage.name:
            raise Unusable(f"{stage.name} is no longer the cached stage")
        if _trusted(image):
            return image
        content = unpack.unpacked_size(stage, cache_dir) or unpack.stream_size(stage)
        size_mib = max(root_mib(content), fs.min_root_mib)
        with entry.workdir() as work:
            made = work / image.name
            with complete_step(f"Preparing the {fstype} image of {stage.name}"):
                _make(stage, fstype, size_mib * layout.MIB, made)
            os.replace(made, image)
    return image


def _trusted(image: Path) -> bool:
    """An image we made: a regular file neither its group nor others may write."""
    try:
        st = image.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o022:
        log.warning("%s: not a file only root writes; making it again", image)
        return False
    return True


def _make(stage: Path, fstype: str, size: int, image: Path) -> None:
    """A fresh ``fstype`` filesystem in the sparse file ``image``, ``stage`` unpacked into it."""
    with cache.create_file(image) as f:
        f.truncate(size)
    with contextlib.ExitStack() as stack:
        loop = stack.enter_context(devices.attach(image))
        filesystems.make(loop, fstype, _LABEL)
        directory = stack.enter_context(mounts.temporary_directory())
        stack.enter_context(mounts.mount(loop, directory, options=mounts.FRESH))
        unpack.extract(stage, directory)
    fs = filesystems.FILESYSTEMS[fstype]
    if fs.seal:
        with devices.attach(image) as loop:
            runner.run([*fs.seal, loop])
    with open(image, "rb") as f:
        os.fsync(f.fileno())


def install(
    image: Path,
    fstype: str,
    device: Path,
    *,
    size: int,
    disk_file: Optional[Path] = None,
    offset: int = 0,
    flush: tuple[Path, ...] = (),
    wipe: bool = False,
) -> str:
    """Put ``image`` on the root ``device`` (``size`` bytes) and make it that filesystem.

    With ``disk_file`` (the instance disk as a file, the root at ``offset`` in it),
    its blocks are shared when the storage can, and the rest of the partition is
    freed: all of it is replaced, so no old signature survives.  ``flush``: the
    block devices over that file, whose caches must not hide (or write back over)
    the shared blocks.  ``wipe``: erase old signatures on ``device`` before copying
    the used blocks, which leave whatever the image does not use in place.
    Returns how it was put there, for the log.  Grows the filesystem now when it
    grows unmounted (else see :func:`grow_mounted`) and gives it a new UUID.
    """
    fs = filesystems.FILESYSTEMS[fstype]
    assert fs.space_map is not None
    length = image.stat().st_size
    if length > size:
        raise Unusable(
            f"the root partition ({size // layout.MIB} MiB) is smaller than the image "
            f"({length // layout.MIB} MiB)"
        )
    if fs.max_growth and size > length * fs.max_growth:
        raise Unusable(
            f"{fstype} grown {size // length}-fold would be left with too many small "
            "allocation groups"
        )
    how = ""
    if disk_file is not None:
        try:
            _clone(image, disk_file, offset, length, size, flush)
            how = "shared the image's blocks (reflink)"
        except Unusable as e:
            log.info("root: copying the image's used blocks (%s)", e)
    if not how:
        extents = used_extents(image, fs.space_map, length)
        if wipe:
            devices.wipe(device)
        _copy(image, device, _pieces(extents, length))
        how = "copied the image's used blocks"
    if fs.grow and not fs.grow_online:
        runner.run([*fs.grow, device])
    runner.run([*fs.new_uuid, device])
    return how


def used_extents(
    image: Path, space_map: filesystems.SpaceMap, length: int
) -> list[tuple[int, int]]:
    """What of the first ``length`` bytes of ``image`` its filesystem uses: (start, end)."""
    output = runner.output([*space_map.argv, image])
    try:
        free = space_map.parse(output)
    except ValueError as e:
        raise Unusable(f"{space_map.argv[0]} did not list the image's free space ({e})") from None
    used = []
    position = 0  # the end of the free space seen so far
    for start, size in [*sorted(free), (length, 0)]:
        if min(start, length) > position:
            used.append((position, min(start, length)))
        position = max(position, start + size)
    return used


def _pieces(extents: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """``extents`` widened to whole ``_ALIGN`` pieces (at most ``length``), and merged."""
    pieces: list[tuple[int, int]] = []
    for start, end in extents:
        low, high = start // _ALIGN * _ALIGN, min(-(-end // _ALIGN) * _ALIGN, length)
        if pieces and low <= pieces[-1][1]:
            pieces[-1] = (pieces[-1][0], high)
        else:
            pieces.append((low, high))
    return pieces


def _copy(image: Path, device: Path, pieces: list[tuple[int, int]]) -> None:
    """Write ``pieces`` of ``image`` at the same offsets of ``device``, then sync it.

    Direct I/O on both sides where they take it: the bytes neither linger in nor
    evict the page cache, and each chunk goes to the device as one large write,
    while the next ones are being read (:func:`_read_ahead`).
    """
    with contextlib.ExitStack() as stack:
        source = _open(image, os.O_RDONLY)
        stack.callback(os.close, source)
        target = _open(device, os.O_WRONLY)
        stack.callback(os.close, target)
        for chunk, start in stack.enter_context(_read_ahead(image, source, pieces)):
            done = 0
            while done < len(chunk):
                done += os.pwritev(target, [chunk[done:]], start + done)
        os.fsync(target)


@contextlib.contextmanager
def _read_ahead(
    image: Path, fd: int, pieces: list[tuple[int, int]]
) -> Iterator[Iterator[tuple[memoryview, int]]]:
    """The chunks of ``pieces`` of ``fd`` (the file ``image``) and their offsets, read by a
    thread up to ``_BUFFERS`` chunks ahead: the disk reads the next while one is written.

    Each chunk is valid until the next is taken.  Leaving stops the thread and waits for it
    (it finishes at most the one read it is in).
    """
    free: queue.Queue[mmap.mmap] = queue.Queue()
    read: queue.Queue[tuple[mmap.mmap, int, int] | BaseException | None] = queue.Queue()
    stop = threading.Event()
    for _ in range(_BUFFERS):
        free.put(mmap.mmap(-1, _CHUNK))  # page-aligned, as O_DIRECT wants

    def reader() -> None:
        try:
            for start, end in pieces:
                while start < end:
                    buffer = free.get()
                    if stop.is_set():
                        return
                    got = os.preadv(fd, [memoryview(buffer)[: min(_CHUNK, end - start)]], start)
                    if got <= 0:
                        raise DiskError(f"{image} ends at {start}, inside its filesystem")
                    read.put((buffer, start, got))
                    start += got
            read.put(None)
        except BaseException as e:  # handed to the writer, which raises it
            read.put(e)

    def chunks() -> Iterator[tuple[memoryview, int]]:
        while (item := read.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            buffer, start, got = item
            yield memoryview(buffer)[:got], start
            free.put(buffer)

    thread = threading.Thread(target=reader, name="image reader", daemon=True)
    thread.start()
    try:
        yield chunks()
    finally:
        stop.set()
        free.put(mmap.mmap(-1, 1))  # wakes a reader waiting for a buffer
        thread.join()


def _open(path: Path, flags: int) -> int:
    """``path`` opened for direct I/O, or through the page cache where it takes none."""
    try:
        return os.open(path, flags | os.O_DIRECT | os.O_CLOEXEC)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    return os.open(path, flags | os.O_CLOEXEC)


def grow_mounted(fstype: str, mountpoint: Path) -> None:
    """Grow a filesystem installed from an image that grows only while mounted (xfs)."""
    fs = filesystems.FILESYSTEMS[fstype]
    if fs.grow and fs.grow_online:
        runner.run([*fs.grow, mountpoint])


def _clone(
    image: Path, disk_file: Path, offset: int, length: int, size: int, flush: tuple[Path, ...]
) -> None:
    """Share ``image``'s blocks into ``disk_file`` at ``offset`` and free the rest of its
    ``size`` bytes there (Unusable when it cannot)."""
    with open(image, "rb") as src, open(disk_file, "r+b") as dst:
        if not stat.S_ISREG(os.fstat(dst.fileno()).st_mode):
            raise Unusable(f"{disk_file} is not a file")
        block = os.fstatvfs(dst.fileno()).f_bsize
        if offset % block or length % block:
            raise Unusable(
                f"the root partition is not aligned to the storage's {block}-byte blocks"
            )
        if os.fstat(src.fileno()).st_dev != os.fstat(dst.fileno()).st_dev:
            raise Unusable(f"{disk_file} and the cache are on different filesystems")
        # Whatever the disk's block devices still hold for this range must reach the file
        # now, not over the shared blocks later; what they read before must be dropped.
        for device in flush:
            runner.run(["blockdev", "--flushbufs", device])
        try:
            fcntl.ioctl(
                dst.fileno(), FICLONERANGE, struct.pack("qQQQ", src.fileno(), 0, length, offset)
            )
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
                raise Unusable(
                    f"the storage of {disk_file} cannot share blocks ({e.strerror})"
                ) from None
            raise
        _punch_hole(dst.fileno(), offset + length, size - length)
    for device in flush:
        runner.run(["blockdev", "--flushbufs", device])


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """Free ``length`` bytes of the file ``fd`` at ``offset`` (Unusable when it cannot)."""
    if length <= 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    if libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        error = ctypes.get_errno()
        raise Unusable(f"the storage cannot free the rest of the partition ({os.strerror(error)})")
