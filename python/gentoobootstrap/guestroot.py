"""Files of the guest, reached from the node as the guest would reach them.

The unpacked stage is full of absolute symlinks (``/etc/localtime``,
``/sbin/init``, maybe ``/etc/resolv.conf``).  Followed from the node they point
into the *node's* tree, so a careless write would change the node.
:class:`GuestRoot` resolves every path as if chrooted into the guest: absolute
links restart at the guest's root and ``..`` never climbs above it.  A write
replaces a symlink instead of writing through it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Optional

from gentoobootstrap.errors import GuestError

_MAX_LINKS = 40  # as the kernel's ELOOP limit


class GuestRoot:
    """The guest's root directory ``top``; every method takes a guest path (``/etc/hosts``)."""

    def __init__(self, top: Path) -> None:
        self.top = Path(top)

    def __repr__(self) -> str:
        return f"GuestRoot({str(self.top)!r})"

    def _host(self, guest: PurePosixPath) -> Path:
        return self.top.joinpath(*guest.parts[1:])

    def path(self, path: str, follow: bool = True) -> Path:
        """The node path of guest ``path``; symlinks resolved inside the guest.

        With ``follow`` false the last component is not followed (to replace a link).
        """
        parts = list(PurePosixPath("/", path).parts[1:])
        current = PurePosixPath("/")
        links = 0
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                current = current.parent
                continue
            candidate = current / part
            host = self._host(candidate)
            if (parts or follow) and host.is_symlink():
                links += 1
                if links > _MAX_LINKS:
                    raise GuestError(f"{path}: too many levels of symbolic links in the guest")
                link = PurePosixPath(os.readlink(host))
                if link.is_absolute():
                    current = PurePosixPath("/")
                parts = [p for p in link.parts if p != "/"] + parts
                continue
            current = candidate
        return self._host(current)

    def exists(self, path: str) -> bool:
        return self.path(path).exists()

    def is_link(self, path: str) -> bool:
        return self.path(path, follow=False).is_symlink()

    def read_text(self, path: str) -> Optional[str]:
        """The file's text, or None when it does not exist."""
        try:
            return self.path(path).read_text(errors="surrogateescape")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def mkdir(self, path: str, mode: int = 0o755) -> Path:
        """Create directory ``path`` and its parents (each resolved inside the guest)."""
        host = self.path(path)
        if not host.is_dir():
            parent = str(PurePosixPath("/", path).parent)
            if parent != path:
                self.mkdir(parent)
            host.mkdir(mode=mode)
            os.chmod(host, mode)  # not filtered by the umask
        return host

    def _replaceable(self, path: str) -> Path:
        """Where to put a new ``path``: its parent resolved, the last component not followed."""
        guest = PurePosixPath("/", path)
        parent = self.mkdir(str(guest.parent))
        return parent / guest.name

    def write_text(self, path: str, text: str, mode: Optional[int] = None) -> None:
        """Write ``path`` atomically, replacing a symlink; an existing file keeps mode and owner.

        ``mode`` (default 0644) applies to new files, or always when given.
        """
        host = self._replaceable(path)
        old = None if host.is_symlink() or not host.exists() else host.stat()
        fd, tmp = tempfile.mkstemp(dir=host.parent, prefix=f".{host.name}.")
        try:
            with os.fdopen(fd, "w", errors="surrogateescape") as f:
                f.write(text)
            if old is not None:
                os.chown(tmp, old.st_uid, old.st_gid)
            os.chmod(tmp, mode if mode is not None else old.st_mode & 0o7777 if old else 0o644)
            os.replace(tmp, host)
        except BaseException:
            os.unlink(tmp)
            raise

    def symlink(self, path: str, destination: str) -> None:
        """Make ``path`` a symlink to ``destination`` (a guest path), replacing what is there."""
        host = self._replaceable(path)
        if host.is_symlink() and os.readlink(host) == destination:
            return
        if host.is_symlink() or host.exists():
            host.unlink()
        os.symlink(destination, host)

    def unlink(self, path: str) -> bool:
        """Remove file or link ``path``; True when something was removed."""
        host = self.path(path, follow=False)
        try:
            host.unlink()
        except FileNotFoundError:
            return False
        return True

    def glob(self, directory: str, pattern: str) -> list[str]:
        """Guest paths of the entries of ``directory`` matching ``pattern``, sorted."""
        host = self.path(directory)
        if not host.is_dir():
            return []
        base = PurePosixPath("/", directory)
        return sorted(str(base / p.name) for p in host.glob(pattern))
