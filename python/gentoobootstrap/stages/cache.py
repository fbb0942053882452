"""The node's cache of verified stages and snapshots under ``CACHE_DIR``.

Layout::

    CACHE_DIR/
      stage3/amd64-openrc/          one entry per (arch, flavor), stage4 URL or snapshot
        .lock                       flock'd while the entry is looked at or filled
        meta.json                   source URL, dated name, file, verified/checked times, mode
        stage3-amd64-openrc-20261122T170359Z.tar.zst
      stage3-amd64-openrc-20261122T170359Z.tar.zst~ext4-….img   prepared image (disk.images)
      stage4/… snapshot/…
      tmp/                          downloads in progress (removed on the way out)

Only verified files are renamed into an entry, always by temp file + rename,
and ``meta.json`` is written last, so a reader never sees a partial or
unverified file.  Modes never come from the caller's umask: directories are
0755 (``tmp/`` 0700), files 0644 (``.lock`` 0600), and a cached file its
group or others may write is not used.  The exclusive lock makes parallel creates wait for the one
that fills the entry instead of downloading again.  The file a replaced entry
held is kept for one more generation: a create that was handed it a moment
before may still be unpacking it.  Files made from an entry's file (prepared
filesystem images) are named after it and kept and removed with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Optional

from gentoobootstrap.config.settings import VerifyMode

log = logging.getLogger(__name__)

#: VERIFY modes, weakest first: an entry serves a request of its own strength or less.
STRENGTH: dict[str, int] = {"none": 0, "checksum": 1, "signature": 2}
META = "meta.json"
DAY = 86400.0
DIR_MODE = 0o755
FILE_MODE = 0o644
PRIVATE_MODE = 0o700
#: Between a file's name and what was made from it: ``stage.tar.zst~ext4-1a2b.img``.
DERIVED = "~"


def now() -> float:
    """The clock of cache ageing (one place for tests to fake)."""
    return time.time()


@dataclass(frozen=True)
class Meta:
    source: str  # URL (or path) the file was obtained from
    name: str  # its dated name on the mirror
    file: str  # the file in the entry directory (may be a faster form than ``name``)
    verified_at: float
    checked_at: float  # when the mirror last confirmed it is the newest
    verify: str  # the VERIFY mode it passed
    previous: str = ""  # the file it replaced, deleted on the next replacement
    members: int = 0  # tar members checked (none escapes the target) when it was stored
    signed_at: float = 0.0  # when its signature was made (0: none checked)
    unpacked: int = 0  # bytes of its tar stream, when known (0: not recorded)

    def fresh(self, days: int) -> bool:
        return now() - self.checked_at < days * DAY

    def satisfies(self, verify: VerifyMode) -> bool:
        return STRENGTH.get(self.verify, -1) >= STRENGTH[verify]


@dataclass
class Entry:
    """One cache entry; use :meth:`locked` around every read and fill."""

    root: Path  # CACHE_DIR
    path: Path  # CACHE_DIR/KIND/KEY

    @property
    def meta(self) -> Optional[Meta]:
        """The entry's metadata, None when it is missing, unreadable or cannot be trusted."""
        try:
            with open(self.path / META, "rb", opener=_no_follow) as f:
                writable = os.fstat(f.fileno()).st_mode & 0o022
                meta = Meta(**json.loads(f.read()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as e:
            log.warning("%s: unreadable cache metadata (%s); filling the entry again", self.path, e)
            return None
        if "/" in meta.file or meta.file in ("", ".", ".."):
            log.warning("%s: metadata names %r; filling the entry again", self.path, meta.file)
            return None
        try:
            st = (self.path / meta.file).lstat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if writable or st.st_mode & 0o022:
            log.warning("%s: its group or others may write it; filling it again", self.path)
            return None
        return meta

    def file_of(self, meta: Meta) -> Path:
        """The file ``meta`` (this entry's) describes."""
        return self.path / meta.file

    @contextlib.contextmanager
    def locked(self) -> Iterator[Entry]:
        """Hold the entry's exclusive lock; parallel callers wait here."""
        make_directory(self.path, DIR_MODE, self.root)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        with open(fd, "r+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("%s: waiting for another process filling this cache entry", self.path)
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def workdir(self) -> Iterator[Path]:
        """A scratch directory on the cache's filesystem (so renames into the entry are atomic)."""
        self._remove_scratch()  # left by a killed fill; we hold the lock
        tmp = self.root / "tmp"
        make_directory(tmp, PRIVATE_MODE, self.root)
        with tempfile.TemporaryDirectory(dir=tmp, prefix=self._scratch_prefix) as work:
            yield Path(work)

    @property
    def _scratch_prefix(self) -> str:
        return f"{self.path.parent.name}.{self.path.name}~"

    def _remove_scratch(self) -> None:
        for stale in (self.root / "tmp").glob(self._scratch_prefix + "*"):
            _remove(stale)

    def store(self, file: Path, meta: Meta) -> Path:
        """Move the verified ``file`` into the entry and describe it (metadata last)."""
        old = self.meta
        target = self.path / meta.file
        os.chmod(file, FILE_MODE)
        os.replace(file, target)
        previous = old.file if old and old.file != meta.file else (old.previous if old else "")
        self._write(Meta(**{**asdict(meta), "previous": previous}))
        keep = {META, ".lock", meta.file, previous}
        for stale in self.path.iterdir():
            if stale.name not in keep and made_from(stale.name) not in keep:
                log.info("%s: removing superseded %s", self.path, stale.name)
                _remove(stale)
        return target

    def touch(self) -> None:
        """Record that the mirror confirmed the entry is still the newest."""
        meta = self.meta
        if meta is not None:
            self._write(Meta(**{**asdict(meta), "checked_at": now()}))

    def _write(self, meta: Meta) -> None:
        tmp = self.path / f".{META}.tmp"
        try:
            with create_file(tmp) as f:
                f.write((json.dumps(asdict(meta), indent=1) + "\n").encode())
                os.fsync(f.fileno())
            os.replace(tmp, self.path / META)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        """Empty the entry (hold the lock)."""
        self._remove_scratch()
        for item in self.path.iterdir():
            if item.name != ".lock":
                _remove(item)


def derived_name(file: str, what: str) -> str:
    """The name of a file made from the entry's ``file`` (a prepared image): it goes with it."""
    return f"{file}{DERIVED}{what}"


def made_from(name: str) -> str:
    """The entry file the file ``name`` was made from ("" for one not made from another)."""
    return name.rsplit(DERIVED, 1)[0] if DERIVED in name else ""


def make_directory(path: Path, mode: int, root: Path) -> None:
    """``path`` below ``root`` (CACHE_DIR) with ``mode`` whatever the umask.

    The directories from ``root`` down are ours: made DIR_MODE (``path`` itself
    ``mode``), and an existing one gets its mode back.  What lies above
    ``root`` is the admin's: made DIR_MODE only when missing.
    """
    _directory(root, DIR_MODE, ours=False)
    below = path.relative_to(root).parts
    for depth in range(1, len(below) + 1):
        directory = root.joinpath(*below[:depth])
        _directory(directory, mode if directory == path else DIR_MODE, ours=True)


def _directory(path: Path, mode: int, *, ours: bool) -> None:
    try:
        os.mkdir(path, mode)
    except FileNotFoundError:
        _directory(path.parent, DIR_MODE, ours=False)
        _directory(path, mode, ours=ours)
        return
    except FileExistsError:
        if not ours:
            return
    os.chmod(path, mode)


def create_file(path: Path, mode: int = FILE_MODE) -> BinaryIO:
    """``path`` created (or truncated) for writing with ``mode`` whatever the umask,
    never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    os.fchmod(fd, mode)
    return open(fd, "wb")


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def entry(cache_dir: Path, kind: str, key: str) -> Entry:
    return Entry(cache_dir, cache_dir / kind / key)


def entry_holding(file: Path, cache_dir: Path) -> Optional[Entry]:
    """The entry of ``cache_dir`` whose directory ``file`` is in, or None."""
    if file.parent.parent.parent != cache_dir:
        return None
    return Entry(cache_dir, file.parent)


def recorded(file: Path, cache_dir: Path) -> Optional[Meta]:
    """What was recorded about ``file`` when it was stored in ``cache_dir``.

    None when ``file`` is not the current file of an entry of ``cache_dir``: a
    meta.json anywhere else is not ours and proves nothing.
    """
    holder = entry_holding(file, cache_dir)
    meta = holder.meta if holder is not None else None
    return meta if meta is not None and meta.file == file.name else None


def recorded_member_count(file: Path, cache_dir: Path) -> Optional[int]:
    """How many tar members of ``file`` were checked when it was stored (None: check it)."""
    meta = recorded(file, cache_dir)
    return meta.members if meta is not None and meta.members > 0 else None


def recorded_unpacked_size(file: Path, cache_dir: Path) -> Optional[int]:
    """The bytes of ``file``'s tar stream, recorded when it was stored (None: not known)."""
    meta = recorded(file, cache_dir)
    return meta.unpacked if meta is not None and meta.unpacked > 0 else None


def entries(cache_dir: Path) -> Iterator[Entry]:
    """Every entry in the cache (with or without a file)."""
    if not cache_dir.is_dir():
        return
    for kind in sorted(cache_dir.iterdir()):
        if kind.name == "tmp" or not kind.is_dir():
            continue
        for path in sorted(kind.iterdir()):
            if path.is_dir():
                yield Entry(cache_dir, path)
