"""The export stream of disk 0: its format, its detection and the pumps that move it.

The stream is a POSIX (pax) tar archive made by GNU tar, so any GNU tar can
unpack it, followed by one 512-byte end block::

    pax global header   GENTOOBOOTSTRAP.format=1, .size=BYTES, .instance=NAME,
                        .fstypes="root:ext4 boot:ext4", .uuids="root:UUID boot:UUID swap:UUID"
    tar members         the instance's tree, /boot included: numeric owners, modes,
                        hard links, symlinks, devices, xattrs (security.capability,
                        ...), ACLs, sparse files
    end of archive      tar's zero blocks, padded to its 128 KiB record
    end block           "GENTOOBOOTSTRAP-END 1\\nbytes=N\\ncrc32=HEX\\n", NUL-padded

``bytes`` and ``crc32`` (zlib's CRC-32, 8 hex digits) cover everything before
the end block, so a stream cut short (even between two members, which tar
itself accepts silently) or damaged on the way fails the import with a clear
error.  CRC-32 is for accidental damage, at memory speed: a cryptographic
hash would halve the throughput of a warm tar, and Ganeti's transport has
its own TLS.

Import also takes a plain tar without either (no size check, no checksum) and
the ``dump`` stream of ganeti-instance-debootstrap's export (``restore -r``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import sys
import termios
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Optional

from gentoobootstrap.errors import StreamError
from gentoobootstrap.log import printable
from gentoobootstrap.stages.unpack import TAR_EXTRACT_OPTIONS, TAR_FAITHFUL, compression_of

log = logging.getLogger(__name__)

BLOCK = 512
CHUNK = 1 << 20
FORMAT_VERSION = "1"
#: pax keywords of the global header (POSIX reserves VENDOR.keyword for vendors).
KEYWORD = "GENTOOBOOTSTRAP."
END_MAGIC = b"GENTOOBOOTSTRAP-END 1\n"
#: dump(8)'s record magic (NFS_MAGIC) at byte 24 of the first record, either byte order.
DUMP_MAGIC = (60012).to_bytes(4, "little"), (60012).to_bytes(4, "big")
TAR_CREATE = (
    "--format=posix",
    # 128 KiB records instead of 10 KiB: fewer, larger writes through the pump.
    "--blocking-factor=256",
    "--sparse",
    # atime and ctime would add a pax header to every member, for nothing.
    "--pax-option=delete=atime,delete=ctime",
    *TAR_FAITHFUL,
)
TAR_EXTRACT = (*TAR_EXTRACT_OPTIONS, "--read-full-records")


#: An export of this OS, another tar archive, or a dump(8) stream.
StreamFormat = Literal["gentoobootstrap", "tar", "dump"]


@dataclass(frozen=True)
class Head:
    """What the first block of an import stream tells."""

    format: StreamFormat
    block: bytes  # the bytes already read, to be fed to the extractor first
    #: Our pax keywords, prefix removed: the exporter's word, so log them only through
    #: log.printable.
    header: Mapping[str, str] = field(default_factory=dict)

    @property
    def size(self) -> Optional[int]:
        value = self.header.get("size", "")
        return int(value) if value.isdigit() else None


def header_options(values: Mapping[str, str]) -> list[str]:
    """tar options that write ``values`` as our pax global header at the start of the stream.

    tar splits the option at commas: values must not contain one.
    """
    if any("," in value for value in values.values()):
        raise ValueError(f"a comma in a header value: {values}")
    pairs = ",".join(f"{KEYWORD}{key}={value}" for key, value in values.items())
    # A fixed name instead of tar's default /tmp/GlobalHead.PID.N: the same tree, the same stream.
    return [f"--pax-option=globexthdr.name=GENTOOBOOTSTRAP,{pairs}"]


def checksum(data: bytes | memoryview, previous: int = 0) -> int:
    """zlib's CRC-32 of ``data``, continuing ``previous``."""
    return zlib.crc32(data, previous)


def hex_checksum(value: int) -> str:
    return f"{value:08x}"


