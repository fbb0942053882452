"""Files of the guest, reached from the node as the guest would reach them.

A guest's tree is not the node's: an instance's disk belongs to its owner, and
a stage holds whatever its builder put in it.  Its symlinks (``/etc/localtime``
and ``/sbin/init`` in any stage, ``/etc/fstab -> /etc/shadow`` in a hostile
one) name the *node's* files when followed from the node.  :class:`GuestRoot`
is the one way this project touches a guest tree: every path is resolved as
if chrooted into the guest (absolute links restart at the guest's root, ``..``
never climbs above it), and each operation then works on the file descriptor
that resolution gave, never on a path string joined onto the root.

Resolution is the kernel's ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)``
(Linux 5.6).  Where that is missing or forbidden (``ENOSYS``; ``EPERM`` from a
seccomp filter) the same is done one component at a time with ``O_NOFOLLOW``
opens, reading each symlink and going on from the guest's root or from the
directory it is in, as systemd's ``chase()`` does.

Writes replace: a file is written under a temporary name and renamed over the
old one, so a symlink there is replaced, never written through; links are made
the same way.  Directories are made one component at a time below a resolved
parent; a dangling symlink where a directory is needed is an error (as it is
for ``mkdir -p``), not a directory made wherever the link points.  A file is
read only when it is a regular file, and only up to :data:`MAX_TEXT`: no FIFO
blocks a script, no device node is opened, no huge file fills the node's memory.

Mounting and unpacking need a path, not a descriptor: :meth:`GuestRoot.directory`
(and :meth:`GuestRoot.mkdir`) give the node's name of a directory they resolved,
read back from the kernel (``/proc/self/fd``) and checked to lie under the
guest's root.  That name holds no symlink, and nothing else changes a guest
tree while a script works on it (the instance is down; hooks, trusted, run last).

No other module does a raw path operation on a guest tree.  Ruff's
``banned-api`` bans ``shutil.copytree`` (use :meth:`GuestRoot.copy_in`), but it
cannot express the rest: the operations are methods of ordinary ``Path``
objects, and only the names a path is reached by tell a guest's from the
node's.  So ``tests/unit/test_guest_tree_ban.py`` reads every module of the
library and refuses a path joined onto a guest root (``target / "etc"``,
``os.path.join(target, ...)``, ``f"{target}/etc"``) and any filesystem call on
what :meth:`GuestRoot.path` returns.  It is a tripwire that knows the names the
code gives guest roots (``target``, ``top``), not a proof; each reviewed
exception is listed in it with its reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import fnmatch
import os
import platform
import secrets
import stat
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Optional

from gentoobootstrap.errors import GuestError

#: Symlinks followed in one resolution, as the kernel's ELOOP limit.
MAX_LINKS = 40
#: A guest file read as text may be this big: configuration files are far smaller.
MAX_TEXT = 16 << 20
#: Directory levels a tree copy or removal goes down.
MAX_DEPTH = 128

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
#: openat2's number: the same on every architecture since Linux 5.1's common table,
#: except those that offset theirs (there the walk is used).
SYS_OPENAT2 = None if platform.machine().startswith(("alpha", "ia64", "mips")) else 437

#: The inode flags ioctls (an int, whatever their declared type) and the NOCOW flag.
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_NOCOW_FL = 0x00800000

_PATH = os.O_PATH | os.O_CLOEXEC
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2); an OSError as ``os.open`` raises (ENOSYS where the kernel lacks it)."""
    if SYS_OPENAT2 is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS), path)
    how = _OpenHow(flags, 0, resolve)
    fd = _libc.syscall(
        ctypes.c_long(SYS_OPENAT2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


#: Whether openat2 works here: None until first tried.
_openat2_works: Optional[bool] = None


def _in_root(rootfd: int, path: str, follow: bool) -> Optional[int]:
    """An O_PATH descriptor of ``path`` by openat2, or None where openat2 cannot be used."""
    global _openat2_works
    if _openat2_works is False:
        return None
    flags = _PATH if follow else _PATH | os.O_NOFOLLOW
    for _ in range(8):
        try:
            fd = _openat2(rootfd, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.EPERM) and not _openat2_works:
                _openat2_works = False
                return None
            if e.errno == errno.EAGAIN:  # a rename raced a "..": the kernel asks to retry
                continue
            raise
        _openat2_works = True
        return fd
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def _walk(rootfd: int, path: str, follow: bool) -> int:
    """An O_PATH descriptor of ``path``, one ``O_NOFOLLOW`` component at a time."""
    todo = [p for p in reversed(path.split("/")) if p not in ("", ".")]
    below: list[int] = []  # the directories entered below the root, innermost last
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == "..":
                if below:  # at the root, ".." is the root
                    os.close(below.pop())
                continue
            here = below[-1] if below else rootfd
            fd = os.open(name, _PATH | os.O_NOFOLLOW, dir_fd=here)
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode) and (todo or follow):
                os.close(fd)
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                link = os.readlink(name, dir_fd=here)
                if link.startswith("/"):
                    while below:
                        os.close(below.pop())
                todo += [p for p in reversed(link.split("/")) if p not in ("", ".")]
                continue
            below.append(fd)
            if todo and not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        return below.pop() if below else os.dup(rootfd)
    finally:
        for fd in below:
            os.close(fd)


def _resolve(rootfd: int, path: str, follow: bool = True) -> int:
    """An O_PATH descriptor of guest ``path`` below ``rootfd``; ``follow`` for the last part."""
    path = path or "/"
    fd = _in_root(rootfd, path, follow)
    return _walk(rootfd, path, follow) if fd is None else fd


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _reopen(fd: int, flags: int) -> int:
    """Open what O_PATH descriptor ``fd`` names, for reading (our own /proc link, no lookup)."""
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC | os.O_NOCTTY)


