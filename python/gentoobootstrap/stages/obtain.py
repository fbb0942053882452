"""Obtain the verified stage (stage3, stage4 or catalyst build) and portage snapshot.

``stage()`` returns the local tarball create unpacks; ``snapshot()`` the
portage snapshot (or None).  Both go through the cache (:mod:`gentoobootstrap.stages.cache`):
downloaded once per node under the entry's lock, verified per ``VERIFY`` before
they enter the cache, reused for ``CLEAN_CACHE`` days, and used from the cache
with a warning when the mirror cannot be reached.  A dated stage3 older than the
cached one, or a latest snapshot signed before the cached one, is refused unless
``ALLOW_OLDER_STAGE`` allows it: a mirror replaying an old, genuinely signed
release must not roll the node back.

A local ``STAGE4_FILE`` is opened once and copied, as it is, into the cache; the
digests, the signature and the member check all read that private copy, and only
it is unpacked, so changing the file afterwards cannot change what is installed.

A downloaded tarball is kept recompressed with zstd when zstd is installed
(:func:`gentoobootstrap.stages.unpack.fast_form`).  What ``VERIFY`` asks of each
download is :mod:`gentoobootstrap.stages.verification`'s; where the cache keeps it,
:mod:`gentoobootstrap.stages.cache`'s.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from gentoobootstrap import runner
from gentoobootstrap.config.files import node_arch
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.errors import StageError, VerificationError
from gentoobootstrap.log import complete_step
from gentoobootstrap.stages import cache, download, unpack, verification
from gentoobootstrap.stages.download import DownloadError

log = logging.getLogger(__name__)

_RELATIVE_PATH = re.compile(r"[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*")


def stage(settings: Settings) -> Path:
    """The verified local stage tarball to unpack: STAGE4_FILE if set, else the newest stage3."""
    if settings.stage4_file:
        return _stage4(settings)
    return _stage3(settings)


def snapshot(settings: Settings) -> Optional[Path]:
    """The verified portage snapshot tarball (SNAPSHOT), or None when SNAPSHOT is empty."""
    if not settings.snapshot:
        return None
    name = f"gentoo-{settings.snapshot}.tar.xz"
    url = f"{settings.mirror}/snapshots/{name}"
    entry = cache.entry(settings.cache_dir, "snapshot", settings.snapshot)
    dated = settings.snapshot != "latest"  # a dated snapshot never changes

    def refresh(usable: Optional[cache.Meta], keys: verification.Keys) -> Path:
        # The signature identifies the snapshot: unchanged signature, unchanged snapshot.
        signature = download.read_optional(url + ".gpgsig", proxy=settings.proxy)
        identity = _identity(name, signature)
        if usable and usable.name == identity:
            entry.touch()
            return entry.file_of(usable)
        if signature is None and settings.verify == "signature":
            raise VerificationError(f"{name}: no .gpgsig beside it on the mirror")
        with entry.workdir() as work:
            tarball = download.download(url, work / name, proxy=settings.proxy)
            signed_at = verification.verify_snapshot(settings, keys(), tarball, name, signature)
            cached = usable or entry.meta
            # Without a checked signature (VERIFY=checksum/none) there is no date to trust.
            if cached and 0 < signed_at < cached.signed_at:
                _refuse_older(
                    settings,
                    url,
                    f"a snapshot signed {_when(signed_at)}",
                    f"one signed {_when(cached.signed_at)}",
                )
            return _store(entry, settings, tarball, url, identity, signed_at=signed_at)

    return _through_cache(entry, settings, lambda meta: dated or _fresh(meta, settings), refresh)


#: Brings a cache entry up to date from the mirror, given its usable contents (or None) and
#: the keys; returns its file.
Refresh = Callable[[Optional[cache.Meta], verification.Keys], Path]


def _through_cache(
    entry: cache.Entry, settings: Settings, fresh: Callable[[cache.Meta], bool], refresh: Refresh
) -> Path:
    """The entry's file, under its lock: the cached one while ``fresh``, else ``refresh``'s;
    the cached one (with a warning) when the mirror cannot be reached."""
    with entry.locked(), verification.keys_for(settings) as keys:
        usable = _usable(entry, settings)
        if usable and fresh(usable):
            log.info("Using the cached %s (checked %s)", _shown(usable), _ago(usable.checked_at))
            return entry.file_of(usable)
        try:
            return refresh(usable, keys)
        except DownloadError as e:
            if usable is None:
                raise
            log.warning(
                "%s; using the cached %s (checked %s)", e, _shown(usable), _ago(usable.checked_at)
            )
            return entry.file_of(usable)


def _fresh(meta: cache.Meta, settings: Settings) -> bool:
    return meta.fresh(settings.clean_cache)


def _shown(meta: cache.Meta) -> str:
    return meta.name.partition("@")[0]  # without the hash of what identifies it


def _stage3(settings: Settings) -> Path:
    arch = settings.arch or node_arch()
    flavor = settings.stage3_flavor
    base = f"{settings.mirror}/releases/{arch}/autobuilds"
    latest_url = f"{base}/latest-stage3-{arch}-{flavor}.txt"
    entry = cache.entry(settings.cache_dir, "stage3", f"{arch}-{flavor}")

    def refresh(usable: Optional[cache.Meta], keys: verification.Keys) -> Path:
        relative = _latest(latest_url, settings, keys)
        name = relative.rsplit("/", 1)[-1]
        source = verification.Source(f"{base}/{relative}", name, settings.proxy)
        if usable and usable.name == source.name:
            log.info("The cached %s is still the newest", source.name)
            entry.touch()
            return entry.file_of(usable)
        # Even an entry a weaker VERIFY passed: going back needs the admin's word.
        cached = usable or entry.meta
        if cached and is_older(source.name, cached.name):
            _refuse_older(
                settings,
                latest_url,
                f"{source.name} of {_stamp(source.name)}",
                f"{cached.name} of {_stamp(cached.name)}",
            )
        return _fill(entry, settings, keys, source, source.name)

    return _through_cache(entry, settings, lambda meta: _fresh(meta, settings), refresh)


def _latest(url: str, settings: Settings, keys: verification.Keys) -> str:
    """The dated relative path the latest file names (its signature checked when it has one)."""
    data = download.read(url, proxy=settings.proxy)
    signed = verification.is_clearsigned(data)
    ring = keys()
    if signed and ring is not None:
        data = verification.verify_clearsigned(ring, data, url.rsplit("/", 1)[-1])
    elif signed:
        data = verification.unsigned_body(data)
    elif ring is not None:
        log.warning("%s is not signed (an old mirror?); the stage's own signatures decide", url)
    return parse_latest(data.decode(errors="replace"), url)


def parse_latest(text: str, url: str = "the latest file") -> str:
    """The relative path of the newest stage in a latest-stage3-*.txt body."""
    paths = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", "-----", "Hash:")):
            continue
        if fields[0].endswith((".tar.xz", ".tar.bz2")):
            paths.append(fields[0])
    if not paths:
        raise StageError(f"{url} names no stage tarball")
    path = paths[-1]
    if not _RELATIVE_PATH.fullmatch(path) or ".." in path.split("/"):
        raise StageError(f"{url} names {path!r}, which is not a relative path on the mirror")
    return path


#: The release stamp in a dated stage's name: stage3-amd64-openrc-20261122T170359Z.tar.xz
#: (older releases: 20200101 alone).
_RELEASE = re.compile(r"-(\d{8})(?:T(\d{6})Z)?\.tar\.")


def release(name: str) -> Optional[tuple[str, str]]:
    """The (date, time) a dated stage's name carries, or None."""
    match = _RELEASE.search(name)
    return (match.group(1), match.group(2) or "000000") if match else None