def end_block(count: int, digest: str) -> bytes:
    text = END_MAGIC + f"bytes={count}\ncrc32={digest}\n".encode()
    return text.ljust(BLOCK, b"\0")


def _is_tar(block: bytes) -> bool:
    return len(block) == BLOCK and block[257:262] == b"ustar"


def _pax_records(data: bytes) -> dict[str, str]:
    """The ``LEN key=value\\n`` records of a pax header's data."""
    records = {}
    while data:
        length_text, _, _ = data.partition(b" ")
        if not length_text.isdigit() or int(length_text) <= len(length_text):
            break
        record, data = data[: int(length_text)], data[int(length_text) :]
        key, _, value = record[len(length_text) + 1 :].rstrip(b"\n").partition(b"=")
        records[key.decode(errors="replace")] = value.decode(errors="replace")
    return records


def read_exactly(fd: int, count: int) -> bytes:
    """``count`` bytes from ``fd`` (fewer only at the end of the stream)."""
    parts = []
    while count:
        data = os.read(fd, count)
        if not data:
            break
        parts.append(data)
        count -= len(data)
    return b"".join(parts)


def read_head(fd: int) -> Head:
    """Read the start of the stream on ``fd`` and tell its format; StreamError if unknown."""
    block = read_exactly(fd, BLOCK)
    if not block:
        raise StreamError("the stream is empty")
    if _is_tar(block):
        if block[156:157] != b"g":
            return Head("tar", block)
        size = int(block[124:136].strip(b" \0") or b"0", 8)
        padded = -(-size // BLOCK) * BLOCK
        data = read_exactly(fd, padded)
        block += data
        if len(data) < padded:
            raise StreamError("the stream is truncated: it ends inside its first tar header")
        records = _pax_records(data[:size])
        ours = {k[len(KEYWORD) :]: v for k, v in records.items() if k.startswith(KEYWORD)}
        if "format" not in ours:
            return Head("tar", block)
        if ours["format"] != FORMAT_VERSION:
            raise StreamError(
                f"stream format {printable(ours['format'])} is not supported (this version reads "
                f"{FORMAT_VERSION}): import it with the version that exported it"
            )
        return Head("gentoobootstrap", block, ours)
    if len(block) >= 28 and block[24:28] in DUMP_MAGIC:
        return Head("dump", block)
    kind = compression_of(block)
    if kind != "none":
        raise StreamError(
            f"the stream is {kind}-compressed: import takes the uncompressed export "
            "stream (Ganeti's --transport-compression is undone before import)"
        )
    raise StreamError(
        "the stream is neither an export of this OS (a tar archive), a tar archive nor a "
        "dump(8) stream"
    )


def check_end(block: bytes, count: int, digest: str) -> None:
    """Check our end block against the ``count`` bytes and ``digest`` that came before it."""
    if not block.startswith(END_MAGIC):
        raise StreamError(
            f"the stream is truncated: it ends after {count + len(block)} bytes without its "
            "end block"
        )
    fields = dict(
        line.split("=", 1)
        for line in block[len(END_MAGIC) :].rstrip(b"\0").decode(errors="replace").splitlines()
        if "=" in line
    )
    if fields.get("bytes") != str(count):
        raise StreamError(
            f"the stream is corrupt: its end block says {fields.get('bytes')} bytes, "
            f"{count} arrived"
        )
    if fields.get("crc32") != digest:
        raise StreamError("the stream is corrupt: its CRC-32 checksum does not match")


def enlarge_pipe(fd: int) -> None:
    """A 1 MiB pipe buffer: fewer wake-ups between tar and the pump (Linux only, best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)


def write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _chunks(fd: int) -> Iterator[memoryview]:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while True:
        count = os.readv(fd, [buffer])
        if not count:
            return
        yield view[:count]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
_libc.tee.restype = ctypes.c_ssize_t


def tee(source: int, sink: int, count: int) -> int:
    """tee(2): up to ``count`` bytes of pipe ``source`` also put into pipe ``sink``, without
    copying them and without consuming them from ``source``; 0 at the end of ``source``.

    OSError(EINVAL) when either is not a pipe.
    """
    while True:
        done = _libc.tee(source, sink, count, 0)
        if done >= 0:
            return int(done)
        code = ctypes.get_errno()
        if code != errno.EINTR:  # a signal: its Python handler runs before the retry
            raise OSError(code, os.strerror(code))


def read_into(fd: int, view: memoryview) -> None:
    """Fill ``view`` from ``fd``: bytes a tee(2) has just seen there, so they are all present."""
    while view:
        count = os.readv(fd, [view])
        if not count:
            raise StreamError("a pipe lost bytes that were in it")
        view = view[count:]


def copy_out(source: int, sink: int) -> tuple[int, str]:
    """Copy ``source`` to ``sink`` until EOF; return the byte count and their CRC-32 (hex).

    Between two pipes (tar's and Ganeti's) the bytes are passed on by tee(2), page by
    page without a copy, then read once for the checksum: half the memory traffic of
    reading and writing them, which is what a warm export is bound by.
    """
    crc = 0
    count = 0
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    try:
        while n := tee(source, sink, CHUNK):
            read_into(source, view[:n])
            crc = checksum(view[:n], crc)
            count += n
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        for chunk in _chunks(source):  # not two pipes: copy through the buffer
            crc = checksum(chunk, crc)
            write_all(sink, chunk)
            count += len(chunk)
    return count, hex_checksum(crc)


@dataclass
class Received:
    """What :func:`copy_in` saw: bytes passed on, their CRC-32 (hex), the held-back end block."""

    count: int = 0
    digest: str = ""
    end: bytes = b""
    sink_closed: bool = False  # the extractor stopped reading before the end


def copy_in(first: bytes, source: int, sink: int, *, hold_back: int = 0) -> Received:
    """Pass ``first`` then ``source`` to ``sink``, keeping the last ``hold_back`` bytes back.

    The held-back bytes are the end block; they are returned, never passed on.
    If ``sink`` stops reading (the extractor ended or failed) the rest of the
    stream is still read and hashed so the end block can be checked.  Between two
    pipes, what is followed by at least ``hold_back`` more bytes already waiting
    is passed on by tee(2), as :func:`copy_out` does.
    """
    crc = 0
    received = Received()
    pending = b""

    def account(data: memoryview | bytes) -> None:
        nonlocal crc
        crc = checksum(data, crc)
        received.count += len(data)

    def forward(data: memoryview | bytes) -> None:
        account(data)
        if not received.sink_closed:
            try:
                write_all(sink, data)
            except BrokenPipeError:
                received.sink_closed = True

    def feed(data: memoryview | bytes) -> None:
        nonlocal pending
        if not hold_back:
            forward(data)
            return
        if len(data) >= hold_back:
            if pending:
                forward(pending)
            forward(data[: len(data) - hold_back])
            pending = bytes(data[len(data) - hold_back :])
        else:
            joined = pending + bytes(data)
            forward(joined[: max(0, len(joined) - hold_back)])
            pending = joined[-hold_back:]

    feed(first)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    duplicate = True
    while True:
        ready = waiting(source) - hold_back if duplicate and not received.sink_closed else 0
        if ready > 0:
            if pending:  # it came before, and is not the end: enough follows
                forward(pending)
                pending = b""
            try:
                count = tee(source, sink, min(ready, CHUNK))
            except BrokenPipeError:
                received.sink_closed = True
                continue
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                duplicate = False  # not two pipes
                continue
            if not count:  # nothing after all: leave it to read(2)
                duplicate = False
                continue
            read_into(source, view[:count])
            account(view[:count])
            continue
        count = os.readv(source, [buffer])
        if not count:
            break
        feed(view[:count])
    received.end = pending
    received.digest = hex_checksum(crc)
    return received


def waiting(fd: int) -> int:
    """The bytes ready to be read from pipe ``fd`` (FIONREAD), 0 if it cannot tell."""
    try:
        return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, bytes(4)), sys.byteorder)
    except OSError:
        return 0
