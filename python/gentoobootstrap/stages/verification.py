"""Check OpenPGP signatures against ``KEYRING`` and DIGESTS files against downloads.

Each check imports only ``KEYRING``'s keys into a throw-away GNUPGHOME (root's
keyring is never touched) and trusts gpg's ``--status-fd`` output, not its exit
status: a signature counts only as a ``VALIDSIG`` whose primary-key fingerprint
(its last field) is one of ``KEYRING``'s primary keys, so a signing subkey of
such a key is fine and any other signer is refused.  Of a clear-signed file
only the body gpg itself extracts is used, never text around the armor.

:func:`verified` and :func:`verify_snapshot` apply ``VERIFY``'s policy to a download:
what must be checked, and what is only warned about.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from gentoobootstrap import runner
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.errors import VerificationError
from gentoobootstrap.stages import download

log = logging.getLogger(__name__)

#: The digests every DIGESTS check requires (name in the file → hashlib constructor).
ALGORITHMS: dict[str, Callable[[], Any]] = {"SHA512": hashlib.sha512, "BLAKE2B": hashlib.blake2b}
CLEARSIGN_HEADER = b"-----BEGIN PGP SIGNED MESSAGE-----"
#: Status keywords that make a verification fail whatever else gpg said.
_BAD = {
    "BADSIG": "a bad signature (the file was changed after signing)",
    "EXPKEYSIG": "a signature by an expired key (update KEYRING)",
    "REVKEYSIG": "a signature by a revoked key",
    "EXPSIG": "an expired signature",
}
_GPG = ("--batch", "--no-tty", "--no-autostart", "--no-options", "--no-auto-key-retrieve")


@dataclass(frozen=True)
class Keyring:
    """A throw-away GNUPGHOME holding ``KEYRING``'s keys, and their primary fingerprints."""

    home: Path
    primaries: frozenset[str]

    def gpg(self, *args: Union[str, Path]) -> str:
        """Run gpg on this home with the status on stdout; its exit status is not trusted."""
        argv: list[Union[str, Path]] = ["gpg", "--homedir", self.home, *_GPG, "--status-fd", "1"]
        return str(runner.run([*argv, *args], check=False).stdout)


@contextlib.contextmanager
def keyring(path: Path) -> Iterator[Keyring]:
    """Import ``path`` into a fresh GNUPGHOME, removed again on leaving."""
    if not path.is_file():
        raise VerificationError(
            f"KEYRING {path}: no such file; install the Gentoo release keys "
            "(sec-keys/openpgp-keys-gentoo-release) or point KEYRING at a key file"
        )
    with tempfile.TemporaryDirectory(prefix="gentoobootstrap-gnupg-") as home:
        os.chmod(home, 0o700)
        base: list[Union[str, Path]] = ["gpg", "--homedir", home, *_GPG]
        runner.run([*base, "--import", path], check=False)
        listing = runner.output([*base, "--with-colons", "--fixed-list-mode", "--list-keys"])
        primaries = frozenset(primary_fingerprints(listing))
        if not primaries:
            raise VerificationError(f"KEYRING {path}: holds no OpenPGP public key")
        yield Keyring(Path(home), primaries)


def primary_fingerprints(colons: str) -> Iterator[str]:
    """The fingerprints of the primary keys in ``gpg --with-colons`` output."""
    after_pub = False
    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            after_pub = True
        elif fields[0] == "fpr" and after_pub:
            yield fields[9].upper()
            after_pub = False
        elif fields[0] in ("sub", "sec", "ssb"):
            after_pub = False


def check_status(status: str, allowed: Iterable[str], what: str) -> str:
    """The primary fingerprint of the accepted signer in gpg status output, or VerificationError."""
    allowed = {fpr.upper() for fpr in allowed}
    signers, problems = [], []
    for line in status.splitlines():
        if not line.startswith("[GNUPG:] "):
            continue
        keyword, *fields = line[len("[GNUPG:] ") :].split()
        if keyword in _BAD:
            problems.append(_BAD[keyword])
        elif keyword == "ERRSIG":
            key = fields[0] if fields else "?"
            if len(fields) >= 6 and fields[5] == "9":
                problems.append(f"a signature by key {key}, which is not in KEYRING")
            else:
                problems.append(f"a signature by key {key} that gpg cannot check")
        elif keyword == "VALIDSIG" and len(fields) >= 10:
            signers.append(fields[-1].upper())
    foreign = [fpr for fpr in signers if fpr not in allowed]
    problems += [f"a signature by {fpr}, which is not a key in KEYRING" for fpr in foreign]
    if problems:
        raise VerificationError(f"{what}: refused: {problems[0]}")
    if not signers:
        raise VerificationError(f"{what}: refused: no valid signature")
    return signers[0]


