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
import re
from pathlib import Path, PurePosixPath
from typing import Optional, Union

from gentoobootstrap import runner
from gentoobootstrap.errors import CommandError, StageError, ToolNotFoundError

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


def _tar(stage: Path, *options: str) -> list[Union[str, Path]]:
    argv: list[Union[str, Path]] = ["tar", *options, f"--file={stage}"]
    command = decompressor(compression(stage))
    if command is not None:
        argv.append(f"--use-compress-program={' '.join(command)}")
    return argv


def _escapes(name: str) -> bool:
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts


def check_members(stage: Path) -> int:
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
