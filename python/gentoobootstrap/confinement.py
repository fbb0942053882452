"""A child that reads untrusted input, confined to the one tree it may write.

An import's stream comes from whoever controlled the exported disk, and its extractor
runs as root: restore(8) is not hardened against a crafted dump (a bad name makes it
walk ``..`` or crash).  Between fork and exec, :func:`enter` gives such a child

- a mount namespace of its own, private, so nothing it mounts reaches the node's;
- a new root: a read-only tmpfs holding the node's program directories (read-only,
  no set-id, no devices), the tree it writes bind-mounted at :data:`WORK` with its
  submounts, and a scratch ``/tmp``; it starts in :data:`WORK`;
- optionally, only the capabilities the job needs: none to mount, chroot or load
  anything, and no new privileges on exec.

Whatever names or symlinks the input carries, every path the child opens then
resolves inside that root: the node's files are not there, and its programs cannot be
written.  The mounts live only in the child's namespace and go with it.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

#: Loaded once here: loading a library in a child between fork and exec is not safe.
LIBC = ctypes.CDLL(None, use_errno=True)

#: unshare(2) flag for a new mount namespace.
CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

#: Where the writable tree is in the child's root, and its working directory.
WORK = "/work"
#: Where the caller's scratch directory is in the child's root.
SCRATCH = "/tmp"
#: The node's directories a tool and its libraries come from (those that exist; a symlink
#: among them, as on a merged-/usr node, is copied as a symlink).
PROGRAMS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: Files of the node the child sees, with the flags of their mounts: the dynamic linker's
#: cache (libraries outside its built-in directories) and the null device (restore opens
#: it).  Nowhere else in the child's root can a device be opened: every other mount is
#: nodev.
FILES = {
    "etc/ld.so.cache": MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
    "dev/null": MS_NOSUID | MS_NOEXEC,
}

#: The top directories of the child's root that are the jail's own, never the node's.
_OWN = {WORK.strip("/"), SCRATCH.strip("/"), *(name.split("/")[0] for name in FILES)}

#: What restoring files faithfully needs (capabilities(7) numbers): owners, modes and
#: times of files that are not root's, set-id bits, device nodes, file capabilities and
#: the immutable and append-only flags.  Not CAP_DAC_READ_SEARCH: with it,
#: open_by_handle_at(2) opens any file of a filesystem the child can see a mount of (the
#: node's, under /usr or /tmp), chroot or not.
CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID = 0, 1, 3, 4
CAP_LINUX_IMMUTABLE, CAP_MKNOD, CAP_SETFCAP = 9, 27, 31
RESTORING = frozenset(
    (CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_LINUX_IMMUTABLE, CAP_MKNOD,
     CAP_SETFCAP)
)  # fmt: skip


@dataclass(frozen=True)
class Jail:
    """The child's root is mounted on ``root`` (an empty directory of the caller's),
    ``work`` is bind-mounted at :data:`WORK`, ``scratch`` at :data:`SCRATCH`; ``keep``, when
    given, is every capability the child keeps."""

    root: Path
    work: Path
    scratch: Path
    keep: Optional[frozenset[int]] = None

    @classmethod
    def below(cls, directory: Path, work: Path, keep: Optional[frozenset[int]] = None) -> Jail:
        """A jail whose root and scratch are new directories in ``directory`` (the
        caller's own, removed by the caller)."""
        root, scratch = directory / "root", directory / "tmp"
        root.mkdir(mode=0o755)
        scratch.mkdir(mode=0o700)
        return cls(root, work, scratch, keep)


class ConfinementError(OSError):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise ConfinementError(errno, f"{what}: {os.strerror(errno)}")


def _encoded(value: Optional[str]) -> Optional[bytes]:
    return None if value is None else value.encode()


def _mount(
    source: Optional[str],
    target: str,
    fstype: Optional[str],
    flags: int,
    data: Optional[str] = None,
) -> None:
    result = LIBC.mount(
        _encoded(source), target.encode(), _encoded(fstype), ctypes.c_ulong(flags), _encoded(data)
    )
    _check(result, f"mount {source or ''} on {target}")


def _bind(source: str, target: str, flags: int) -> None:
    """``source`` at ``target``, then made ``flags`` (a bind's own flags need a remount)."""
    _mount(source, target, None, MS_BIND | (flags & MS_REC))
    _mount(None, target, None, MS_REMOUNT | MS_BIND | (flags & ~MS_REC))


def last_capability() -> int:
    """The highest capability number this kernel knows (read before forking)."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def programs(tool: str) -> list[str]:
    """The top directories of the node the child needs: :data:`PROGRAMS`, and the tool's,
    where it is and where its links lead (a store such as /nix or /gnu holds the tool and
    its libraries both)."""
    tops = {Path(tool).parts[1], Path(os.path.realpath(tool)).parts[1]}
    return [*PROGRAMS, *sorted(tops - set(PROGRAMS) - _OWN)]


def enter(jail: Jail, tops: list[str], last_cap: int) -> None:
    """In the child, between fork and exec: confine it to ``jail`` (see the module).

    Raises :class:`ConfinementError`; runs nothing and allocates little, as is proper
    between fork and exec.
    """
    _check(LIBC.unshare(CLONE_NEWNS), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # before anything: nothing propagates back
    root = os.fspath(jail.root)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=1m")
    for top in tops:
        node, inside = "/" + top, f"{root}/{top}"
        if os.path.islink(node):
            os.symlink(os.readlink(node), inside)
        elif os.path.isdir(node):
            os.mkdir(inside)
            _bind(node, inside, MS_RDONLY | MS_NOSUID | MS_NODEV)
    for name, flags in FILES.items():
        if os.path.exists("/" + name):
            os.makedirs(os.path.dirname(f"{root}/{name}"), exist_ok=True)
            open(f"{root}/{name}", "x").close()
            _bind("/" + name, f"{root}/{name}", flags)
    os.mkdir(root + WORK)
    _mount(os.fspath(jail.work), root + WORK, None, MS_BIND | MS_REC)
    os.mkdir(root + SCRATCH)
    _bind(os.fspath(jail.scratch), root + SCRATCH, MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(root)
    os.chroot(".")
    os.chdir(WORK)
    if jail.keep is not None:
        for cap in range(last_cap + 1):
            if cap not in jail.keep:
                _check(LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
        _clear_inheritable()
        _check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]


def _clear_inheritable() -> None:
    """No capability outside the bounding set survives exec: root's execve gives the
    bounding set, plus the inheritable and ambient sets, which are emptied here."""
    _check(LIBC.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient")
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(LIBC.capget(ctypes.byref(header), data), "capget")
    for half in data:
        half.inheritable = 0
    _check(LIBC.capset(ctypes.byref(header), data), "capset")
