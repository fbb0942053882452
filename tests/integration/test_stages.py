"""Stages end to end: real gpg, a real HTTP mirror on 127.0.0.1, a real cache directory.

No root needed: nothing here touches a disk device.
"""

from __future__ import annotations

import bz2
import dataclasses
import json
import logging
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gentoobootstrap import runner
from gentoobootstrap.errors import StageError, ToolNotFoundError, VerificationError
from gentoobootstrap.scripts import prefetch
from gentoobootstrap.stages import cache, obtain, unpack
from gentoobootstrap.stages.download import DownloadError
from support import REPO
from support.mirror import (
    STAMP,
    SigningKey,
    build_mirror,
    make_tarball,
    serve,
    settings,
    signing_key,
)

STAGE3 = "stage3-amd64-openrc-20261122T170359Z"


@pytest.fixture(scope="module")
def key() -> Iterator[SigningKey]:
    with signing_key() as k:
        yield k


@pytest.fixture(scope="module")
def foreign_key() -> Iterator[SigningKey]:
    with signing_key("Mallory") as k:
        yield k


@pytest.fixture
def stage(tmp_path: Path) -> Path:
    return make_tarball(tmp_path / "stage.tar.xz", size=200_000)


@pytest.fixture
def keyring(tmp_path: Path, key: SigningKey) -> Path:
    return key.export(tmp_path / "gentoo-release.asc")


@pytest.fixture
def requests() -> list[str]:
    return []


def tar_stream(path: Path) -> bytes:
    """The uncompressed tar stream of a .tar.xz/.tar.zst (what unpacking sees)."""
    tool = "zstd" if path.suffix == ".zst" else "xz"
    return subprocess.run([tool, "-dc", str(path)], check=True, capture_output=True).stdout


def downloads(requests: list[str], suffix: str = ".tar.xz") -> list[str]:
    return [r for r in requests if r.endswith(suffix)]


def assert_clean(cache_dir: Path) -> None:
    """Nothing unverified stays: no scratch left, no entry without metadata holds a file."""
    assert not list((cache_dir / "tmp").iterdir()) if (cache_dir / "tmp").exists() else True
    for entry in cache.entries(cache_dir):
        if entry.meta is None:
            assert {p.name for p in entry.path.iterdir()} <= {".lock"}


