"""The latest-stage3 file and the download module without a network."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gentoobootstrap.errors import StageError
from gentoobootstrap.stages import download, obtain

SIGNED = """-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA512

# Latest as of Sun, 22 Nov 2026 17:03:59 +0000
# ts=1795000000
20261122T170359Z/stage3-amd64-openrc-20261122T170359Z.tar.xz 281234567
-----BEGIN PGP SIGNATURE-----

iHUEARYKAB0WIQQ=
-----END PGP SIGNATURE-----
"""


def test_parse_latest_signed_and_plain() -> None:
    expected = "20261122T170359Z/stage3-amd64-openrc-20261122T170359Z.tar.xz"
    assert obtain.parse_latest(SIGNED) == expected
    plain = "# Latest as of ...\n20261115/stage3-amd64-20261115.tar.bz2 1\n" + expected + " 2\n"
    assert obtain.parse_latest(plain) == expected  # the last one wins


@pytest.mark.parametrize(
    "body",
    ["# nothing\n", "../../etc/stage3.tar.xz 1\n", "/abs/stage3.tar.xz 1\n", "a/../b.tar.xz 1\n"],
)
def test_parse_latest_refuses(body: str) -> None:
    with pytest.raises(StageError):
        obtain.parse_latest(body)


def test_file_url_download_and_missing(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 3_000_000)
    dest = download.download(source.as_uri(), tmp_path / "dest.bin")
    assert dest.read_bytes() == source.read_bytes()
    assert not list(tmp_path.glob(".*.part"))
    assert download.read_optional((tmp_path / "absent").as_uri()) is None
    with pytest.raises(download.DownloadError) as e:
        download.download((tmp_path / "absent").as_uri(), tmp_path / "d2")
    assert e.value.missing
    assert not (tmp_path / "d2").exists()


def test_small_read_has_a_limit(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 100)
    with pytest.raises(download.DownloadError, match="larger than 10 bytes"):
        download.read(big.as_uri(), limit=10)


def test_progress_is_rate_limited(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(download.time, "monotonic", lambda: clock[0])
    caplog.set_level(logging.INFO)
    progress = download._Progress("stage.tar.xz")
    for step in range(1, 11):
        clock[0] += 1
        progress.update(step * 10_000_000, 100_000_000)
    progress.update(100_000_000, 100_000_000, final=True)
    # Only the progress lines: time.monotonic is patched for every module.
    lines = [r.message for r in caplog.records if r.message.startswith("stage.tar.xz:")]
    assert lines == [
        "stage.tar.xz: 50% of 100.0 MB, 10.0 MB/s",
        "stage.tar.xz: 100% of 100.0 MB, 10.0 MB/s",
        "stage.tar.xz: 100% of 100.0 MB, 10.0 MB/s",
    ]


@pytest.mark.parametrize(
    ("name", "cached", "older"),
    [
        (
            "stage3-amd64-openrc-20251122T170359Z.tar.xz",
            "stage3-amd64-openrc-20261122T170359Z.tar.zst",
            True,
        ),
        (
            "stage3-amd64-openrc-20261122T170358Z.tar.xz",
            "stage3-amd64-openrc-20261122T170359Z.tar.xz",
            True,
        ),
        (
            "stage3-amd64-openrc-20261129T000000Z.tar.xz",
            "stage3-amd64-openrc-20261122T170359Z.tar.zst",
            False,
        ),
        (
            "stage3-amd64-openrc-20261122T170359Z.tar.xz",
            "stage3-amd64-openrc-20261122T170359Z.tar.zst",
            False,
        ),
        # The old date-only names: a day is before any time of a later day.
        ("stage3-amd64-20200101.tar.bz2", "stage3-amd64-openrc-20200102T000000Z.tar.xz", True),
        ("stage3-amd64-openrc-20200101T120000Z.tar.xz", "stage3-amd64-20200101.tar.bz2", False),
        # Without a date in either name there is nothing to compare.
        ("stage4-custom.tar.xz", "stage3-amd64-openrc-20261122T170359Z.tar.zst", False),
        ("stage3-amd64-openrc-20251122T170359Z.tar.xz", "stage4-custom.tar.xz@0123", False),
    ],
)
def test_older_release(name: str, cached: str, older: bool) -> None:
    assert obtain.is_older(name, cached) is older


def test_release_stamp() -> None:
    assert obtain.release("stage3-amd64-openrc-20261122T170359Z.tar.xz") == ("20261122", "170359")
    assert obtain.release("stage3-amd64-20200101.tar.bz2") == ("20200101", "000000")
    assert obtain.release("gentoo-latest.tar.xz") is None
