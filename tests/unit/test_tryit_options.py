"""gentoobootstrap-try's own parts: sizes, the image, the options."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import pytest

from gentoobootstrap.errors import DiskError, GentooBootstrapError
from gentoobootstrap.scripts import tryit


@pytest.mark.parametrize(
    ("text", "size"),
    [("4G", 4 << 30), ("512M", 512 << 20), ("2048", 2048 << 20), ("1GiB", 1 << 30), ("64k", 65536)],
)
def test_sizes(text: str, size: int) -> None:
    assert tryit.parse_size(text) == size


def test_bad_size() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        tryit.parse_size("four gigs")


def test_the_image_is_made_sparse_grown_and_never_shrunk(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with pytest.raises(DiskError, match="give --size"):
        tryit.prepare_image(image, None)
    assert tryit.prepare_image(image, 1 << 30) == 1 << 30
    assert image.stat().st_blocks == 0
    image.write_bytes(b"x")  # data at the start; growing keeps it
    with image.open("ab") as f:
        f.truncate(1 << 30)
    assert tryit.prepare_image(image, 2 << 30) == 2 << 30
    with image.open("rb") as f:
        assert f.read(1) == b"x"
    assert tryit.prepare_image(image, 1 << 20) == 2 << 30
    assert tryit.prepare_image(image, None) == 2 << 30


def test_options_must_be_key_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        tryit.parser().parse_args(["disk.img", "-O", "filesystem"])
    assert "expected key=value" in capsys.readouterr().err


def test_xen_pvm_roots_on_xvda1(tmp_path: Path) -> None:
    args = tryit.parser().parse_args([str(tmp_path / "d.img"), "--hypervisor", "xen-pvm"])
    env = tryit.environment(args, 1 << 30)
    assert env["HYPERVISOR"] == "xen-pvm" and env["INSTANCE_HV_root_path"] == "/dev/xvda1"
    assert "INSTANCE_REINSTALL" not in env


def test_an_image_is_never_made_or_grown_through_a_symlink(tmp_path: Path) -> None:
    canary = tmp_path / "shadow"
    canary.write_bytes(b"root:*:1:0:::::\n")
    (tmp_path / "disk.img").symlink_to(canary)
    with pytest.raises(DiskError, match=r"disk\.img: it is a symlink; give the image file itself"):
        tryit.prepare_image(tmp_path / "disk.img", 1 << 30)
    (tmp_path / "dangling.img").symlink_to(tmp_path / "new-node-file")
    with pytest.raises(DiskError, match=r"dangling\.img: File exists"):
        tryit.prepare_image(tmp_path / "dangling.img", 1 << 30)
    assert canary.read_bytes() == b"root:*:1:0:::::\n"
    assert not (tmp_path / "new-node-file").exists()


def test_the_log_is_private_whatever_the_umask(tmp_path: Path) -> None:
    saved = os.umask(0)
    try:
        with tryit.open_log(tmp_path / "create.log") as f:
            f.write("first run\n")
    finally:
        os.umask(saved)
    assert stat.S_IMODE((tmp_path / "create.log").stat().st_mode) == 0o600
    with tryit.open_log(tmp_path / "create.log") as f:  # an earlier log of ours: emptied
        f.write("second\n")
    assert (tmp_path / "create.log").read_text() == "second\n"


def test_the_log_is_never_written_through_what_others_planted(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_bytes(b"node file\n")
    (tmp_path / "symlink.log").symlink_to(canary)
    (tmp_path / "dangling.log").symlink_to(tmp_path / "made-through-the-link")
    os.link(canary, tmp_path / "hardlink.log")
    os.mkfifo(tmp_path / "fifo.log")
    for name, problem in [
        ("symlink.log", "it is a symlink"),
        ("dangling.log", "it is a symlink"),
        ("hardlink.log", "not an earlier log of ours"),
        ("fifo.log", "not an earlier log of ours"),
    ]:
        with pytest.raises(GentooBootstrapError, match=problem):
            tryit.open_log(tmp_path / name)
    assert canary.read_bytes() == b"node file\n"
    assert not (tmp_path / "made-through-the-link").exists()


@pytest.fixture
def os_dir(tmp_path: Path) -> Path:
    """A stand-in OS definition whose create fails after a line of output."""
    os_dir = tmp_path / "os" / "gentoobootstrap"
    os_dir.mkdir(parents=True)
    (os_dir / "create").write_text("#!/bin/sh\necho 'ERROR: create: stand-in'\nexit 1\n")
    (os_dir / "create").chmod(0o755)
    return os_dir


def test_try_refuses_a_symlink_planted_at_the_default_log_name(
    tmp_path: Path,
    os_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shared = tmp_path / "vartmp"
    shared.mkdir()
    shared.chmod(0o1777)  # like /var/tmp: anyone may plant a name
    canary = tmp_path / "canary"
    canary.write_bytes(b"node file\n")
    monkeypatch.setattr(tryit.time, "strftime", lambda _format: "2026-11-30_10_00_00")
    planted = shared / "add-gentoobootstrap+default-try.example.com-2026-11-30_10_00_00.log"
    planted.symlink_to(canary)
    argv = [str(shared / "test.img"), "--size", "64M", "--os-dir", str(os_dir)]
    assert tryit.main(argv) == 1
    assert (
        capsys.readouterr().err
        == f"ERROR: log file {planted}: it is a symlink; remove it or give another --log\n"
    )
    assert canary.read_bytes() == b"node file\n"
    assert not (shared / "test.img").exists()  # refused before anything was made

    planted.unlink()
    assert tryit.main(argv) == 1  # now create runs (and fails): its output is shown from the log
    assert capsys.readouterr().out.splitlines()[-1] == "ERROR: create: stand-in"
    assert stat.S_IMODE(planted.stat().st_mode) == 0o600
    assert canary.read_bytes() == b"node file\n"