def is_older(name: str, cached: str) -> bool:
    """Whether the dated stage ``name`` is an older release than the ``cached`` one."""
    new, old = release(name), release(cached)
    return new is not None and old is not None and new < old


def _stamp(name: str) -> str:
    date, time = release(name) or ("?", "")
    return f"{date[:4]}-{date[4:6]}-{date[6:]} {time[:2]}:{time[2:4]}:{time[4:]} UTC"


def _when(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def _refuse_older(settings: Settings, where: str, offered: str, cached: str) -> None:
    """``where`` offers something older than the cached one: refused unless allowed."""
    if not settings.allow_older_stage:
        raise StageError(
            f"{where} offers {offered}, older than the cached {cached}: refusing to roll "
            "back (a mirror replaying an old release?); set ALLOW_OLDER_STAGE=yes to "
            "install the older one"
        )
    log.warning("ALLOW_OLDER_STAGE=yes: installing %s, older than the cached %s", offered, cached)


def _stage4(settings: Settings) -> Path:
    spec = settings.stage4_file
    if not re.match(r"[a-z]+://", spec):
        return _local_stage4(settings, Path(spec))
    entry = _stage4_entry(settings)

    def refresh(usable: Optional[cache.Meta], keys: verification.Keys) -> Path:
        source = verification.Source(spec, spec.rsplit("/", 1)[-1], settings.proxy)
        beside = _beside(source)
        identity = _identity(source.name, beside)
        if usable and beside is not None and usable.name == identity:
            entry.touch()
            return entry.file_of(usable)
        return _fill(entry, settings, keys, source, identity)

    return _through_cache(entry, settings, lambda meta: _fresh(meta, settings), refresh)


def _stage4_entry(settings: Settings) -> cache.Entry:
    key = hashlib.sha256(settings.stage4_file.encode()).hexdigest()[:16]
    return cache.entry(settings.cache_dir, "stage4", key)


def _beside(source: verification.Source) -> Optional[bytes]:
    """Its DIGESTS (or else its signature), which identifies a stage4 that has one."""
    return source.beside(".DIGESTS") or source.beside(".asc")


def _local_stage4(settings: Settings, path: Path) -> Path:
    """A local STAGE4_FILE (built by catalyst first if missing), copied into the cache.

    The file is opened once; the copy made from that open file is what the
    .DIGESTS/.asc beside it (when there is one) are checked against, what the
    member check reads and what create unpacks.  The copy is reused while the
    file (same inode, size and change time) and what sits beside it are unchanged.
    """
    if not path.exists():
        _build_with_catalyst(settings, path)
    source = verification.Source(path.as_uri(), path.name)
    entry = _stage4_entry(settings)
    with _open_local(path) as stage, entry.locked(), verification.keys_for(settings) as keys:
        st = os.fstat(stage.fileno())
        state = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
        identity = _identity(path.name, state.encode() + (_beside(source) or b""))
        usable = _usable(entry, settings)
        if usable and usable.name == identity:
            log.info("Using the cached copy of %s (verified %s)", path, _ago(usable.verified_at))
            return entry.file_of(usable)
        with entry.workdir() as work:

            def copy() -> Path:
                with complete_step(f"Copying {path} into the cache"):
                    return _copy(stage, work / path.name)

            tarball = verification.verified(settings, keys, source, work, copy, local=True)
            return _store(entry, settings, tarball, source.url, identity, recompress=False)


@contextlib.contextmanager
def _open_local(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading once; it must be a regular file."""
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang create.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise StageError(f"STAGE4_FILE: cannot open {path}: {e.strerror}") from None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StageError(f"STAGE4_FILE: {path} is not a file")
        yield f


def _copy(source: BinaryIO, dest: Path) -> Path:
    """The whole of the open ``source`` copied to the new file ``dest``."""
    with cache.create_file(dest) as out:
        offset = 0
        while sent := os.sendfile(out.fileno(), source.fileno(), offset, 2**30):
            offset += sent
        os.fsync(out.fileno())
    return dest


def _build_with_catalyst(settings: Settings, target: Path) -> None:
    """Build the missing STAGE4_FILE once with ``catalyst -f CATALYST_SPEC``."""
    spec = settings.catalyst_spec
    if spec is None:
        raise StageError(
            f"STAGE4_FILE {target}: no such file (set CATALYST_SPEC to build it with catalyst)"
        )
    key = hashlib.sha256(str(spec).encode()).hexdigest()[:16]
    entry = cache.entry(settings.cache_dir, "catalyst", key)
    with entry.locked():
        if target.exists():  # a parallel create built it while we waited
            return
        catalyst = runner.find_tool("catalyst")
        if not spec.is_file():
            raise StageError(f"CATALYST_SPEC {spec}: no such file")
        logfile = entry.path / "catalyst.log"
        step = complete_step(f"Building {target.name} with catalyst (log: {logfile})")
        with step, cache.create_file(logfile) as out:
            runner.run([catalyst, "-f", spec], stdout=out)
        if not target.exists():
            raise StageError(
                f"catalyst -f {spec} finished but STAGE4_FILE {target} does not exist: "
                "make the spec's target path and STAGE4_FILE agree"
            )


def _fill(
    entry: cache.Entry,
    settings: Settings,
    keys: verification.Keys,
    source: verification.Source,
    identity: str,
) -> Path:
    """Download ``source`` into the entry, verified; the small files are checked first."""
    with entry.workdir() as work:

        def fetch() -> Path:
            with complete_step(f"Downloading {source.url}"):
                return download.download(source.url, work / source.name, proxy=settings.proxy)

        tarball = verification.verified(settings, keys, source, work, fetch)
        return _store(entry, settings, tarball, source.url, identity)


def _store(
    entry: cache.Entry,
    settings: Settings,
    tarball: Path,
    url: str,
    identity: str,
    *,
    recompress: bool = True,
    signed_at: float = 0.0,
) -> Path:
    """Put the verified ``tarball`` into the cache entry, in its fast form if ``recompress``."""
    # Measured and checked once here, not on every create: the cached file never changes.
    size = unpack.stream_size(tarball)
    fast = unpack.fast_form(tarball, size) if recompress else tarball
    try:
        members = unpack.refuse_escaping_members(fast)
    except StageError as e:  # name the download, not the scratch file that is about to go
        raise StageError(f"{url}: {str(e).removeprefix(f'{fast}: ')}") from None
    moment = cache.now()
    meta = cache.Meta(
        url, identity, fast.name, moment, moment, settings.verify, members=members,
        signed_at=signed_at, unpacked=size,
    )  # fmt: skip
    return entry.store(fast, meta)


def _usable(entry: cache.Entry, settings: Settings) -> Optional[cache.Meta]:
    meta = entry.meta
    if meta is not None and not meta.satisfies(settings.verify):
        log.info("The cached %s passed only VERIFY=%s; obtaining it again", meta.name, meta.verify)
        return None
    return meta


def _identity(name: str, beside: Optional[bytes]) -> str:
    """The name of a download plus a hash of its signature or DIGESTS, when there is one."""
    if beside is None:
        return name
    return f"{name}@{hashlib.sha256(beside).hexdigest()[:16]}"


def _ago(moment: float) -> str:
    hours = (cache.now() - moment) / 3600
    return f"{hours:.0f} hours ago" if hours < 48 else f"{hours / 24:.0f} days ago"
