"""Unpack a stage tarball faithfully, exactly as the Gentoo Handbook asks.

GNU tar with ``--numeric-owner`` (Gentoo's uids and gids, e.g. portage 250,
are kept instead of being remapped through the node's passwd), ``-p``,
``--xattrs --xattrs-include='*.*'`` (file capabilities such as
``security.capability``) and ``--acls``.  Python's tarfile restores neither
xattrs nor ACLs, so it only lists: every member is checked before anything is
extracted, and one that would land outside the target is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Optional, Union

from gentoobootstrap import runner
from gentoobootstrap.errors import StageError, ToolNotFoundError

log = logging.getLogger(__name__)

#: Leading bytes -> compression.
_MAGIC = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\x1f\x8b", "gzip"),
)
#: Decompressors by preference: the multithreaded ones first when installed.
_DECOMPRESSORS = {
    "xz": (["xz", "-T0"],),
    "zstd": (["zstd", "-T0"],),
    "bzip2": (["lbzip2"], ["pbzip2"], ["bzip2"]),
    "gzip": (["pigz"], ["gzip"]),
}
#: Where each decompressor comes from when none is installed.
_PACKAGES = {"xz": "xz-utils", "zstd": "zstd", "bzip2": "bzip2", "gzip": "gzip"}

TAR_EXTRACT_OPTIONS = (
    "--numeric-owner",
    "--same-owner",
    "--preserve-permissions",
    "--xattrs",
    "--xattrs-include=*.*",
    "--acls",
)


def compression(stage: Path) -> str:
    """The compression of ``stage`` from its first bytes: xz, zstd, bzip2, gzip or none."""
    with open(stage, "rb") as f:
        head = f.read(8)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "none"


def decompressor(kind: str) -> Optional[list[str]]:
    """The command that decompresses ``kind`` to stdout (None for an uncompressed tar)."""
    if kind == "none":
        return None
    for argv in _DECOMPRESSORS[kind]:
        if runner.have_tool(argv[0]):
            return [runner.find_tool(argv[0]), *argv[1:]]
    raise ToolNotFoundError(_DECOMPRESSORS[kind][-1][0], _PACKAGES[kind])


def unpacked_size(stage: Path) -> Optional[int]:
    """Bytes the tar inside ``stage`` holds, when the format tells without decompressing."""
    kind = compression(stage)
    if kind == "none":
        return stage.stat().st_size
    with contextlib.suppress(Exception):
        if kind == "xz":
            for line in runner.output(["xz", "--robot", "--list", stage]).splitlines():
                fields = line.split("\t")
                if fields[0] == "totals":
                    return int(fields[4])
        if kind == "zstd":
            text = runner.output(["zstd", "--list", "-v", stage])
            match = re.search(r"Decompressed Size:.*\((\d+) B\)", text)
            if match:
                return int(match.group(1))
    return None


@contextlib.contextmanager
def _decompressed(stage: Path) -> Iterator[IO[bytes]]:
    """The tar stream of ``stage``, read from a decompressor child (or the file itself)."""
    command = decompressor(compression(stage))
    if command is None:
        with open(stage, "rb") as f:
            yield f
        return
    read_fd, write_fd = os.pipe()
    with open(stage, "rb") as source:
        try:
            with runner.spawn([*command, "-dc"], stdin=source, stdout=write_fd):
                os.close(write_fd)
                write_fd = -1
                with open(read_fd, "rb", buffering=1 << 20) as stream:
                    read_fd = -1
                    yield stream
                    while stream.read(1 << 20):  # drain the padding so the child ends by itself
                        pass
        finally:
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)


def _escapes(name: str) -> bool:
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts


def check_members(stage: Path) -> int:
    """Refuse a stage with a member (or hard-link target) that would escape the target.

    Returns the number of members.  Absolute symlink targets are fine: they point
    inside the guest once it runs, and tar never follows them while extracting.
    """
    count = 0
    try:
        with _decompressed(stage) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                count += 1
                if _escapes(member.name):
                    raise StageError(f"{stage}: refusing member {member.name!r} outside the target")
                if member.islnk() and _escapes(member.linkname):
                    raise StageError(
                        f"{stage}: refusing hard link {member.name!r} to {member.linkname!r} "
                        "outside the target"
                    )
    except tarfile.TarError as e:
        raise StageError(f"{stage} is not a readable tar archive: {e}") from None
    if count == 0:
        raise StageError(f"{stage} is an empty archive")
    return count


def extract(stage: Path, target: Path) -> None:
    """Extract ``stage`` into ``target`` (where the guest's filesystems are mounted)."""
    argv: list[Union[str, Path]] = ["tar", "--extract", f"--file={stage}", f"--directory={target}"]
    command = decompressor(compression(stage))
    if command is not None:
        argv.append(f"--use-compress-program={' '.join(command)}")
    runner.run([*argv, *TAR_EXTRACT_OPTIONS])
