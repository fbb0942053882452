"""gentoobootstrap-try's own parts: sizes, the image, the options."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gentoobootstrap import tryit
from gentoobootstrap.errors import DiskError


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
