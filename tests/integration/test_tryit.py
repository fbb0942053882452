"""gentoobootstrap-try runs the installed OS's create as Ganeti does and shows what it made."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gentoobootstrap.scripts import tryit
from support import osdef, stage
from support.install import InstalledOS

pytestmark = pytest.mark.root


def test_try_makes_the_image_runs_create_and_shows_the_result(
    installed_os: InstalledOS,
    no_leaks: Path,
    capsys: pytest.CaptureFixture[str],
    stages: dict[tuple[str, str], stage.Stage],
) -> None:
    built = stages["openrc", "xz"]
    installed_os.add_variant(
        "try-swap", {"STAGE4_FILE": str(built.tarball), "SWAP": "yes", "SWAP_SIZE": "64"}
    )
    image = no_leaks / "disk.img"
    log = no_leaks / "create.log"
    status = tryit.main(
        [
            str(image),
            "--size",
            "400M",
            "--name",
            "try1.example.com",
            "--variant",
            "try-swap",
            "--os-dir",
            str(installed_os.os_dir),
            "--log",
            str(log),
            "-O",
            "filesystem=xfs",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out + log.read_text()
    assert image.stat().st_size == 400 << 20 and image.stat().st_blocks < (400 << 20) // 512
    assert "partition table: msdos" in out
    assert re.search(r"partition 1: start 65 MiB, size 335 MiB, xfs, label root, UUID \S+", out)
    assert re.search(r"partition 2: start 1 MiB, size 64 MiB, swap, label swap", out)
    root_uuid = osdef.probe(image, 65 << 20, 335 << 20)["UUID"]
    assert f"UUID={root_uuid}\t/\txfs\tnoatime\t0 1" in out
    # The log is create's, as Ganeti's OS log holds it: one line per step with its duration.
    text = log.read_text()
    for step in ("obtain stage", "partition disk", "unpack stage", "write fstab"):
        assert re.search(rf"INFO: {step} done \(\d+\.\ds\)", text), text
    assert "try1.example.com is installed" in text


def test_try_shows_the_last_lines_when_create_fails(
    installed_os: InstalledOS,
    no_leaks: Path,
    capsys: pytest.CaptureFixture[str],
    stages: dict[tuple[str, str], stage.Stage],
) -> None:
    installed_os.add_variant("try-small", {"STAGE4_FILE": str(stages["openrc", "xz"].tarball)})
    status = tryit.main(
        [
            str(no_leaks / "small.img"),
            "--size",
            "100M",
            "--variant",
            "try-small",
            "--os-dir",
            str(installed_os.os_dir),
            "--log",
            str(no_leaks / "create.log"),
        ]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "create failed with exit status 1" in out
    assert (
        out.strip()
        .splitlines()[-1]
        .endswith(
            "the disk has 100 MiB but this layout needs at least 256 MiB (root 64 MiB (ext4) + "
            "1 MiB partition table): give the instance a bigger disk or lower BOOT_SIZE/SWAP_SIZE"
        )
    )


def test_environment_is_ganetis(tmp_path: Path) -> None:
    args = tryit.parser().parse_args(
        [
            str(tmp_path / "d.img"),
            "--name",
            "x.example.com",
            "--variant",
            "v",
            "-O",
            "timezone=UTC",
            "-B",
            "maxmem=2048",
            "-H",
            "root_path=/dev/vda2",
            "--hypervisor",
            "kvm",
            "--reinstall",
            "--os-dir",
            "/srv/ganeti/os/gentoobootstrap",
        ]
    )
    env = tryit.environment(args, 4 << 30)
    assert env["PATH"] == "/sbin:/bin:/usr/sbin:/usr/bin"
    assert env["OS_NAME"] == "gentoobootstrap" and env["OS_VARIANT"] == "v"
    assert env["INSTANCE_OS"] == "gentoobootstrap+v"
    assert env["DISK_0_SIZE"] == "4096" and env["DISK_0_BACKEND_TYPE"] == "file:loop"
    assert env["INSTANCE_BE_maxmem"] == "2048" and env["INSTANCE_HV_root_path"] == "/dev/vda2"
    assert env["INSTANCE_HV_serial_console"] == "True"
    assert env["OSP_TIMEZONE"] == "UTC" and env["INSTANCE_REINSTALL"] == "1"
    assert re.fullmatch(r"aa:00:00:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}", env["NIC_0_MAC"])


def test_try_shows_a_whole_disk_filesystem(
    installed_os: InstalledOS,
    no_leaks: Path,
    capsys: pytest.CaptureFixture[str],
    stages: dict[tuple[str, str], stage.Stage],
) -> None:
    installed_os.add_variant(
        "try-none",
        {"STAGE4_FILE": str(stages["openrc", "zstd"].tarball), "PARTITION_STYLE": "none"},
    )
    status = tryit.main(
        [
            str(no_leaks / "disk.img"),
            "--size",
            "300M",
            "--variant",
            "try-none",
            "--os-dir",
            str(installed_os.os_dir),
            "--log",
            str(no_leaks / "create.log"),
            "-H",
            "root_path=/dev/vda",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "partition table: none" in out
    assert re.search(r"whole disk: start 0 MiB, size 300 MiB, ext4, label root, UUID \S+", out)
    assert re.search(r"UUID=\S+\t/\text4\tnoatime\t0 1", out)
    assert "root_path" not in (no_leaks / "create.log").read_text()  # no warning: it names the disk
