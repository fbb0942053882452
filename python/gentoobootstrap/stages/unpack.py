"""Unpack a stage tarball faithfully, exactly as the Gentoo Handbook asks.

GNU tar with ``--numeric-owner`` (Gentoo's uids and gids, e.g. portage 250,
are kept instead of being remapped through the node's passwd), ``-p``,
``--xattrs --xattrs-include='*.*'`` (file capabilities such as
``security.capability``) and ``--acls`` (Python's tarfile restores neither).
Every member is checked before anything is extracted, and one that would land
outside the target is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Union

from gentoobootstrap import runner
from gentoobootstrap.errors import CommandError, StageError, ToolNotFoundError
from gentoobootstrap.log import complete_step
from gentoobootstrap.stages import cache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Compression:
    magic: bytes  # the leading bytes that tell it
    #: Its decompressors by preference, the multithreaded ones first; each takes ``-d -c``.
    #: runner.PACKAGES names the package of the last, asked for when none is installed.
    decompressors: tuple[tuple[str, ...], ...]


#: Every compression a stage (or, refused, an import stream) may come in.
COMPRESSIONS = {
    "xz": Compression(b"\xfd7zXZ\x00", (("xz", "-T0"),)),
    "zstd": Compression(b"\x28\xb5\x2f\xfd", (("zstd", "-T0"),)),
    "bzip2": Compression(b"BZh", (("lbzip2",), ("pbzip2",), ("bzip2",))),
    "gzip": Compression(b"\x1f\x8b", (("pigz",), ("gzip",))),
}

#: GNU tar's options that keep everything the Handbook asks, when a tree is archived and when
#: it is extracted.  XFS shows root its internal copy of ACLs as ``trusted.SGI_ACL_*``: that
#: copy is never carried (``--acls`` carries the ACLs themselves), or it would land as stray
#: xattrs on another filesystem.
TAR_FAITHFUL = (
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*.*",
    "--xattrs-exclude=trusted.SGI_ACL_*",
    "--acls",
)
TAR_EXTRACT_OPTIONS = ("--same-owner", "--preserve-permissions", *TAR_FAITHFUL)


def compression_of(head: bytes) -> str:
    """The compression whose magic ``head`` starts with, or "none"."""
    for kind, known in COMPRESSIONS.items():
        if head.startswith(known.magic):
            return kind
    return "none"


def compression(stage: Path) -> str:
    """The compression of ``stage`` from its first bytes: xz, zstd, bzip2, gzip or none."""
    with open(stage, "rb") as f:
        return compression_of(f.read(8))


def decompressor(kind: str) -> Optional[list[str]]:
    """The command that decompresses ``kind`` to stdout (None for an uncompressed tar)."""
    if kind == "none":
        return None
    known = COMPRESSIONS[kind]
    for argv in known.decompressors:
        if runner.have_tool(argv[0]):
            return [runner.find_tool(argv[0]), *argv[1:]]
    last = known.decompressors[-1][0]
    raise ToolNotFoundError(last, runner.PACKAGES.get(last))


def unpacked_size(stage: Path, cache_dir: Optional[Path] = None) -> Optional[int]:
    """Bytes the tar inside ``stage`` holds, when the format tells without decompressing.

    A file of ``cache_dir`` has them recorded from when it was stored: reading them
    spares walking every frame of a large stage on each create.
    """
    if cache_dir is not None and (recorded := cache.recorded_unpacked_size(stage, cache_dir)):
        return recorded
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


def stream_size(stage: Path) -> int:
    """Bytes the tar inside ``stage`` holds: as its format tells, else counted by
    decompressing it (bzip2, gzip, a zstd frame that does not record them)."""
    size = unpacked_size(stage)
    if size is not None:
        return size
    command = decompressor(compression(stage))
    assert command is not None  # unpacked_size knows an uncompressed tar's
    total = 0
    with runner.reading_from([*command, "-d", "-c", stage]) as read_end:
        while chunk := os.read(read_end, 1 << 20):
            total += len(chunk)
    return total


def fast_form(tarball: Path, size: int) -> Path:
    """``tarball`` recompressed with zstd beside it (the same tar stream), if zstd is here.

    The tar stream (so everything unpacked) stays byte for byte the verified one, but it
    decompresses many times faster than xz, and unpacking dominates create.  ``size``, its
    :func:`stream_size`, is recorded in the zstd frame (and zstd fails if the stream is not
    that long).
    """
    kind = compression(tarball)
    if kind in ("zstd", "none") or not runner.have_tool("zstd"):
        return tarball
    decompress = decompressor(kind)
    assert decompress is not None
    stem = tarball.name if tarball.suffix == ".tar" else tarball.name.removesuffix(tarball.suffix)
    fast = tarball.with_name(stem + ".zst")
    compress = ["zstd", "-q", "-T0", "-c", f"--stream-size={size}"]
    with complete_step(f"Recompressing {tarball.name} for fast unpacking"), open(fast, "wb") as out:
        with runner.reading_from([*decompress, "-d", "-c", tarball]) as tar_stream:
            runner.run(compress, stdin=tar_stream, stdout=out)
        out.flush()
        os.fsync(out.fileno())
    tarball.unlink()
    return fast


def _tar(stage: Path, *options: str) -> list[Union[str, Path]]:
    argv: list[Union[str, Path]] = ["tar", *options, f"--file={stage}"]
    command = decompressor(compression(stage))
    if command is not None:
        argv.append(f"--use-compress-program={' '.join(command)}")
    return argv


def _escapes(name: str) -> bool:
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts


def refuse_escaping_members(stage: Path) -> int:
    """Refuse a stage with a member (or hard-link target) that would escape the target.

    GNU tar lists the archive first (fast, no extraction).  It reports every
    name and hard-link target it would have to defuse ("Removing leading `../'
    from member names"); any such report, or an absolute or ``..`` name in the
    listing, refuses the stage.  Absolute symlink targets are fine: they point
    inside the guest once it runs, and tar never follows them while extracting.
    Returns the number of members.
    """
    try:
        result = runner.run(_tar(stage, "--list"))
    except CommandError as e:
        raise StageError(f"{stage} is not a readable tar archive: {e}") from None
    defused = [line for line in str(result.stderr).splitlines() if "Removing leading" in line]
    if defused:
        raise StageError(f"{stage}: refusing members outside the target ({defused[0]})")
    names = str(result.stdout).splitlines()
    for name in names:
        if _escapes(name):
            raise StageError(f"{stage}: refusing member {name!r} outside the target")
    if not names:
        raise StageError(f"{stage} is an empty archive")
    return len(names)


def extract(stage: Path, target: Path) -> None:
    """Extract ``stage`` into ``target`` (where the guest's filesystems are mounted)."""
    runner.run([*_tar(stage, "--extract", f"--directory={target}"), *TAR_EXTRACT_OPTIONS])
