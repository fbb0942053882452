"""A guest's /etc/fstab: written after create, read, and its own disk's lines rewritten
after an import.

Pure text in, text out.  An entry's options and pass derive from the filesystem's
declaration (filesystems.FILESYSTEMS).  A rewrite leaves every line that is not about
the root filesystem, /boot, the EFI system partition (/efi) or the swap of the
instance's first disk exactly as it was.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Optional

from gentoobootstrap.disk.filesystems import FILESYSTEMS, SWAP_FILE
from gentoobootstrap.disk.layout import MOUNTPOINTS, Role, first_disk_partition

_BY = {"/dev/disk/by-uuid/": "UUID=", "/dev/disk/by-label/": "LABEL=",
       "/dev/disk/by-partuuid/": "PARTUUID="}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One fstab line, read or to be written: its fields as written."""

    source: str  # UUID=..., a device or a file
    mountpoint: str  # "none" for swap
    fstype: str
    options: str = "defaults"
    dump: str = "0"
    passno: str = "0"

    def line(self) -> str:
        fields = [self.source, self.mountpoint, self.fstype, self.options]
        return "\t".join([*fields, f"{self.dump} {self.passno}"])


def entry(uuid: str, mountpoint: str, fstype: str) -> Entry:
    """The usual entry: root checked first (pass 1), others after (2), when checked at all."""
    if fstype == "swap":
        return Entry(f"UUID={uuid}", "none", "swap", "sw")
    fs = FILESYSTEMS[fstype]
    passno = (1 if mountpoint == "/" else 2) if fs.checked_at_boot else 0
    return Entry(f"UUID={uuid}", mountpoint, fstype, fs.fstab_options, passno=str(passno))


def swap_file_entry() -> Entry:
    """The swap file's entry: by its path (a swap file has a UUID, but fstab names files)."""
    return Entry(SWAP_FILE, "none", "swap", "sw")


def render(entries: Sequence[Entry], original: str = "") -> str:
    """``original`` fstab (Gentoo ships comments only) without its entries, then ``entries``."""
    kept = [line for line in original.splitlines() if not line.strip() or line.lstrip()[0] == "#"]
    while kept and not kept[-1].strip():
        kept.pop()
    header = "# <fs>\t\t\t\t\t<mountpoint>\t<type>\t<opts>\t<dump> <pass>"
    lines = [*kept, "", "# Made by ganeti-instance-gentoobootstrap.", header]
    lines += [made.line() for made in entries]
    return "\n".join(lines).lstrip("\n") + "\n"


def parse_line(text: str) -> Optional[Entry]:
    """The entry on ``text``, or None for a comment, a blank or a malformed line."""
    fields = text.split("#", 1)[0].split() if not text.lstrip().startswith("#") else []
    if len(fields) < 3:
        return None
    return Entry(*fields[:6])


def lookup(text: str, mountpoint: str) -> Optional[Entry]:
    """The (last, as mount -a would leave it) entry for ``mountpoint``."""
    found = None
    for raw in text.splitlines():
        line = parse_line(raw)
        if line is not None and line.mountpoint.rstrip("/") == mountpoint.rstrip("/"):
            found = line
    return found


def normal_source(source: str) -> str:
    """``/dev/disk/by-uuid/X`` as ``UUID=X`` (and label, partuuid); quotes dropped."""
    source = source.replace('"', "")
    for prefix, tag in _BY.items():
        if source.startswith(prefix):
            return tag + source[len(prefix) :]
    return source


def _is_old_swap(line: Entry, old_sources: Collection[str]) -> bool:
    source = normal_source(line.source)
    if old_sources:
        return source in old_sources
    # Without the export's list: a swap by UUID, label or on the first disk was the old disk's.
    # Swap files and other disks' swap stay.
    return source.startswith(("UUID=", "LABEL=", "PARTUUID=")) or (
        first_disk_partition(source) is not None
    )


def rewrite(text: str, new: Mapping[Role, Entry], old_sources: Collection[str] = ()) -> str:
    """``text`` with the entries of root, /boot, the ESP and swap replaced by ``new`` (role ->
    entry).

    The line for ``/`` and ``/boot`` keeps its options when the filesystem type
    is unchanged; a role the new disk lacks loses its line (a /boot merged into
    root must not be mounted from a disk that is gone); a new role is appended.
    ``old_sources`` (``UUID=...``) name the old disk's swap; other swaps stay.
    """
    out: list[str] = []
    done: set[Role] = set()
    appended: tuple[Role, ...] = ("root", "boot", "esp", "swap")
    for raw in text.splitlines():
        line = parse_line(raw)
        role: Optional[Role] = None
        if line is not None:
            mounts = {path.rstrip("/"): role for role, path in MOUNTPOINTS.items()}
            if line.mountpoint.startswith("/") and line.mountpoint.rstrip("/") in mounts:
                role = mounts[line.mountpoint.rstrip("/")]
            elif line.fstype == "swap" and _is_old_swap(line, old_sources):
                role = "swap"
        if role is None or line is None:
            out.append(raw)
            continue
        made = new.get(role)
        if made is None or role in done:
            continue  # the new disk has no such filesystem (or its line is written already)
        done.add(role)
        if role != "swap" and line.fstype == made.fstype:
            out.append(replace(line, source=made.source).line())
        else:
            out.append(made.line())
    for missing in appended:
        if missing in new and missing not in done:
            out.append(new[missing].line())
    return "\n".join(out) + "\n"
