"""Signature status parsing and DIGESTS handling, with gpg faked (pytest-subprocess)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pytest_subprocess import FakeProcess

from gentoobootstrap.errors import VerificationError
from gentoobootstrap.stages import verification

GENTOO = "13EBBDBEDE7A12775DFDB1BABB572E0E2D182910"
SUBKEY = "534E4209AB49EEE1C19D96162C44695DB9F6043D"
OTHER = "ABCDEF0123456789ABCDEF0123456789ABCDEF01"


def validsig(signing: str, primary: str) -> str:
    return (
        f"[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG {signing[-16:]} Gentoo\n"
        f"[GNUPG:] VALIDSIG {signing} 2026-11-22 1795000000 0 4 0 1 10 01 {primary}\n"
        "[GNUPG:] TRUST_UNDEFINED 0 pgp\n"
    )


def test_subkey_of_an_allowed_primary_is_accepted() -> None:
    assert verification.check_status(validsig(SUBKEY, GENTOO), {GENTOO}, "x") == GENTOO


def test_primary_is_compared_case_insensitively() -> None:
    assert verification.check_status(validsig(SUBKEY, GENTOO.lower()), {GENTOO}, "x") == GENTOO


def test_foreign_primary_is_refused_even_when_gpg_calls_it_good() -> None:
    with pytest.raises(VerificationError, match=f"x: refused: a signature by {OTHER}"):
        verification.check_status(validsig(OTHER, OTHER), {GENTOO}, "x")


def test_allowed_subkey_fingerprint_is_not_enough() -> None:
    """Only the last field (the primary key) counts, not the signing key's fingerprint."""
    with pytest.raises(VerificationError, match="not a key in KEYRING"):
        verification.check_status(validsig(GENTOO, OTHER), {GENTOO}, "x")


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("[GNUPG:] NEWSIG\n[GNUPG:] BADSIG 2C44695DB9F6043D Gentoo\n", "bad signature"),
        (
            "[GNUPG:] ERRSIG 2C44695DB9F6043D 22 10 01 1795000000 9 -\n[GNUPG:] NO_PUBKEY X\n",
            "not in KEYRING",
        ),
        ("[GNUPG:] EXPKEYSIG 2C44695DB9F6043D Gentoo\n" + validsig(SUBKEY, GENTOO), "expired key"),
        ("[GNUPG:] REVKEYSIG 2C44695DB9F6043D Gentoo\n" + validsig(SUBKEY, GENTOO), "revoked key"),
        ("[GNUPG:] NODATA 1\n", "no valid signature"),
        ("", "no valid signature"),
        ("gpg: Good signature\nVALIDSIG " + GENTOO, "no valid signature"),
    ],
)
def test_bad_status_is_refused(status: str, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        verification.check_status(status, {GENTOO}, "x")


def test_a_bad_signature_beside_a_good_one_is_refused() -> None:
    status = validsig(SUBKEY, GENTOO) + "[GNUPG:] NEWSIG\n[GNUPG:] BADSIG 0 Mallory\n"
    with pytest.raises(VerificationError, match="bad signature"):
        verification.check_status(status, {GENTOO}, "x")


COLONS = f"""tru::1:1795000000:0:3:1:5
pub:-:4096:1:BB572E0E2D182910:1248898617:::-:::sc::::::23::0:
fpr:::::::::{GENTOO}:
uid:-::::1248898617::A::Gentoo Linux Release Engineering (Automated Weekly Release Key)::::::::::0:
sub:-:4096:1:2C44695DB9F6043D:1564689025:::::s::::::23:
fpr:::::::::{SUBKEY}:
"""


def test_primary_fingerprints_skip_subkeys() -> None:
    assert list(verification.primary_fingerprints(COLONS)) == [GENTOO]


def test_clearsigned_body_comes_from_gpg_and_status_decides(
    fp: FakeProcess, tmp_path: Path
) -> None:
    keyring = tmp_path / "keys.asc"
    keyring.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    fp.register([fp.any(min=1), "--import", fp.any()])
    fp.register([fp.any(min=1), "--list-keys"], stdout=COLONS)

    def write_body(process: object) -> None:
        argv = process.args  # type: ignore[attr-defined]
        Path(argv[argv.index("--output") + 1]).write_bytes(b"signed body\n")

    fp.register(
        [fp.any(min=1), "--status-fd", "1", "--output", fp.any(), "--decrypt", fp.any()],
        stdout=validsig(SUBKEY, GENTOO),
        returncode=0,
        callback=write_body,
    )
    # gpg's exit status is not trusted: 2 with a VALIDSIG by a KEYRING key is still good.
    fp.register(
        [fp.any(min=1), "--status-fd", "1", "--verify", fp.any(min=2)],
        stdout=validsig(SUBKEY, GENTOO),
        returncode=2,
    )
    data = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nforged\n"
    with verification.keyring(keyring) as ring:
        assert ring.primaries == {GENTOO}
        assert verification.verify_clearsigned(ring, data, "latest") == b"signed body\n"
        verification.verify_detached(ring, keyring, b"sig", "file")
    # the throw-away GNUPGHOME is gone
    assert not ring.home.exists()


def test_exit_status_zero_without_validsig_is_refused(fp: FakeProcess, tmp_path: Path) -> None:
    keyring = tmp_path / "keys.asc"
    keyring.write_text("keys")
    fp.register([fp.any(min=1), "--import", fp.any()])
    fp.register([fp.any(min=1), "--list-keys"], stdout=COLONS)
    fp.register([fp.any(min=1), "--verify", fp.any(min=2)], stdout="[GNUPG:] NEWSIG\n")
    with verification.keyring(keyring) as ring, pytest.raises(VerificationError):
        verification.verify_detached(ring, keyring, b"sig", "file")


def test_missing_keyring_names_the_setting(tmp_path: Path) -> None:
    with (
        pytest.raises(VerificationError, match=r"KEYRING .*no such file"),
        verification.keyring(tmp_path / "absent.asc"),
    ):
        pass


def test_empty_keyring_is_refused(fp: FakeProcess, tmp_path: Path) -> None:
    keyring = tmp_path / "keys.asc"
    keyring.write_text("")
    fp.register([fp.any(min=1), "--import", fp.any()])
    fp.register([fp.any(min=1), "--list-keys"], stdout="")
    with (
        pytest.raises(VerificationError, match="holds no OpenPGP public key"),
        verification.keyring(keyring),
    ):
        pass


DIGESTS = """# BLAKE2B HASH
{b2}  /var/tmp/catalyst/builds/23.0-default/stage3-amd64-openrc-20261122T170359Z.tar.xz
aa  stage3-amd64-openrc-20261122T170359Z.tar.xz.CONTENTS.gz
# SHA512 HASH
{sha}  stage3-amd64-openrc-20261122T170359Z.tar.xz
# MD5 HASH
00  stage3-amd64-openrc-20261122T170359Z.tar.xz
"""


def digests_for(data: bytes) -> str:
    return DIGESTS.format(
        b2=hashlib.blake2b(data).hexdigest(), sha=hashlib.sha512(data).hexdigest().upper()
    )


def test_parse_digests_by_basename() -> None:
    parsed = verification.parse_digests(digests_for(b"x"))
    entry = parsed["stage3-amd64-openrc-20261122T170359Z.tar.xz"]
    assert entry["SHA512"] == hashlib.sha512(b"x").hexdigest()
    assert entry["BLAKE2B"] == hashlib.blake2b(b"x").hexdigest()
    assert entry["MD5"] == "00"


def test_check_digests(tmp_path: Path) -> None:
    name = "stage3-amd64-openrc-20261122T170359Z.tar.xz"
    stage = tmp_path / "dl"
    stage.write_bytes(b"stage")
    verification.check_digests(stage, verification.parse_digests(digests_for(b"stage")), name)
    with pytest.raises(VerificationError, match="SHA512 digest mismatch"):
        verification.check_digests(stage, verification.parse_digests(digests_for(b"other")), name)
    # a right SHA512 does not excuse a wrong BLAKE2B
    mixed = verification.parse_digests(digests_for(b"stage"))
    mixed[name]["BLAKE2B"] = hashlib.blake2b(b"other").hexdigest()
    with pytest.raises(VerificationError, match="BLAKE2B digest mismatch"):
        verification.check_digests(stage, mixed, name)
    with pytest.raises(VerificationError, match="not listed"):
        verification.check_digests(stage, verification.parse_digests(digests_for(b"x")), "other")


def test_both_algorithms_are_required(tmp_path: Path) -> None:
    stage = tmp_path / "s"
    stage.write_bytes(b"s")
    only_sha = f"# SHA512 HASH\n{hashlib.sha512(b's').hexdigest()}  s\n"
    with pytest.raises(VerificationError, match="no BLAKE2B digest"):
        verification.check_digests(stage, verification.parse_digests(only_sha), "s")


def test_unsigned_body_strips_armor_and_dash_escapes() -> None:
    data = (
        b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n# comment\n- -----x\n"
        b"a/b.tar.xz 1\n-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n"
    )
    assert verification.unsigned_body(data) == b"# comment\n-----x\na/b.tar.xz 1\n"
    assert verification.unsigned_body(b"plain\n") == b"plain\n"


def test_when_the_newest_good_signature_was_made() -> None:
    assert verification.signed_at(validsig(SUBKEY, GENTOO)) == 1795000000
    two = validsig(SUBKEY, GENTOO) + validsig(SUBKEY, GENTOO).replace("1795000000", "1795000600")
    assert verification.signed_at(two) == 1795000600
    iso = validsig(SUBKEY, GENTOO).replace("1795000000", "20261122T004500")
    assert verification.signed_at(iso) == 1795308300
    assert verification.signed_at("[GNUPG:] GOODSIG 0123 x\n") == 0
