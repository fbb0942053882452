"""Download files over http(s) (through ``PROXY``) or copy them from ``file://`` URLs.

Every transfer has a socket timeout, logs its progress (percent and MB/s) at
most every few seconds, resumes a broken http(s) transfer with a ``Range``
request (or restarts it cleanly when the server ignores ranges) and writes to
a temporary file that is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Optional

from gentoobootstrap.errors import StageError

log = logging.getLogger(__name__)

#: Seconds a connect or a read may stall before the transfer counts as broken.
TIMEOUT = 60.0
#: Attempts per file; a broken transfer resumes where it stopped.
ATTEMPTS = 4
#: Seconds between progress lines.
PROGRESS_INTERVAL = 5.0
#: Small files (latest file, DIGESTS, signatures) are read into memory up to this size.
SMALL_LIMIT = 4 * 2**20
_CHUNK = 2**20


class DownloadError(StageError):
    """A file could not be downloaded.

    ``missing``: the server says it does not exist; ``final``: trying again cannot help
    (an HTTP 4xx, a refused connection: retrying a down mirror only delays the fallback).
    """

    def __init__(
        self, url: str, problem: str, *, missing: bool = False, final: bool = False
    ) -> None:
        self.url = url
        self.missing = missing
        self.final = final or missing
        super().__init__(f"cannot download {url}: {problem}")


def _opener(proxy: str) -> urllib.request.OpenerDirector:
    # An explicit PROXY only: Ganeti runs us with a cleared environment, and a stray
    # http_proxy in a shell would make tests and prefetch behave differently.
    proxies = {"http": proxy, "https": proxy} if proxy else {}
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies))


@contextlib.contextmanager
def _open(
    url: str, proxy: str, offset: int = 0, timeout: float = TIMEOUT
) -> Iterator[tuple[IO[bytes], int, Optional[int]]]:
    """Open ``url`` from ``offset``; yield (stream, where it really starts, total size)."""
    request = urllib.request.Request(url, headers={"User-Agent": "gentoobootstrap"})
    if offset and not url.startswith("file:"):
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = _opener(proxy).open(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left after offset: start over
            raise DownloadError(url, "server refused the resume range") from None
        raise DownloadError(
            url, f"HTTP {e.code} {e.reason}", missing=e.code in (404, 410), final=e.code < 500
        ) from None
    except urllib.error.URLError as e:
        reason = e.reason
        missing = isinstance(reason, FileNotFoundError)
        # No connection at all (refused, no such host) is final; a stalled one may recover.
        final = isinstance(reason, OSError) and not isinstance(reason, TimeoutError)
        text = reason.strerror or str(reason) if isinstance(reason, OSError) else str(reason)
        raise DownloadError(url, text, missing=missing, final=final) from None
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(url, str(e) or type(e).__name__) from None
    with response:
        start = 0
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if getattr(response, "status", 200) == 206:
            # Content-Range: bytes START-END/TOTAL
            content_range = response.headers.get("Content-Range", "")
            try:
                start = int(content_range.split()[1].split("-")[0])
                total = int(content_range.rsplit("/", 1)[1])
            except (IndexError, ValueError):
                raise DownloadError(url, f"bad Content-Range {content_range!r}") from None
        yield response, start, total


class _Progress:
    """Logs percent and MB/s of a transfer at most every ``PROGRESS_INTERVAL`` seconds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.start = self.last = time.monotonic()
        self.done_at_start = 0

    def update(self, done: int, total: Optional[int], final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        rate = (done - self.done_at_start) / max(now - self.start, 1e-6) / 1e6
        if total:
            log.info(
                "%s: %d%% of %.1f MB, %.1f MB/s", self.name, done * 100 // total, total / 1e6, rate
            )
        else:
            log.info("%s: %.1f MB, %.1f MB/s", self.name, done / 1e6, rate)


def download(url: str, dest: Path, *, proxy: str = "", timeout: float = TIMEOUT) -> Path:
    """Download ``url`` to ``dest`` (temp file + rename); resume or restart a broken transfer."""
    part = dest.with_name(f".{dest.name}.part")
    progress = _Progress(url.rsplit("/", 1)[-1])
    error: Optional[DownloadError] = None
    try:
        with open(part, "wb") as out:
            for attempt in range(1, ATTEMPTS + 1):
                done = out.tell()
                try:
                    with _open(url, proxy, done, timeout) as (stream, start, total):
                        if start != done:  # the server ignored the range: restart cleanly
                            out.seek(0)
                            out.truncate()
                            done = 0
                        progress.done_at_start = done
                        while chunk := stream.read(_CHUNK):
                            out.write(chunk)
                            done += len(chunk)
                            progress.update(done, total)
                    if total is not None and done < total:
                        raise DownloadError(url, f"connection closed after {done} of {total} bytes")
                    progress.update(done, total, final=True)
                    break
                except (OSError, http.client.HTTPException) as e:
                    error = DownloadError(url, str(e) or type(e).__name__)
                except DownloadError as e:
                    if e.final:
                        raise
                    error = e
                if attempt == ATTEMPTS:
                    assert error is not None
                    raise error
                log.warning("%s; retrying (%d of %d)", error, attempt + 1, ATTEMPTS)
                time.sleep(2 ** (attempt - 1) - 1)  # at once, then 1 s, 3 s
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    return dest


def read(url: str, *, proxy: str = "", timeout: float = TIMEOUT, limit: int = SMALL_LIMIT) -> bytes:
    """The content of a small file (latest file, DIGESTS, signature) at ``url``."""
    with _open(url, proxy, 0, timeout) as (stream, _, _total):
        try:
            data = stream.read(limit + 1)
        except (OSError, http.client.HTTPException) as e:
            raise DownloadError(url, str(e) or type(e).__name__) from None
    if len(data) > limit:
        raise DownloadError(url, f"larger than {limit} bytes; not the expected small file")
    return data


def read_optional(url: str, *, proxy: str = "", timeout: float = TIMEOUT) -> Optional[bytes]:
    """Like :func:`read`, but None when the file does not exist."""
    try:
        return read(url, proxy=proxy, timeout=timeout)
    except DownloadError as e:
        if e.missing:
            return None
        raise