def _split(path: str) -> tuple[str, str]:
    """``/etc/fstab`` -> (``/etc``, ``fstab``)."""
    guest = PurePosixPath("/", path)
    return str(guest.parent), guest.name


def _temporary(name: str) -> str:
    return f".{name}.{secrets.token_hex(4)}"


class GuestRoot:
    """The guest's root directory ``top``; every method takes a guest path (``/etc/hosts``).

    No descriptor is kept between calls: an open one would keep the guest's
    filesystem busy and its unmount would fail.
    """

    def __init__(self, top: Path) -> None:
        self.top = Path(top)
        # The node's name of ``top`` (ours, not the guest's): what every resolved path is
        # checked to lie in.
        self._real_top = os.path.realpath(self.top)

    def __repr__(self) -> str:
        return f"GuestRoot({str(self.top)!r})"

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _root(self, what: str, path: str) -> Iterator[int]:
        """The root's descriptor for one operation; an OSError becomes a GuestError."""
        try:
            with _closing(os.open(self.top, _PATH | os.O_DIRECTORY)) as rootfd:
                yield rootfd
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise GuestError(
                    f"{path}: too many levels of symbolic links in the guest"
                ) from None
            raise GuestError(f"cannot {what} {path} in the guest: {e.strerror}") from None

    def _node_name(self, fd: int, path: str) -> Path:
        """The node's name of what ``fd`` (resolved from guest ``path``) is, checked inside."""
        name = os.readlink(f"/proc/self/fd/{fd}")
        top = self._real_top
        if name != top and not name.startswith(top.rstrip("/") + "/"):
            raise GuestError(f"{path} in the guest resolves to {name}, outside {top}")
        return Path(name)

    def _guest_name(self, fd: int, path: str) -> str:
        relative = self._node_name(fd, path).relative_to(self._real_top)
        return str(PurePosixPath("/", relative))

    def _makedirs(self, rootfd: int, path: str, mode: int) -> int:
        """A descriptor of directory ``path``, made (with its parents) where missing."""
        try:
            fd = _resolve(rootfd, path)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
            raise GuestError(f"the guest's {path} is not a directory")
        parent, name = _split(path)
        if name in ("", ".."):
            raise GuestError(f"cannot make directory {path} in the guest")
        with _closing(self._makedirs(rootfd, parent, 0o755)) as parentfd:
            try:
                os.mkdir(name, mode, dir_fd=parentfd)
            except FileExistsError:  # there, yet not found: a symlink to nothing
                raise self._in_the_way(parentfd, name, path) from None
            fd = os.open(name, _DIRECTORY, dir_fd=parentfd)
            os.fchmod(fd, mode)  # not filtered by the umask
            return fd

    @staticmethod
    def _in_the_way(parentfd: int, name: str, path: str) -> GuestError:
        try:
            link = os.readlink(name, dir_fd=parentfd)
        except OSError:
            return GuestError(f"cannot make directory {path} in the guest: something is in the way")
        return GuestError(
            f"the guest's {path} is a symbolic link to {link}, which does not exist in the guest"
        )

    @staticmethod
    def _write_at(
        dirfd: int,
        name: str,
        data: bytes,
        mode: Optional[int],
        times: Optional[tuple[int, int]] = None,
    ) -> None:
        """Write ``name`` in ``dirfd`` under a temporary name, then rename it over the old one."""
        try:
            old: Optional[os.stat_result] = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        keep = old if old is not None and stat.S_ISREG(old.st_mode) else None
        tmp = _temporary(name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dirfd)
        try:
            with _closing(fd):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if keep is not None:
                    os.fchown(fd, keep.st_uid, keep.st_gid)
                if mode is None:
                    mode = stat.S_IMODE(keep.st_mode) if keep is not None else 0o644
                os.fchmod(fd, mode)
                if times is not None:
                    os.utime(fd, ns=times)
            os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dirfd)
            raise

    @staticmethod
    def _symlink_at(dirfd: int, name: str, destination: str) -> None:
        with contextlib.suppress(OSError):
            if os.readlink(name, dir_fd=dirfd) == destination:
                return
        tmp = _temporary(name)
        os.symlink(destination, tmp, dir_fd=dirfd)
        try:
            os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dirfd)
            raise

    # -- looking ----------------------------------------------------------------------------

    def path(self, path: str, follow: bool = True) -> Path:
        """The node's name of guest ``path``, resolved inside the guest.

        For a message, or for a tool that must be given a path; never to read
        or write through (the other methods do that).  A missing path is named
        below its resolved parent; with ``follow`` false the last part is not
        followed.
        """
        with self._root("resolve", path) as rootfd:
            return self._path(rootfd, path, follow)

    def _path(self, rootfd: int, path: str, follow: bool) -> Path:
        try:
            with _closing(_resolve(rootfd, path, follow)) as fd:
                return self._node_name(fd, path)
        except FileNotFoundError:
            parent, name = _split(path)
            if not name:
                raise
            return self._path(rootfd, parent, True) / name

    @contextlib.contextmanager
    def _found(
        self, what: str, path: str, resolve: Optional[str] = None, follow: bool = True
    ) -> Iterator[Optional[int]]:
        """A descriptor of ``resolve`` (default ``path``, which errors name), or None when
        it does not exist."""
        with self._root(what, path) as rootfd:
            try:
                fd: Optional[int] = _resolve(rootfd, path if resolve is None else resolve, follow)
            except (FileNotFoundError, NotADirectoryError):
                fd = None
            if fd is None:
                yield None
            else:
                with _closing(fd):
                    yield fd

    def realpath(self, path: str) -> Optional[str]:
        """Guest ``path`` with every symlink resolved inside the guest; None when missing."""
        with self._found("resolve", path) as fd:
            return None if fd is None else self._guest_name(fd, path)

    def stat(self, path: str, follow: bool = True) -> Optional[os.stat_result]:
        """``path``'s status, or None when it does not exist."""
        with self._found("look at", path, follow=follow) as fd:
            return None if fd is None else os.fstat(fd)

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def is_file(self, path: str) -> bool:
        found = self.stat(path)
        return found is not None and stat.S_ISREG(found.st_mode)

    def is_dir(self, path: str, follow: bool = True) -> bool:
        found = self.stat(path, follow)
        return found is not None and stat.S_ISDIR(found.st_mode)

    def read_text(self, path: str) -> Optional[str]:
        """The file's text, or None when it does not exist; anything but a file is an error."""
        data = self.read_bytes(path)
        return None if data is None else data.decode(errors="surrogateescape")

    def read_bytes(self, path: str) -> Optional[bytes]:
        """The file's bytes, or None when it does not exist; anything but a regular file of
        at most :data:`MAX_TEXT` bytes is an error."""
        with self._found("read", path) as fd:
            if fd is None:
                return None
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode):
                raise GuestError(f"the guest's {path} is not a regular file")
            if found.st_size > MAX_TEXT:
                raise GuestError(f"the guest's {path} is too big ({found.st_size} bytes)")
            with open(_reopen(fd, os.O_RDONLY), "rb") as f:
                data = f.read(MAX_TEXT + 1)
        if len(data) > MAX_TEXT:
            raise GuestError(f"the guest's {path} is too big (more than {MAX_TEXT} bytes)")
        return data

    def listdir(self, path: str) -> list[str]:
        """The names in directory ``path``, sorted (none when it does not exist)."""
        with self._found("list", path) as fd:
            if fd is None or not stat.S_ISDIR(os.fstat(fd).st_mode):
                return []
            with _closing(os.open(".", _DIRECTORY, dir_fd=fd)) as dirfd:
                return sorted(os.listdir(dirfd))

    def glob(self, directory: str, pattern: str) -> list[str]:
        """Guest paths of the entries of ``directory`` matching ``pattern``, sorted."""
        base = PurePosixPath("/", directory)
        return [str(base / n) for n in self.listdir(directory) if fnmatch.fnmatchcase(n, pattern)]

    def directory(self, path: str) -> Path:
        """The node's name of existing directory ``path``: to mount on, or to unpack into."""
        with self._root("find directory", path) as rootfd, _closing(_resolve(rootfd, path)) as fd:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise GuestError(f"the guest's {path} is not a directory")
            return self._node_name(fd, path)

    # -- changing ---------------------------------------------------------------------------

    def mkdir(self, path: str, mode: int = 0o755) -> Path:
        """Make directory ``path`` and its parents; the node's name of it, as :meth:`directory`.

        ``mode`` applies to ``path`` when it is made (parents get 0755).
        """
        with (
            self._root("make directory", path) as rootfd,
            _closing(self._makedirs(rootfd, path, mode)) as fd,
        ):
            return self._node_name(fd, path)

    def mkdtemp(self, directory: str, prefix: str) -> str:
        """A new, empty, private directory in ``directory`` (made if missing); its guest path."""
        with (
            self._root("make a directory in", directory) as rootfd,
            _closing(self._makedirs(rootfd, directory, 0o755)) as parentfd,
        ):
            while True:
                name = prefix + secrets.token_hex(4)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=parentfd)
                    return str(PurePosixPath(self._guest_name(parentfd, directory), name))

    def write_text(self, path: str, text: str, mode: Optional[int] = None) -> None:
        """Write ``path`` atomically, replacing a symlink; an existing file keeps mode and owner.

        ``mode`` (default 0644) applies to new files, or always when given.
        """
        self.write_bytes(path, text.encode(errors="surrogateescape"), mode)

    def write_bytes(self, path: str, data: bytes, mode: Optional[int] = None) -> None:
        """As :meth:`write_text`, for bytes."""
        parent, name = _split(path)
        with (
            self._root("write", path) as rootfd,
            _closing(self._makedirs(rootfd, parent, 0o755)) as parentfd,
        ):
            self._write_at(parentfd, name, data, mode)

    def symlink(self, path: str, destination: str) -> None:
        """Make ``path`` a symlink to ``destination`` (a guest path), replacing what is there."""
        parent, name = _split(path)
        with (
            self._root("make link", path) as rootfd,
            _closing(self._makedirs(rootfd, parent, 0o755)) as parentfd,
        ):
            self._symlink_at(parentfd, name, destination)

    def unlink(self, path: str) -> bool:
        """Remove file or link ``path``; True when something was removed."""
        parent, name = _split(path)
        with self._found("remove", path, resolve=parent) as parentfd:
            if parentfd is None:
                return False
            try:
                os.unlink(name, dir_fd=parentfd)
            except FileNotFoundError:
                return False
        return True

    def rmdir(self, path: str) -> None:
        """Remove empty directory ``path`` (a symlink there is not followed)."""
        parent, name = _split(path)
        with (
            self._root("remove directory", path) as rootfd,
            _closing(_resolve(rootfd, parent)) as parentfd,
        ):
            os.rmdir(name, dir_fd=parentfd)

    def rmtree(self, path: str) -> bool:
        """Remove ``path`` and everything below it, on its own filesystem, following no link.

        A symlink at ``path`` is removed itself.  True when something was removed.
        """
        parent, name = _split(path)
        with self._found("remove", path, resolve=parent) as parentfd:
            if parentfd is None:
                return False
            try:
                found = os.stat(name, dir_fd=parentfd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if stat.S_ISDIR(found.st_mode):
                self._rmtree_at(parentfd, name, path, found.st_dev, 0)
            else:
                os.unlink(name, dir_fd=parentfd)
        return True

    def _rmtree_at(self, parentfd: int, name: str, path: str, device: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise GuestError(f"cannot remove {path} in the guest: nested too deeply")
        with _closing(os.open(name, _DIRECTORY, dir_fd=parentfd)) as fd:
            if os.fstat(fd).st_dev != device:
                raise GuestError(
                    f"cannot remove {path} in the guest: a filesystem is mounted there"
                )
            with os.scandir(fd) as entries:
                found = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
            for entry, is_dir in found:
                if is_dir:
                    self._rmtree_at(fd, entry, f"{path}/{entry}", device, depth + 1)
                else:
                    os.unlink(entry, dir_fd=fd)
        os.rmdir(name, dir_fd=parentfd)

    def rename(self, source: str, destination: str) -> None:
        """Rename guest ``source`` to ``destination`` (neither's last part is followed)."""
        (source_parent, source_name), (parent, name) = _split(source), _split(destination)
        with (
            self._root("rename", source) as rootfd,
            _closing(_resolve(rootfd, source_parent)) as fromfd,
            _closing(_resolve(rootfd, parent)) as tofd,
        ):
            os.rename(source_name, name, src_dir_fd=fromfd, dst_dir_fd=tofd)

    def set_times(self, path: str, ns: tuple[int, int]) -> None:
        """Set ``path``'s access and modification times (nanoseconds), as ``os.utime``."""
        with self._root("set the times of", path) as rootfd, _closing(_resolve(rootfd, path)) as fd:
            os.utime(f"/proc/self/fd/{fd}", ns=ns)

    @contextlib.contextmanager
    def allocate(self, path: str, size: int, nocow: bool = False) -> Iterator[Path]:
        """A new file ``path`` of ``size`` bytes, mode 0600, every block allocated (no holes);
        yields a name of its open descriptor (``/proc/PID/fd/N``) for a tool to work on.

        ``nocow`` sets the NOCOW flag (``chattr +C``) while the file is still empty, which
        btrfs needs of a swap file.  Something already at ``path`` is an error; on an error
        the new file is removed.
        """
        parent, name = _split(path)
        with (
            self._root("allocate", path) as rootfd,
            _closing(self._makedirs(rootfd, parent, 0o755)) as parentfd,
        ):
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, 0o600, dir_fd=parentfd)
            try:
                with _closing(fd):
                    os.fchmod(fd, 0o600)  # not filtered by the umask
                    if nocow:
                        flag = bytearray(4)
                        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flag)
                        value = int.from_bytes(flag, sys.byteorder) | FS_NOCOW_FL
                        fcntl.ioctl(fd, FS_IOC_SETFLAGS, value.to_bytes(4, sys.byteorder))
                    os.posix_fallocate(fd, 0, size)
                    yield Path(f"/proc/{os.getpid()}/fd/{fd}")
                    os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=parentfd)
                raise

    def copy_in(self, source: Path, path: str) -> None:
        """Copy the node's directory ``source`` over guest directory ``path``, merging.

        ``source`` is the admin's and trusted; the guest is not.  A directory of
        ``source`` goes where the guest's path resolves inside the guest (made
        where missing); a guest symlink there that leads to no directory in the
        guest is replaced by a directory.  A file or link of ``source`` replaces
        what the guest has at its place, never writing through a guest symlink.
        Files keep their mode and times; links are copied as links.
        """
        with self._root("copy into", path) as rootfd:
            self._copy_dir(rootfd, source, path, os.stat(source).st_mode, 0)

    def _copy_dir(self, rootfd: int, source: Path, path: str, mode: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise GuestError(f"cannot copy {source} into the guest: nested too deeply")
        self._unlink_stray_link(rootfd, path)
        with _closing(self._makedirs(rootfd, path, stat.S_IMODE(mode))) as dirfd:
            for entry in sorted(os.scandir(source), key=lambda e: e.name):
                found = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(found.st_mode):
                    where = str(PurePosixPath(path, entry.name))
                    self._copy_dir(rootfd, Path(entry.path), where, found.st_mode, depth + 1)
                elif stat.S_ISLNK(found.st_mode):
                    self._symlink_at(dirfd, entry.name, os.readlink(entry.path))
                elif stat.S_ISREG(found.st_mode):
                    data = Path(entry.path).read_bytes()
                    times = (found.st_atime_ns, found.st_mtime_ns)
                    self._write_at(dirfd, entry.name, data, stat.S_IMODE(found.st_mode), times)

    def _unlink_stray_link(self, rootfd: int, path: str) -> None:
        """Remove the symlink at ``path`` if it leads to no directory inside the guest."""
        parent, name = _split(path)
        try:
            parentfd = _resolve(rootfd, parent)
        except (FileNotFoundError, NotADirectoryError):
            return
        with _closing(parentfd):
            try:
                if not stat.S_ISLNK(os.stat(name, dir_fd=parentfd, follow_symlinks=False).st_mode):
                    return
            except FileNotFoundError:
                return
            try:
                with _closing(_resolve(rootfd, path)) as fd:
                    if stat.S_ISDIR(os.fstat(fd).st_mode):
                        return
            except (FileNotFoundError, NotADirectoryError):
                pass
            os.unlink(name, dir_fd=parentfd)
