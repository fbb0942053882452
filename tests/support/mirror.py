"""A throw-away Gentoo mirror for tests: own OpenPGP keys, signed files, a local HTTP server.

    with signing_key() as key:
        layout = build_mirror(tmp_path / "mirror", stage, key)
        with serve(tmp_path / "mirror", requests) as url:
            ...   # MIRROR=url, KEYRING=key.export(tmp_path / "keys.asc")

The layout is Gentoo's: ``releases/ARCH/autobuilds/`` with a clear-signed
``latest-stage3-ARCH-FLAVOR.txt``, the dated stage with a clear-signed
``.DIGESTS`` (SHA512 and BLAKE2B), a detached ``.asc`` and ``.CONTENTS.gz``,
and ``snapshots/gentoo-latest.tar.xz`` with its ``.gpgsig``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import http.server
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator, MutableMapping, MutableSequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

STAMP = "20261122T170359Z"
_GPG = ["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]


@dataclass
class SigningKey:
    """An ed25519 primary key (certify only) with an ed25519 signing subkey, like Gentoo's."""

    home: Path
    fingerprint: str  # of the primary key

    def _gpg(self, *args: str, input: Optional[bytes] = None) -> bytes:
        argv = [*_GPG, "--homedir", str(self.home), *args]
        return subprocess.run(argv, input=input, capture_output=True, check=True).stdout

    def clearsign(self, data: bytes) -> bytes:
        return self._gpg("--local-user", self.fingerprint, "--clearsign", input=data)

    def detach_sign(self, path: Path, when: Optional[str] = None) -> bytes:
        """A detached signature of ``path``, made now or at ``when`` (e.g. 20251122T004500)."""
        faked = ["--faked-system-time", f"{when}!"] if when else []
        return self._gpg(
            *faked,
            *("--local-user", self.fingerprint, "--armor", "--detach-sign", "-o", "-", str(path)),
        )

    def export(self, dest: Path) -> Path:
        """Write the public key (the KEYRING file) to ``dest``."""
        dest.write_bytes(self._gpg("--armor", "--export", self.fingerprint))
        return dest


@contextlib.contextmanager
def signing_key(
    name: str = "Test Release Engineering", created: Optional[str] = None
) -> Iterator[SigningKey]:
    """A fresh key pair in its own GNUPGHOME; the agent is stopped and the home removed after.

    ``created`` (e.g. 20250101T000000) backdates the keys, so that it can sign as of a
    past moment (:meth:`SigningKey.detach_sign`'s ``when``).
    """
    home = Path(tempfile.mkdtemp(prefix="gb-gpg-"))
    try:
        run = [*_GPG, "--homedir", str(home)]
        if created:
            run += ["--faked-system-time", f"{created}!"]
        subprocess.run(
            [*run, "--quick-gen-key", f"{name} <releng@example.org>", "ed25519", "cert", "never"],
            check=True,
            capture_output=True,
        )
        colons = subprocess.run(
            [*run, "--with-colons", "--list-secret-keys"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        fingerprint = next(
            line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:")
        )
        subprocess.run(
            [*run, "--quick-add-key", fingerprint, "ed25519", "sign", "never"],
            check=True,
            capture_output=True,
        )
        yield SigningKey(home, fingerprint)
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "all"], check=False, capture_output=True
        )
        shutil.rmtree(home, ignore_errors=True)