def is_clearsigned(data: bytes) -> bool:
    return data.lstrip().startswith(CLEARSIGN_HEADER)


def verify_clearsigned(ring: Keyring, data: bytes, what: str) -> bytes:
    """The body of clear-signed ``data`` as gpg extracts it, once its signature is accepted."""
    signed, body = ring.home / "signed.asc", ring.home / "body"
    signed.write_bytes(data)
    with contextlib.suppress(FileNotFoundError):
        body.unlink()
    status = ring.gpg("--output", body, "--decrypt", signed)
    signer = check_status(status, ring.primaries, what)
    log.info("%s: good signature by %s", what, signer)
    return body.read_bytes()


def verify_detached(ring: Keyring, path: Path, signature: bytes, what: str) -> float:
    """Accept ``path`` only if ``signature`` (a detached .asc/.gpgsig) is good; when it
    was made (see :func:`signed_at`)."""
    sig = ring.home / "detached.sig"
    sig.write_bytes(signature)
    status = ring.gpg("--verify", sig, path)
    signer = check_status(status, ring.primaries, what)
    log.info("%s: good signature by %s", what, signer)
    return signed_at(status)


def signed_at(status: str) -> float:
    """When the newest good signature in gpg status output was made (seconds since the
    epoch; 0 when gpg did not say).  Only meaningful once :func:`check_status` accepted it."""
    times = [0.0]
    for line in status.splitlines():
        fields = line.split()
        if fields[:2] == ["[GNUPG:]", "VALIDSIG"] and len(fields) >= 5:
            stamp = fields[4]  # seconds, or ISO 8601 (with a T) from some gpg versions
            with contextlib.suppress(ValueError):
                if "T" in stamp:
                    moment = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%S")
                    times.append(moment.replace(tzinfo=datetime.timezone.utc).timestamp())
                else:
                    times.append(float(stamp))
    return max(times)


def unsigned_body(data: bytes) -> bytes:
    """The body of a clear-signed file without checking it (VERIFY=checksum/none only)."""
    if not is_clearsigned(data):
        return data
    lines = data.decode(errors="replace").splitlines()
    body: list[str] = []
    in_header, in_body = True, False
    for line in lines:
        if line.startswith("-----BEGIN PGP SIGNED MESSAGE"):
            in_header = True
        elif in_header:
            in_header = line.strip() != ""
            in_body = not in_header
        elif line.startswith("-----BEGIN PGP SIGNATURE"):
            break
        elif in_body:
            body.append(line[2:] if line.startswith("- ") else line)
    return ("\n".join(body) + "\n").encode()


def parse_digests(text: str) -> dict[str, dict[str, str]]:
    """``file basename → {ALGORITHM: hexdigest}`` from a DIGESTS file's ``# X HASH`` blocks."""
    result: dict[str, dict[str, str]] = {}
    algorithm = None
    for line in text.splitlines():
        header = re.fullmatch(r"#\s*([A-Za-z0-9]+)\s+HASH\s*", line)
        if header:
            algorithm = header.group(1).upper()
            continue
        fields = line.split()
        if algorithm is None or len(fields) != 2 or line.startswith("#"):
            continue
        digest, name = fields
        if not re.fullmatch(r"[0-9a-fA-F]+", digest):
            continue
        # Old DIGESTS carried the absolute path of the build host.
        result.setdefault(os.path.basename(name.lstrip("*")), {})[algorithm] = digest.lower()
    return result


def file_digests(path: Path, algorithms: Iterable[str] = ALGORITHMS) -> dict[str, str]:
    """Every digest of ``path`` in one streaming pass."""
    hashes = {name: ALGORITHMS[name]() for name in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(2**20):
            for h in hashes.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashes.items()}


def check_digests(path: Path, digests: Mapping[str, Mapping[str, str]], name: str) -> None:
    """``path`` (published as ``name``) must match both its SHA512 and BLAKE2B entries."""
    entry = digests.get(name)
    if not entry:
        raise VerificationError(f"{name}: not listed in its DIGESTS file")
    missing = [a for a in ALGORITHMS if a not in entry]
    if missing:
        raise VerificationError(f"{name}: its DIGESTS file has no {' or '.join(missing)} digest")
    actual = file_digests(path)
    for algorithm in ALGORITHMS:
        if actual[algorithm] != entry[algorithm]:
            raise VerificationError(
                f"{name}: {algorithm} digest mismatch: the download is corrupt or was tampered with"
            )
    log.info("%s: SHA512 and BLAKE2B digests match", name)


# -- what VERIFY asks of a download ---------------------------------------------------------