def test_good_stage_is_verified_cached_and_identical(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path, requests: list[str]
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    with serve(layout.root, requests) as url:
        s = settings(url, tmp_path / "cache", keyring)
        got = obtain.stage(s)
        again = obtain.stage(s)
    assert got == again
    assert got.parent == tmp_path / "cache" / "stage3" / "amd64-openrc"
    assert got.name == f"{STAGE3}.tar.zst"
    assert tar_stream(got) == tar_stream(stage)  # the same bytes land on the disk
    listing = subprocess.run(["zstd", "--list", "-v", str(got)], capture_output=True, text=True)
    assert f"({len(tar_stream(stage))} B)" in listing.stdout  # create sizes root from this
    meta = json.loads((got.parent / "meta.json").read_text())
    assert meta["name"] == f"{STAGE3}.tar.xz"
    assert meta["verify"] == "signature"
    assert meta["source"] == f"{url}/releases/amd64/autobuilds/{layout.relative}"
    assert len(downloads(requests)) == 1  # the second obtain did not ask the mirror at all
    assert len([r for r in requests if "latest-stage3" in r]) == 1
    assert_clean(tmp_path / "cache")


def test_tampered_stage_is_refused_and_not_cached(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    data = bytearray(layout.stage.read_bytes())
    data[len(data) // 2] ^= 1
    layout.stage.write_bytes(bytes(data))
    with serve(layout.root) as url, pytest.raises(VerificationError) as e:
        obtain.stage(settings(url, tmp_path / "cache", keyring))
    assert "digest mismatch" in str(e.value)
    assert "\n" not in str(e.value)
    assert_clean(tmp_path / "cache")


def test_tampered_signature_file_is_refused(
    tmp_path: Path, key: SigningKey, foreign_key: SigningKey, stage: Path, keyring: Path
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    asc = layout.stage.with_name(layout.stage.name + ".asc")
    asc.write_bytes(foreign_key.detach_sign(layout.stage))
    with serve(layout.root) as url, pytest.raises(VerificationError, match="not in KEYRING"):
        obtain.stage(settings(url, tmp_path / "cache", keyring))
    assert_clean(tmp_path / "cache")


def test_foreign_signer_is_refused(
    tmp_path: Path, foreign_key: SigningKey, stage: Path, keyring: Path, requests: list[str]
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, foreign_key)
    with serve(layout.root, requests) as url, pytest.raises(VerificationError) as e:
        obtain.stage(settings(url, tmp_path / "cache", keyring))
    assert "latest-stage3-amd64-openrc.txt: refused" in str(e.value)
    assert "not in KEYRING" in str(e.value)
    assert not downloads(requests)  # refused before the big download
    assert_clean(tmp_path / "cache")


def test_foreign_signed_digests_are_refused(
    tmp_path: Path, key: SigningKey, foreign_key: SigningKey, stage: Path, keyring: Path
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key, digests_key=foreign_key)
    with serve(layout.root) as url, pytest.raises(VerificationError, match=r"\.DIGESTS: refused"):
        obtain.stage(settings(url, tmp_path / "cache", keyring))


def test_unsigned_latest_file_is_accepted_with_a_warning(
    tmp_path: Path,
    key: SigningKey,
    stage: Path,
    keyring: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key, sign_latest=False)
    with serve(layout.root) as url:
        got = obtain.stage(settings(url, tmp_path / "cache", keyring))
    assert tar_stream(got) == tar_stream(stage)
    assert "is not signed" in caplog.text


def test_digests_with_absolute_paths(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key, absolute_paths=True)
    assert (
        "/var/tmp/catalyst/builds/"
        in layout.stage.with_name(layout.stage.name + ".DIGESTS").read_text()
    )
    with serve(layout.root) as url:
        got = obtain.stage(settings(url, tmp_path / "cache", keyring))
    assert tar_stream(got) == tar_stream(stage)


def test_mirror_down_without_cache_fails(tmp_path: Path, keyring: Path) -> None:
    with serve(tmp_path) as url:
        pass  # the port is free again: connections are refused
    with pytest.raises(DownloadError, match="cannot download"):
        obtain.stage(settings(url, tmp_path / "cache", keyring))


def test_mirror_down_uses_the_cache_with_a_warning(
    tmp_path: Path,
    key: SigningKey,
    stage: Path,
    keyring: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    with serve(layout.root) as url:
        s = settings(url, tmp_path / "cache", keyring, clean_cache=0)  # always asks the mirror
        got = obtain.stage(s)
    assert obtain.stage(s) == got
    assert "using the cached" in caplog.text


def age(entry_dir: Path, days: float) -> None:
    """Pretend the mirror last confirmed the entry ``days`` ago."""
    meta = json.loads((entry_dir / "meta.json").read_text())
    meta["checked_at"] -= days * cache.DAY
    (entry_dir / "meta.json").write_text(json.dumps(meta))


def test_cache_ageing(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path, requests: list[str]
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    with serve(layout.root, requests) as url:
        s = settings(url, tmp_path / "cache", keyring, clean_cache=14)
        first = obtain.stage(s)
        entry_dir = first.parent
        age(entry_dir, 13)
        assert obtain.stage(s) == first
        assert len(requests) == 4  # latest, DIGESTS, .asc, tarball: all from the first obtain

        age(entry_dir, 2)  # 15 days: ask the mirror; it still has the same stage
        requests.clear()
        assert obtain.stage(s) == first
        assert [r.rsplit("/", 1)[-1] for r in requests] == ["latest-stage3-amd64-openrc.txt"]
        assert obtain.stage(s) == first  # confirmed: fresh again
        assert len(requests) == 1

        newer = make_tarball(tmp_path / "newer.tar.xz", {"etc/newer": b"2\n"})
        build_mirror(layout.root, newer, key, stamp="20261129T170000Z")
        age(entry_dir, 15)
        second = obtain.stage(s)
        assert second.name == "stage3-amd64-openrc-20261129T170000Z.tar.zst"
        assert tar_stream(second) == tar_stream(newer)
        assert first.exists()  # kept one generation for a create still unpacking it

        newest = make_tarball(tmp_path / "newest.tar.xz", {"etc/newest": b"3\n"})
        build_mirror(layout.root, newest, key, stamp="20261206T170000Z")
        age(entry_dir, 15)
        third = obtain.stage(s)
        assert not first.exists()
        assert second.exists() and third.exists()
        assert sorted(p.name for p in entry_dir.iterdir()) == sorted(
            [".lock", "meta.json", second.name, third.name]
        )


def test_stronger_verify_does_not_reuse_a_weaker_entry(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path, requests: list[str]
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    with serve(layout.root, requests) as url:
        s = settings(url, tmp_path / "cache", keyring, verify="checksum")
        obtain.stage(s)
        obtain.stage(dataclasses.replace(s, verify="signature"))
    assert len(downloads(requests)) == 2


@pytest.mark.parametrize(
    ("verify", "warning"), [("checksum", "VERIFY=checksum"), ("none", "NOT verified")]
)
def test_weaker_verify_modes_skip_signatures_with_a_warning(
    verify: str,
    warning: str,
    tmp_path: Path,
    foreign_key: SigningKey,
    stage: Path,
    keyring: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stage signed by a key not in KEYRING is taken, with a warning, when VERIFY says so."""
    layout = build_mirror(tmp_path / "mirror", stage, foreign_key)
    with serve(layout.root) as url:
        got = obtain.stage(settings(url, tmp_path / "cache", keyring, verify=verify))
    assert tar_stream(got) == tar_stream(stage)
    assert any(r.levelno == logging.WARNING and warning in r.message for r in caplog.records)


def test_checksum_mode_still_refuses_a_tampered_stage(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    layout.stage.write_bytes(layout.stage.read_bytes() + b"\0")
    with serve(layout.root) as url, pytest.raises(VerificationError, match="mismatch"):
        obtain.stage(settings(url, tmp_path / "cache", keyring, verify="checksum"))
    assert_clean(tmp_path / "cache")


def test_file_mirror(tmp_path: Path, key: SigningKey, stage: Path, keyring: Path) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    got = obtain.stage(settings(layout.root.as_uri(), tmp_path / "cache", keyring))
    assert tar_stream(got) == tar_stream(stage)


def test_broken_transfer_resumes(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path, requests: list[str]
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    path = f"/releases/amd64/autobuilds/{layout.relative}"
    with serve(layout.root, requests, faults={path: 50_000}) as url:
        got = obtain.stage(settings(url, tmp_path / "cache", keyring))
    assert tar_stream(got) == tar_stream(stage)
    assert downloads(requests) == [path, path]


CHILD = """
import dataclasses, json, sys
from pathlib import Path
from gentoobootstrap import log
from gentoobootstrap.stages import obtain
from gentoobootstrap.config.settings import Settings
log.setup()
args = json.loads(sys.argv[1])
s = dataclasses.replace(Settings(), mirror=args["mirror"], arch="amd64",
                        cache_dir=Path(args["cache"]), keyring=Path(args["keyring"]))
print(obtain.stage(s))
"""


def test_parallel_cold_obtains_download_once(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path, requests: list[str]
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    with serve(layout.root, requests) as url:
        args = json.dumps(
            {"mirror": url, "cache": str(tmp_path / "cache"), "keyring": str(keyring)}
        )
        children = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, args], env=env, stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        outputs = [child.communicate(timeout=120)[0].strip() for child in children]
    assert [child.returncode for child in children] == [0, 0]
    assert outputs[0] == outputs[1]
    assert tar_stream(Path(outputs[0])) == tar_stream(stage)
    assert len(downloads(requests)) == 1


def test_stage4_local_file(tmp_path: Path) -> None:
    stage4 = make_tarball(tmp_path / "stage4-amd64.tar.xz", {"boot/vmlinuz": b"kernel"})
    # Nothing beside it to check a signature of: no KEYRING needed.
    absent = tmp_path / "no-keyring.asc"
    s = settings("http://127.0.0.1:9", tmp_path / "cache", absent, stage4_file=str(stage4))
    got = obtain.stage(s)
    assert got.parent.parent == tmp_path / "cache" / "stage4"  # a private copy
    assert got.read_bytes() == stage4.read_bytes()  # as it is: no recompression
    assert cache.recorded_member_count(got, tmp_path / "cache") == 1
    assert obtain.stage(s) == got
    make_tarball(stage4, {"boot/vmlinuz": b"kernel 2"})  # rebuilt: copied again
    again = obtain.stage(s)
    assert again == got and again.read_bytes() == stage4.read_bytes()


def test_stage4_local_file_checked_against_its_digests(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    s = settings("http://127.0.0.1:9", tmp_path / "cache", keyring, stage4_file=str(layout.stage))
    got = obtain.stage(s)
    assert got.read_bytes() == layout.stage.read_bytes()
    layout.stage.write_bytes(layout.stage.read_bytes() + b"\0")
    with pytest.raises(VerificationError, match="mismatch"):
        obtain.stage(s)


def test_stage4_local_file_must_be_a_regular_file(tmp_path: Path, keyring: Path) -> None:
    fifo = tmp_path / "stage4.tar.xz"
    os.mkfifo(fifo)  # opening it for reading must not wait for a writer
    s = settings("http://127.0.0.1:9", tmp_path / "cache", keyring, stage4_file=str(fifo))
    with pytest.raises(StageError, match=r"^STAGE4_FILE: .* is not a file$"):
        obtain.stage(s)


def test_meta_json_beside_a_local_stage4_proves_nothing(tmp_path: Path, keyring: Path) -> None:
    """A meta.json claiming the members were checked counts only inside CACHE_DIR."""
    (tmp_path / "builds").mkdir()
    evil = make_tarball(tmp_path / "builds" / "stage4.tar.xz", {"../../etc/cron.d/x": b"2"})
    moment = cache.now()
    forged = cache.Meta(evil.as_uri(), evil.name, evil.name, moment, moment, "signature", members=1)
    (evil.parent / "meta.json").write_text(json.dumps(dataclasses.asdict(forged)))
    assert cache.recorded_member_count(evil, tmp_path / "cache") is None
    s = settings("http://127.0.0.1:9", tmp_path / "cache", keyring, stage4_file=str(evil))
    with pytest.raises(StageError, match="outside the target"):
        obtain.stage(s)
    assert_clean(tmp_path / "cache")


def test_stage4_url(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path, requests: list[str]
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    with serve(layout.root, requests) as url:
        s = settings(
            url,
            tmp_path / "cache",
            keyring,
            stage4_file=f"{url}/{layout.stage.relative_to(layout.root)}",
        )
        got = obtain.stage(s)
        assert tar_stream(got) == tar_stream(stage)
        assert obtain.stage(s) == got
    assert len(downloads(requests)) == 1
    assert got.parent.parent.name == "stage4"


def test_the_files_beside_a_stage4_are_read_once_and_only_when_verify_needs_them(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path, requests: list[str]
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    with serve(layout.root, requests) as url:
        stage4 = f"{url}/{layout.stage.relative_to(layout.root)}"
        for verify, cache_dir in (("signature", "a"), ("checksum", "b")):
            requests.clear()
            s = settings(url, tmp_path / cache_dir, keyring, stage4_file=stage4, verify=verify)
            obtain.stage(s)
            suffixes = sorted(r.rpartition(".tar.xz")[2] for r in requests)
            # The DIGESTS identifies the stage4 and is checked; only a signature check needs .asc.
            expected = ["", ".DIGESTS", ".asc"] if verify == "signature" else ["", ".DIGESTS"]
            assert suffixes == expected


def test_stage4_url_without_signature_needs_verify_off(
    tmp_path: Path, keyring: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "www").mkdir()
    stage4 = make_tarball(tmp_path / "www" / "stage4.tar.xz")
    with serve(tmp_path / "www") as url:
        s = settings(url, tmp_path / "cache", keyring, stage4_file=f"{url}/stage4.tar.xz")
        with pytest.raises(VerificationError, match="no signature"):
            obtain.stage(s)
        got = obtain.stage(dataclasses.replace(s, verify="none"))
    assert tar_stream(got) == tar_stream(stage4)
    assert "NOT verified" in caplog.text


def test_stage4_missing_without_catalyst_spec(tmp_path: Path, keyring: Path) -> None:
    s = settings(
        "http://127.0.0.1:9", tmp_path / "c", keyring, stage4_file=str(tmp_path / "no.tar.xz")
    )
    with pytest.raises(StageError, match="set CATALYST_SPEC"):
        obtain.stage(s)


def test_catalyst_missing(tmp_path: Path, keyring: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gentoobootstrap.runner._SYSTEM_PATH", str(tmp_path / "nothing"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    spec = tmp_path / "stage4.spec"
    spec.write_text("target: stage4\n")
    s = settings(
        "http://127.0.0.1:9",
        tmp_path / "cache",
        keyring,
        stage4_file=str(tmp_path / "stage4.tar.xz"),
        catalyst_spec=spec,
    )
    with pytest.raises(ToolNotFoundError, match="catalyst not found: install dev-util/catalyst"):
        obtain.stage(s)


def test_catalyst_builds_the_stage4_once(
    tmp_path: Path, keyring: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "builds" / "stage4-amd64.tar.xz"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    # A stand-in catalyst that builds the target the spec names.
    make_tarball(tmp_path / "built.tar.xz", {"etc/built-by": b"catalyst\n"})
    (bin_dir / "catalyst").write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\nmkdir -p {target.parent}\n'
        f"cp {tmp_path / 'built.tar.xz'} {target}\n"
    )
    (bin_dir / "catalyst").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    spec = tmp_path / "stage4.spec"
    spec.write_text("target: stage4\n")
    s = settings(
        "http://127.0.0.1:9",
        tmp_path / "cache",
        keyring,
        stage4_file=str(target),
        catalyst_spec=spec,
    )
    got = obtain.stage(s)
    assert got.read_bytes() == target.read_bytes()
    assert obtain.stage(s) == got
    assert calls.read_text() == f"-f {spec}\n"  # built once


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    return make_tarball(
        tmp_path / "snapshot.tar.xz",
        {"gentoo/metadata/timestamp.chk": b"Sun, 22 Nov 2026 00:45:00 +0000\n"},
    )


def test_snapshot_verified_and_cached(
    tmp_path: Path, key: SigningKey, stage: Path, snapshot: Path, keyring: Path, requests: list[str]
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key, snapshot=snapshot)
    with serve(layout.root, requests) as url:
        s = settings(url, tmp_path / "cache", keyring, snapshot="latest")
        got = obtain.snapshot(s)
        assert got is not None and obtain.snapshot(s) == got
    assert tar_stream(got) == tar_stream(snapshot)
    assert len(downloads(requests)) == 1
    assert obtain.snapshot(dataclasses.replace(s, snapshot="")) is None


def test_snapshot_with_foreign_signature_is_refused(
    tmp_path: Path,
    key: SigningKey,
    foreign_key: SigningKey,
    stage: Path,
    snapshot: Path,
    keyring: Path,
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key, snapshot=snapshot)
    assert layout.snapshot is not None
    gpgsig = layout.snapshot.with_name(layout.snapshot.name + ".gpgsig")
    gpgsig.write_bytes(foreign_key.detach_sign(layout.snapshot))
    with serve(layout.root) as url, pytest.raises(VerificationError, match="not in KEYRING"):
        obtain.snapshot(settings(url, tmp_path / "cache", keyring, snapshot="latest"))
    assert_clean(tmp_path / "cache")


def test_snapshot_tampered_is_refused(
    tmp_path: Path, key: SigningKey, stage: Path, snapshot: Path, keyring: Path
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key, snapshot=snapshot)
    assert layout.snapshot is not None
    layout.snapshot.write_bytes(layout.snapshot.read_bytes() + b"\0")
    with serve(layout.root) as url, pytest.raises(VerificationError, match="bad signature"):
        obtain.snapshot(settings(url, tmp_path / "cache", keyring, snapshot="latest"))


def test_prefetch_fills_lists_and_cleans(
    tmp_path: Path,
    key: SigningKey,
    stage: Path,
    snapshot: Path,
    keyring: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key, snapshot=snapshot)
    conf = tmp_path / "conf"
    (conf / "variants").mkdir(parents=True)
    (tmp_path / "variants.list").write_text("default\n")
    monkeypatch.setattr("gentoobootstrap.paths.DEFAULTS_FILE", conf / "defaults")
    monkeypatch.setattr("gentoobootstrap.paths.VARIANTS_DIR", conf / "variants")
    monkeypatch.setattr("gentoobootstrap.paths.OS_PATH", tmp_path)
    # main() would point the library's log at stderr for good and hide it from caplog
    monkeypatch.setattr("gentoobootstrap.log.setup", lambda debug=False: None)
    cache_dir = tmp_path / "cache"
    with serve(layout.root) as url:
        (conf / "variants" / "default.conf").write_text(
            f'MIRROR="{url}"\nKEYRING="{keyring}"\nCACHE_DIR="{cache_dir}"\n'
            'SNAPSHOT="latest"\nARCH="amd64"\n'
        )
        assert prefetch.main([]) == 0
    assert prefetch.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert f"stage3/amd64-openrc  {STAGE3}.tar.zst" in listed
    assert "snapshot/latest  gentoo-latest.tar.zst" in listed
    assert f"  {STAGE3}.tar.zst~ext4-" in listed  # the prepared image of FILESYSTEM
    assert prefetch.main(["--clean", "--older-than", "1"]) == 0
    assert len(list(cache.entries(cache_dir))) == 2
    assert all(e.meta is not None for e in cache.entries(cache_dir))
    assert prefetch.main(["--clean"]) == 0
    assert all(e.meta is None for e in cache.entries(cache_dir))
    assert not list(cache_dir.glob("*/*/*.img"))
    assert prefetch.main(["--variant", "nope"]) == 1


def test_extracted_stage_matches(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path
) -> None:
    """GNU tar unpacks the cached form to exactly the verified stage's files."""
    layout = build_mirror(tmp_path / "mirror", stage, key)
    got = obtain.stage(settings(layout.root.as_uri(), tmp_path / "cache", keyring))
    (tmp_path / "a").mkdir()
    subprocess.run(["tar", "-xpf", str(got), "-C", str(tmp_path / "a")], check=True)
    with tarfile.open(stage) as tar:
        for member in tar.getmembers():
            if member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                assert (tmp_path / "a" / member.name).read_bytes() == extracted.read()


def test_members_are_checked_once_when_cached(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    got = obtain.stage(settings(layout.root.as_uri(), tmp_path / "cache", keyring))
    with tarfile.open(stage) as tar:
        assert cache.recorded_member_count(got, tmp_path / "cache") == len(tar.getmembers())
    assert cache.recorded_member_count(stage, tmp_path / "cache") is None  # not in the cache
    assert cache.recorded_member_count(got, tmp_path / "elsewhere") is None


def test_the_unpacked_size_is_recorded_when_cached_and_read_only_there(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path
) -> None:
    """create sizes the root from meta.json, not by walking the stage; only CACHE_DIR's counts."""
    layout = build_mirror(tmp_path / "mirror", stage, key)
    cache_dir = tmp_path / "cache"
    got = obtain.stage(settings(layout.root.as_uri(), cache_dir, keyring))
    with lzma.open(stage) as f:
        size = len(f.read())
    assert cache.recorded_unpacked_size(got, cache_dir) == size
    entry = cache.entry_holding(got, cache_dir)
    assert entry is not None and entry.meta is not None
    meta = entry.meta
    (entry.path / cache.META).write_text(json.dumps({**dataclasses.asdict(meta), "unpacked": 7}))
    assert unpack.unpacked_size(got, cache_dir) == 7  # read, not computed
    assert unpack.unpacked_size(got, tmp_path / "elsewhere") == size
    assert unpack.unpacked_size(got) == size


@pytest.mark.parametrize("zstd", [True, False])
def test_a_bzip2_stage_has_its_unpacked_size_recorded_too(
    tmp_path: Path, stage: Path, keyring: Path, zstd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its format does not record the size: counted once when cached, never on each create."""
    with lzma.open(stage) as f:
        tar = f.read()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "stage4.tar.bz2").write_bytes(bz2.compress(tar))
    if not zstd:
        have_tool = runner.have_tool
        monkeypatch.setattr(runner, "have_tool", lambda name: name != "zstd" and have_tool(name))
    with serve(tmp_path / "www") as url:
        s = settings(url, tmp_path / "cache", keyring, stage4_file=f"{url}/stage4.tar.bz2")
        got = obtain.stage(dataclasses.replace(s, verify="none"))
    assert got.suffix == (".zst" if zstd else ".bz2")
    assert cache.recorded_unpacked_size(got, tmp_path / "cache") == len(tar)


def test_signed_stage_escaping_the_target_is_not_cached(
    tmp_path: Path, key: SigningKey, keyring: Path
) -> None:
    evil = make_tarball(tmp_path / "evil.tar.xz", {"etc/ok": b"1", "../../etc/cron.d/x": b"2"})
    layout = build_mirror(tmp_path / "mirror", evil, key)
    with pytest.raises(StageError, match="outside the target") as e:
        obtain.stage(settings(layout.root.as_uri(), tmp_path / "cache", keyring))
    assert str(e.value).startswith(f"{layout.root.as_uri()}/releases/amd64/autobuilds/")
    assert_clean(tmp_path / "cache")


NEWER = "20261129T170000Z"


def test_a_replayed_older_release_is_refused(
    tmp_path: Path, key: SigningKey, keyring: Path, requests: list[str]
) -> None:
    """A mirror (or a man in the middle) replaying last week's genuinely signed release."""
    newer = make_tarball(tmp_path / "newer.tar.xz", {"etc/newer": b"2\n"})
    older = make_tarball(tmp_path / "older.tar.xz", {"etc/older": b"1\n"})
    layout = build_mirror(tmp_path / "mirror", newer, key, stamp=NEWER)
    with serve(layout.root, requests) as url:
        s = settings(url, tmp_path / "cache", keyring, clean_cache=0)  # always asks the mirror
        first = obtain.stage(s)
        assert first.name == f"stage3-amd64-openrc-{NEWER}.tar.zst"
        for signed in (True, False):
            build_mirror(layout.root, older, key, stamp=STAMP, sign_latest=signed)
            with pytest.raises(StageError) as e:
                obtain.stage(s)
            message = str(e.value)
            assert "\n" not in message
            assert "2026-11-22 17:03:59 UTC" in message and "2026-11-29 17:00:00 UTC" in message
            assert "ALLOW_OLDER_STAGE=yes" in message
        assert downloads(requests) == [f"/releases/amd64/autobuilds/{NEWER}/{first.stem}.xz"]
        assert tar_stream(first) == tar_stream(newer)  # the cache still holds the newer one

        # The admin asks for it: the older release is installed, and cached.
        allowed = dataclasses.replace(s, allow_older_stage=True)
        got = obtain.stage(allowed)
        assert got.name == f"{STAGE3}.tar.zst" and tar_stream(got) == tar_stream(older)
        # Going forward again needs no permission.
        build_mirror(layout.root, newer, key, stamp="20261206T170000Z")
        assert tar_stream(obtain.stage(s)) == tar_stream(newer)

    # Offline, the cached (newest) one is used, never an older file the entry still keeps.
    assert obtain.stage(s).name == "stage3-amd64-openrc-20261206T170000Z.tar.zst"


def test_no_rollback_below_an_entry_a_weaker_verify_passed(
    tmp_path: Path, key: SigningKey, keyring: Path
) -> None:
    newer = make_tarball(tmp_path / "newer.tar.xz", {"etc/newer": b"2\n"})
    layout = build_mirror(tmp_path / "mirror", newer, key, stamp=NEWER)
    s = settings(layout.root.as_uri(), tmp_path / "cache", keyring, verify="checksum")
    obtain.stage(s)
    build_mirror(layout.root, make_tarball(tmp_path / "older.tar.xz"), key, stamp=STAMP)
    with pytest.raises(StageError, match="refusing to roll back"):
        obtain.stage(dataclasses.replace(s, verify="signature"))


def test_a_replayed_older_latest_snapshot_is_refused(
    tmp_path: Path, stage: Path, snapshot: Path, requests: list[str]
) -> None:
    """gentoo-latest.tar.xz carries no date: its signature's is compared."""
    with signing_key("Backdated", created="20250101T000000") as key:
        keyring = key.export(tmp_path / "keys.asc")
        layout = build_mirror(tmp_path / "mirror", stage, key, snapshot=snapshot)
        assert layout.snapshot is not None
        with serve(layout.root, requests) as url:
            s = settings(url, tmp_path / "cache", keyring, snapshot="latest", clean_cache=0)
            first = obtain.snapshot(s)
            assert first is not None
            older = make_tarball(tmp_path / "older.tar.xz", {"gentoo/old": b"2025\n"})
            shutil.copyfile(older, layout.snapshot)
            gpgsig = layout.snapshot.with_name(layout.snapshot.name + ".gpgsig")
            gpgsig.write_bytes(key.detach_sign(layout.snapshot, when="20251122T004500"))
            with pytest.raises(StageError) as e:
                obtain.snapshot(s)
            message = str(e.value)
            assert "\n" not in message and "ALLOW_OLDER_STAGE=yes" in message
            assert "a snapshot signed 2025-11-22 00:45:00 UTC, older than the cached one" in message
            assert obtain.snapshot(dataclasses.replace(s, mirror="http://127.0.0.1:9")) == first
            assert tar_stream(first) == tar_stream(snapshot)
            got = obtain.snapshot(dataclasses.replace(s, allow_older_stage=True))
            assert got is not None and tar_stream(got) == tar_stream(older)

            # VERIFY=none checks no signature: there is no date to compare, and no refusal.
            shutil.copyfile(snapshot, layout.snapshot)
            gpgsig.write_bytes(key.detach_sign(layout.snapshot))
            forward = obtain.snapshot(s)  # going forward needs no permission
            assert forward is not None and tar_stream(forward) == tar_stream(snapshot)
            shutil.copyfile(older, layout.snapshot)
            gpgsig.write_bytes(key.detach_sign(layout.snapshot, when="20251122T004500"))
            unchecked = obtain.snapshot(dataclasses.replace(s, verify="none"))
            assert unchecked is not None and tar_stream(unchecked) == tar_stream(older)


def test_a_replayed_release_stops_create_with_one_error_line(
    tmp_path: Path,
    key: SigningKey,
    keyring: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gentoobootstrap import cli
    from support import ganeti_environ

    newer = make_tarball(tmp_path / "newer.tar.xz", {"etc/newer": b"2\n"})
    layout = build_mirror(tmp_path / "mirror", newer, key, stamp=NEWER)
    cache_dir = tmp_path / "cache"
    conf = tmp_path / "conf"
    (conf / "variants").mkdir(parents=True)
    monkeypatch.setattr("gentoobootstrap.paths.DEFAULTS_FILE", conf / "defaults")
    monkeypatch.setattr("gentoobootstrap.paths.VARIANTS_DIR", conf / "variants")
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 2**20)
    with serve(layout.root) as url:
        obtain.stage(settings(url, cache_dir, keyring))
        build_mirror(layout.root, make_tarball(tmp_path / "older.tar.xz"), key, stamp=STAMP)
        (conf / "variants" / "default.conf").write_text(
            f'MIRROR="{url}"\nKEYRING="{keyring}"\nCACHE_DIR="{cache_dir}"\n'
            'ARCH="amd64"\nCLEAN_CACHE="0"\n'
        )
        assert cli.main("create", [], ganeti_environ(image), isolate=False) == 1
    err = capsys.readouterr().err.strip().splitlines()
    dated = [line for line in err if "2026-11-22 17:03:59" in line]
    assert dated == [err[-1]] and "ERROR: create: " in err[-1]
    assert "2026-11-29 17:00:00" in err[-1]
    assert image.read_bytes() == b"\0" * 2**20  # refused before the disk was touched


def modes(root: Path) -> dict[str, str]:
    """``relative path -> octal mode`` of everything below ``root``."""
    return {
        str(path.relative_to(root)): oct(path.lstat().st_mode & 0o7777)
        for path in sorted(root.rglob("*"))
    }


def test_cache_modes_do_not_come_from_the_umask(
    tmp_path: Path, key: SigningKey, stage: Path, snapshot: Path, keyring: Path, requests: list[str]
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key, snapshot=snapshot)
    local = make_tarball(tmp_path / "stage4.tar.xz")
    cache_dir = tmp_path / "var" / "cache" / "gb"  # parents made too
    saved = os.umask(0)
    try:
        with serve(layout.root, requests) as url:
            s = settings(url, cache_dir, keyring, snapshot="latest")
            got = obtain.stage(s)
            obtain.snapshot(s)
            obtain.stage(dataclasses.replace(s, stage4_file=str(local)))
    finally:
        os.umask(saved)
    found = modes(tmp_path / "var")
    assert found.pop("cache/gb/tmp") == "0o700"
    assert not [p for p in found if p.startswith("cache/gb/tmp/")]
    for path, mode in found.items():
        name = path.rsplit("/", 1)[-1]
        expected = "0o600" if name == ".lock" else "0o755" if "." not in name else "0o644"
        assert mode == expected, path

    # A cache an older version left writable by anyone: repaired, the file obtained again.
    entry_dir = got.parent
    entry_dir.chmod(0o777)
    got.chmod(0o666)
    requests.clear()
    with serve(layout.root, requests) as url:
        again = obtain.stage(dataclasses.replace(s, mirror=url))
    assert downloads(requests) == [f"/releases/amd64/autobuilds/{layout.relative}"]
    assert oct(entry_dir.stat().st_mode & 0o7777) == "0o755"
    assert oct(again.stat().st_mode & 0o7777) == "0o644"
    (entry_dir / "meta.json").chmod(0o666)
    requests.clear()
    with serve(layout.root, requests) as url:
        obtain.stage(dataclasses.replace(s, mirror=url))
    assert downloads(requests) == [f"/releases/amd64/autobuilds/{layout.relative}"]
    assert oct((entry_dir / "meta.json").stat().st_mode & 0o7777) == "0o644"


def test_cache_metadata_naming_a_file_outside_its_entry_is_ignored(
    tmp_path: Path, key: SigningKey, stage: Path, keyring: Path
) -> None:
    layout = build_mirror(tmp_path / "mirror", stage, key)
    s = settings(layout.root.as_uri(), tmp_path / "cache", keyring)
    got = obtain.stage(s)
    meta = json.loads((got.parent / "meta.json").read_text())
    meta["file"] = "../../../mirror/" + layout.relative
    (got.parent / "meta.json").write_text(json.dumps(meta))
    assert cache.Entry(tmp_path / "cache", got.parent).meta is None
    assert obtain.stage(s) == got