def make_tarball(dest: Path, files: Optional[dict[str, bytes]] = None, *, size: int = 0) -> Path:
    """A small stage-like .tar.xz: ``files`` plus one ``size``-byte incompressible file."""
    files = dict(files or {"etc/gentoo-release": b"Gentoo Base System release 2.17\n"})
    if size:
        files["usr/lib/payload.bin"] = os.urandom(size)
    with tarfile.open(dest, "w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return dest


def _digests(files: list[Path], absolute: bool) -> bytes:
    lines = []
    for title, algorithm in (("BLAKE2B", hashlib.blake2b), ("SHA512", hashlib.sha512)):
        lines.append(f"# {title} HASH")
        for file in files:
            name = f"/var/tmp/catalyst/builds/23.0-default/{file.name}" if absolute else file.name
            lines.append(f"{algorithm(file.read_bytes()).hexdigest()}  {name}")
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Layout:
    root: Path
    stage: Path  # the dated tarball on the mirror
    latest: Path  # latest-stage3-ARCH-FLAVOR.txt
    relative: str  # DATED/stage3-….tar.xz as the latest file names it
    snapshot: Optional[Path] = None


def build_mirror(
    root: Path,
    stage_tarball: Path,
    key: SigningKey,
    *,
    arch: str = "amd64",
    flavor: str = "openrc",
    stamp: str = STAMP,
    sign_latest: bool = True,
    absolute_paths: bool = False,
    digests_key: Optional[SigningKey] = None,
    snapshot: Optional[Path] = None,
) -> Layout:
    """Lay out ``stage_tarball`` (and ``snapshot``) as Gentoo's mirror does, signed by ``key``.

    Calling it again with a newer ``stamp`` publishes a newer stage.
    """
    autobuilds = root / "releases" / arch / "autobuilds"
    relative = f"{stamp}/stage3-{arch}-{flavor}-{stamp}.tar.xz"
    stage = autobuilds / relative
    stage.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(stage_tarball, stage)
    contents = stage.with_name(stage.name + ".CONTENTS.gz")
    contents.write_bytes(gzip.compress(b"dir /etc\nobj /etc/gentoo-release 0 0\n"))
    stage.with_name(stage.name + ".asc").write_bytes(key.detach_sign(stage))
    digests = _digests([stage, contents], absolute_paths)
    stage.with_name(stage.name + ".DIGESTS").write_bytes((digests_key or key).clearsign(digests))
    sha256 = hashlib.sha256(stage.read_bytes()).hexdigest()
    stage.with_name(stage.name + ".sha256").write_text(f"# SHA256 HASH\n{sha256}  {stage.name}\n")
    latest = autobuilds / f"latest-stage3-{arch}-{flavor}.txt"
    body = (
        f"# Latest as of {stamp}\n# ts=1795000000\n{relative} {stage.stat().st_size}\n"
    ).encode()
    latest.write_bytes(key.clearsign(body) if sign_latest else body)
    layout = Layout(root, stage, latest, relative)
    if snapshot is not None:
        snapshots = root / "snapshots"
        snapshots.mkdir(parents=True, exist_ok=True)
        layout.snapshot = snapshots / "gentoo-latest.tar.xz"
        shutil.copyfile(snapshot, layout.snapshot)
        gpgsig = layout.snapshot.with_name(layout.snapshot.name + ".gpgsig")
        gpgsig.write_bytes(key.detach_sign(layout.snapshot))
        md5 = hashlib.md5(layout.snapshot.read_bytes()).hexdigest()
        layout.snapshot.with_name(layout.snapshot.name + ".md5sum").write_text(
            f"{md5}  {layout.snapshot.name}\n"
        )
    return layout


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=N-`` support, a request log and injectable faults."""

    requests: MutableSequence[str]
    faults: MutableMapping[str, int]  # path → bytes to send before cutting the connection (once)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start = 0
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and ranged.endswith("-"):
            start = int(ranged[len("bytes=") : -1])
        cut = self.faults.pop(self.path, None)
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
        if cut is not None:
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)


@contextlib.contextmanager
def serve(
    root: Path,
    requests: Optional[MutableSequence[str]] = None,
    faults: Optional[MutableMapping[str, int]] = None,
) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1 (a free port) in a thread; yield its URL.

    Every GET's path is appended to ``requests``; a path in ``faults`` is cut off
    after that many bytes, once.
    """
    handler = type(
        "Handler",
        (_Handler,),
        {
            "requests": requests if requests is not None else [],
            "faults": faults if faults is not None else {},
        },
    )

    def make(*args: Any) -> _Handler:
        return handler(*args, directory=str(root))  # type: ignore[no-any-return]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def settings(mirror: str, cache_dir: Path, keyring: Path, **changes: Any) -> Any:
    """Settings for the test mirror (the defaults otherwise)."""
    from gentoobootstrap.config.settings import Settings

    return dataclasses.replace(
        Settings(), mirror=mirror, cache_dir=cache_dir, keyring=keyring, arch="amd64", **changes
    )