@dataclass(frozen=True)
class Source:
    url: str
    name: str  # the tarball's basename
    proxy: str = ""
    _beside: dict[str, Optional[bytes]] = field(default_factory=dict, compare=False, repr=False)

    def beside(self, suffix: str) -> Optional[bytes]:
        """The file ``url + suffix`` (None when there is none), read from the mirror once:
        what identifies a download is what verifies it."""
        if suffix not in self._beside:
            self._beside[suffix] = download.read_optional(self.url + suffix, proxy=self.proxy)
        return self._beside[suffix]


def checks_signatures(settings: Settings) -> bool:
    """Whether VERIFY asks for signatures, and so for KEYRING and the files that carry them."""
    return settings.verify == "signature"


def verified(
    settings: Settings,
    keys: Keys,
    source: Source,
    work: Path,
    fetch: Callable[[], Path],
    *,
    local: bool = False,
) -> Path:
    """``fetch()``'s tarball, checked against what sits beside ``source`` as VERIFY asks."""
    digests, signed = _digests(keys, source, work)
    asc = source.beside(".asc") if checks_signatures(settings) else None
    tarball = fetch()
    if digests is not None:
        check_digests(tarball, digests, source.name)
    ring = keys() if asc is not None else None
    if ring is not None and asc is not None:
        verify_detached(ring, tarball, asc, source.name)
        signed = True
    _require(settings, source, signed, digests is not None, local)
    return tarball


def _digests(
    keys: Keys, source: Source, work: Path
) -> tuple[Optional[dict[str, dict[str, str]]], bool]:
    """The parsed DIGESTS beside ``source`` (None if absent) and whether its signature passed.

    Today's DIGESTS are clear-signed; older ones came with a detached ``.DIGESTS.asc``.
    """
    digests = source.beside(".DIGESTS")
    if digests is None:
        return None, False
    what = f"{source.name}.DIGESTS"
    signed = False
    ring = keys()
    if is_clearsigned(digests):
        if ring is not None:
            digests = verify_clearsigned(ring, digests, what)
            signed = True
        else:
            digests = unsigned_body(digests)
    elif ring is not None:
        asc = source.beside(".DIGESTS.asc")
        if asc is not None:
            (work / what).write_bytes(digests)
            verify_detached(ring, work / what, asc, what)
            signed = True
    return parse_digests(digests.decode(errors="replace")), signed


def _require(settings: Settings, source: Source, signed: bool, digested: bool, local: bool) -> None:
    """What VERIFY asks beyond what was checked already; warn about what it does not."""
    if settings.verify == "none":
        log.warning(
            "VERIFY=none: %s was NOT verified; anyone between here and %s could have changed it",
            source.name,
            source.url,
        )
        return
    if local and not signed and not digested:
        log.info("%s has no .DIGESTS or .asc beside it; trusted as a local file", source.name)
        return
    if settings.verify == "signature" and not signed:
        raise VerificationError(
            f"{source.name}: no signature (neither a signed .DIGESTS nor a .asc beside it); "
            "sign it or set VERIFY=checksum"
        )
    if not digested and settings.verify == "checksum":
        raise VerificationError(f"{source.name}: no .DIGESTS file beside it (VERIFY=checksum)")
    if settings.verify == "checksum":
        log.warning(
            "VERIFY=checksum: %s matches its DIGESTS, but no signature was checked", source.name
        )


def verify_snapshot(
    settings: Settings,
    ring: Optional[Keyring],
    tarball: Path,
    name: str,
    signature: Optional[bytes],
) -> float:
    """When the snapshot's checked signature was made (0 when none was checked)."""
    if ring is not None:
        if signature is None:
            raise VerificationError(f"{name}: no .gpgsig beside it on the mirror")
        return verify_detached(ring, tarball, signature, name)
    if settings.verify == "checksum":
        log.warning("VERIFY=checksum: snapshots have no DIGESTS; %s was NOT verified", name)
    else:
        log.warning("VERIFY=none: the snapshot %s was NOT verified", name)
    return 0.0


#: Returns the imported KEYRING for VERIFY=signature, None for the other modes.
Keys = Callable[[], Optional[Keyring]]


@contextlib.contextmanager
def keys_for(settings: Settings) -> Iterator[Keys]:
    """KEYRING imported on first use: a cache hit or an unsigned local stage4 needs no gpg."""
    with contextlib.ExitStack() as stack:
        imported: list[Keyring] = []

        def keys() -> Optional[Keyring]:
            if not checks_signatures(settings):
                return None
            if not imported:
                imported.append(stack.enter_context(keyring(settings.keyring)))
            return imported[0]

        yield keys
