"""create on real loop devices: every partition style and filesystem, /boot and swap,
file disks and block devices, reinstall, a too-small disk, and the stage compared
entry by entry after unpacking.  Each test checks that nothing of ours is left."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
import sh

from gentoobootstrap.disk import devices
from support import ganeti_environ, guesttree, osdef, stage
from support.loopdisk import detach

pytestmark = pytest.mark.root

MIB = 1 << 20
LINUX = {"83", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}
SWAP = {"82", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"}
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
#: What create changes in the stage on purpose: fstab, and the guest configuration.
INSTALLED = {"etc/fstab"} | guesttree.CONFIGURED


def sparse(path: Path, mib: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(mib * MIB)
    return path


@dataclass
class Case:
    style: str
    fs: str
    size_mib: int
    boot: int = 0
    swap: str = "no"
    swap_size: str = ""
    root_path: str = "/dev/vda1"
    maxmem: str = "512"
    flavour: str = "openrc"
    compression: str = "xz"
    expect: tuple[str, ...] = ("root",)  # roles by partition number 1, 2, ...
    firmware: str = ""  # BOOT_FIRMWARE

    @property
    def boot_partitions(self) -> tuple[str, ...]:
        """gpt's ESP and BIOS boot partition, numbered after ``expect``."""
        if self.style != "gpt":
            return ()
        return {"bios": ("bios",), "uefi": ("esp",)}.get(self.firmware, ("esp", "bios"))


CASES = {
    "msdos-ext4-default": Case("msdos", "ext4", 320),
    "gpt-xfs-boot-swap": Case(
        "gpt",
        "xfs",
        600,
        boot=64,
        swap="yes",
        swap_size="64",
        compression="zstd",
        expect=("root", "boot", "swap"),
    ),
    "msdos-btrfs-swap-maxmem-root2": Case(
        "msdos",
        "btrfs",
        400,
        swap="yes",
        root_path="/dev/vda2",
        maxmem="128",
        compression="bzip2",
        expect=("swap", "root"),
    ),
    "gpt-ext2-boot-systemd-uefi": Case(
        "gpt",
        "ext2",
        420,
        boot=48,
        flavour="systemd",
        compression="zstd",
        expect=("root", "boot"),
        firmware="uefi",
    ),
    "gpt-ext4-bios": Case("gpt", "ext4", 320, firmware="bios"),
    "msdos-ext3-boot-swap-root3": Case(
        "msdos",
        "ext3",
        400,
        boot=32,
        swap="yes",
        swap_size="32",
        root_path="/dev/vda3",
        compression="gzip",
        expect=("boot", "swap", "root"),
    ),
    # SWAP="file": /swapfile on root, which stays the only partition.
    "msdos-ext4-swapfile": Case("msdos", "ext4", 400, swap="file", swap_size="64"),
    "msdos-xfs-swapfile": Case("msdos", "xfs", 600, swap="file", swap_size="48"),
    "msdos-btrfs-swapfile-maxmem": Case("msdos", "btrfs", 400, swap="file", maxmem="80"),
    "none-ext4": Case("none", "ext4", 300, compression="none"),
    "none-xfs": Case("none", "xfs", 320),
    "none-btrfs": Case("none", "btrfs", 300),
}


#: A 400 MiB disk with /boot 64 MiB and swap 32 MiB.
BOOT_SWAP_400 = Case(
    "msdos", "ext4", 400, boot=64, swap="yes", swap_size="32", expect=("root", "boot", "swap")
)


def run_create(
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    disk: Path,
    stage_file: Path,
    capfd: pytest.CaptureFixture[str],
    *,
    reinstall: bool = False,
    env: dict[str, str] | None = None,
    **settings: object,
) -> tuple[int, str]:
    """create as Ganeti runs it, with ``settings`` in the variant file; (status, log)."""
    confdir = osdef.configure(tmp / "conf", stage4_file=stage_file, **settings)
    osdef.point_paths_at(confdir, monkeypatch)
    extra = dict(env or {})
    if reinstall:
        extra["INSTANCE_REINSTALL"] = "1"
    status = osdef.create(ganeti_environ(disk, **extra))
    return status, capfd.readouterr().err


def create_case(
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    disk: Path,
    stage_file: Path,
    capfd: pytest.CaptureFixture[str],
    case: Case,
    *,
    reinstall: bool = False,
) -> tuple[int, str]:
    """run_create with ``case``'s settings, root_path and maxmem; (status, log)."""
    return run_create(
        tmp,
        monkeypatch,
        disk,
        stage_file,
        capfd,
        reinstall=reinstall,
        env={"INSTANCE_HV_root_path": case.root_path, "INSTANCE_BE_maxmem": case.maxmem},
        partition_style=case.style,
        filesystem=case.fs,
        boot_size=case.boot,
        swap=case.swap,
        swap_size=case.swap_size,
        boot_firmware=case.firmware,
    )


def check_installed(tmp: Path, image: Path, case: Case, built: stage.Stage) -> None:
    """Table, filesystems, fstab and every stage entry on the image, seen without the library."""
    fstab_lines: list[str]
    if case.style == "none":
        assert osdef.table(image) == {}
        info = osdef.probe(image)
        assert info["TYPE"] == case.fs and info["LABEL"] == "root"
        with osdef.mounted(image, tmp / "check-root", fstype=case.fs) as root:
            assert stage.compare(built.tree, root, ignore=INSTALLED) == []
            fstab_lines = active_lines(root / "etc/fstab")
        assert fstab_lines == [f"UUID={info['UUID']} / {case.fs} noatime 0 {pass_of(case.fs)}"]
        return
    found = osdef.table(image)
    assert found["label"] == {"msdos": "dos", "gpt": "gpt"}[case.style]
    parts = osdef.partitions(image)
    # gpt: the ESP and a BIOS boot partition for GRUB (before 1 MiB), numbered last.
    count = len(case.expect)
    parts, tail = parts[:count], parts[count:]
    assert [p["number"] for p in tail] == list(range(count + 1, count + 1 + len(tail)))
    extra = dict(zip(case.boot_partitions, tail, strict=True))
    if "bios" in extra:
        assert extra["bios"]["type"] == BIOS_BOOT
        assert extra["bios"]["start"] + extra["bios"]["size"] <= MIB
    if "esp" in extra:  # FAT32, first on the disk
        esp = extra["esp"]
        assert esp["type"] == ESP and esp["start"] == MIB and esp["size"] == 100 * MIB
        esp_info = osdef.probe(image, esp["start"], esp["size"])
        assert (esp_info["TYPE"], esp_info["VERSION"], esp_info["LABEL"]) == (
            "vfat",
            "FAT32",
            "ESP",
        )
        parts.append(esp)
    assert [p["number"] for p in parts[:count]] == list(range(1, count + 1))
    roles = dict(zip(case.expect, parts))
    for p in parts:
        assert p["start"] % MIB == 0 and p["size"] % MIB == 0, "not aligned to 1 MiB"
    on_disk = sorted(parts, key=lambda p: p["start"])
    for a, b in zip(on_disk, on_disk[1:]):
        assert a["start"] + a["size"] <= b["start"]
    assert on_disk[-1] is roles["root"], "root is not the last partition on the disk"
    info = {role: osdef.probe(image, p["start"], p["size"]) for role, p in roles.items()}
    assert info["root"]["TYPE"] == case.fs and info["root"]["LABEL"] == "root"
    assert roles["root"]["type"] in LINUX
    if case.boot:
        assert roles["boot"]["size"] == case.boot * MIB
        assert info["boot"]["TYPE"] == "ext4" and info["boot"]["LABEL"] == "boot"
    if case.swap == "yes":
        want = int(case.swap_size or case.maxmem)
        assert roles["swap"]["size"] == want * MIB and roles["swap"]["type"] in SWAP
        assert info["swap"]["TYPE"] == "swap"
    # The root takes the rest.
    end = (image.stat().st_size // MIB - (1 if case.style == "gpt" else 0)) * MIB
    assert max(p["start"] + p["size"] for p in parts) == end
    root = roles["root"]
    ignore = INSTALLED | ({"efi"} if "esp" in extra else set())
    ignore |= {"swapfile"} if case.swap == "file" else set()
    with osdef.mounted(image, tmp / "check-root", root["start"], root["size"], case.fs) as target:
        fstab_lines = active_lines(target / "etc/fstab")
        if case.swap == "file":
            check_swap_file(target / "swapfile", int(case.swap_size or case.maxmem) * MIB, case.fs)
        else:
            assert not os.path.lexists(target / "swapfile")
        if case.boot:
            boot = roles["boot"]
            # /boot on the root filesystem is an empty mount point: the kernel is on /boot's.
            assert sorted(os.listdir(target / "boot")) == []
            with osdef.mounted(image, target / "boot", boot["start"], boot["size"]):
                assert stage.compare(built.tree, target, ignore=ignore) == []
        else:
            assert stage.compare(built.tree, target, ignore=ignore) == []
        if "esp" in extra:  # its mount point: an empty directory
            assert (target / "efi").is_dir() and os.listdir(target / "efi") == []
    want_fstab = [f"UUID={info['root']['UUID']} / {case.fs} noatime 0 {pass_of(case.fs)}"]
    if case.boot:
        want_fstab.append(f"UUID={info['boot']['UUID']} /boot ext4 noatime 0 2")
    if case.swap == "yes":
        want_fstab.append(f"UUID={info['swap']['UUID']} none swap sw 0 0")
    if "esp" in extra:
        want_fstab.append(f"UUID={esp_info['UUID']} /efi vfat umask=0077,nofail 0 0")
    if case.swap == "file":
        want_fstab.append("/swapfile none swap sw 0 0")
    assert fstab_lines == want_fstab


def check_swap_file(path: Path, size: int, fs: str) -> None:
    """A swap file the kernel would take: root's, 0600, every block allocated, swap inside,
    and on btrfs not copy-on-write."""
    made = path.stat(follow_symlinks=False)
    assert stat.S_ISREG(made.st_mode) and made.st_size == size
    assert (made.st_mode & 0o7777, made.st_uid, made.st_gid) == (0o600, 0, 0)
    assert made.st_blocks * 512 >= size, "the swap file has holes"
    assert str(sh.blkid("--probe", "--match-tag", "TYPE", "--output", "value", path)).strip() == (
        "swap"
    )
    assert "LABEL: swap" in str(sh.swaplabel(path))
    if fs == "btrfs":
        assert "C" in str(sh.lsattr(path)).split()[0], "btrfs swap file without NOCOW"


def pass_of(fs: str) -> int:
    return 0 if fs == "btrfs" else 1


def active_lines(fstab: Path) -> list[str]:
    return [
        re.sub(r"\s+", " ", line.strip())
        for line in fstab.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.mark.parametrize("name", sorted(CASES))
def test_layouts(
    name: str,
    no_leaks: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    stages: dict,
) -> None:
    case = CASES[name]
    built = stages[case.flavour, case.compression]
    image = sparse(no_leaks / "disk.img", case.size_mib)
    status, log = create_case(no_leaks, monkeypatch, image, built.tarball, capfd, case)
    assert status == 0, log
    assert "write fstab done" in log
    check_installed(no_leaks, image, case, built)


def test_filesystem_parameter_wins(
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], stages: dict
) -> None:
    built = stages["openrc", "xz"]
    image = sparse(no_leaks / "disk.img", 320)
    confdir = osdef.configure(no_leaks / "conf", stage4_file=built.tarball, filesystem="ext4")
    osdef.point_paths_at(confdir, monkeypatch)
    assert osdef.create(ganeti_environ(image, OSP_FILESYSTEM="btrfs")) == 0, capfd.readouterr()
    part = osdef.partitions(image)[0]
    assert osdef.probe(image, part["start"], part["size"])["TYPE"] == "btrfs"


def test_block_device(
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], stages: dict
) -> None:
    """A block device (a loop device standing in for an LV) is used as is and left as found."""
    built = stages["openrc", "xz"]
    image = sparse(no_leaks / "lv.img", 400)
    lv = Path(str(sh.losetup("--show", "--find", str(image))).strip())
    try:
        status, log = create_case(no_leaks, monkeypatch, lv, built.tarball, capfd, BOOT_SWAP_400)
        assert status == 0, log
        assert devices.kernel_partitions(lv) == {}, "partitions we added are still known"
        assert slices_of(lv) == []
    finally:
        detach(lv)
    check_installed(no_leaks, image, BOOT_SWAP_400, built)


def slices_of(device: Path) -> list[str]:
    """Loop devices backed by ``device`` (the per-partition fallback)."""
    out = str(sh.losetup("-a", "--noheadings", "-O", "NAME,BACK-FILE", "--raw"))
    return [line for line in out.splitlines() if line.split(" ", 1)[-1] == str(device)]


def test_partition_loop_fallback(
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], stages: dict
) -> None:
    """Where neither the kernel nor partx can give partitions (dm, DRBD), loop slices do."""
    built = stages["openrc", "xz"]
    image = sparse(no_leaks / "disk.img", 400)
    monkeypatch.setattr(devices, "_kernel_nodes", lambda device, wanted, stack: None)
    sliced = []
    real_slice = devices._loop_slice

    def recording_slice(device: Path, offset: int, size: int, what: str, *rest):  # type: ignore[no-untyped-def]
        sliced.append((offset, size))
        return real_slice(device, offset, size, what, *rest)

    monkeypatch.setattr(devices, "_loop_slice", recording_slice)
    status, log = create_case(no_leaks, monkeypatch, image, built.tarball, capfd, BOOT_SWAP_400)
    assert status == 0, log
    assert [size for _, size in sliced][1:] == [64 * MIB, 32 * MIB]
    check_installed(no_leaks, image, BOOT_SWAP_400, built)


def test_reinstall_over_populated_disk(
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], stages: dict
) -> None:
    built = stages["openrc", "zstd"]
    image = sparse(no_leaks / "disk.img", 600)
    status, log = run_create(
        no_leaks,
        monkeypatch,
        image,
        built.tarball,
        capfd,
        partition_style="gpt",
        filesystem="xfs",
        boot_size=64,
        swap="yes",
        swap_size=64,
    )
    assert status == 0, log
    old = {p["number"]: osdef.probe(image, p["start"], p["size"]) for p in osdef.partitions(image)}
    status, log = run_create(no_leaks, monkeypatch, image, built.tarball, capfd, reinstall=True)
    assert status == 0, log
    assert "reinstall" in log
    check_installed(no_leaks, image, Case("msdos", "ext4", 500), built)
    # No trace of the old layout: no gpt backup header, no old filesystem signatures.
    assert "gpt" not in str(sh.wipefs("--no-act", str(image)))
    part = osdef.partitions(image)[0]
    assert osdef.probe(image, part["start"], part["size"])["UUID"] != old[1]["UUID"]


def test_reinstall_over_whole_disk_filesystem(
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], stages: dict
) -> None:
    """From style none (a filesystem signature at offset 0) back to a partition table."""
    built = stages["openrc", "xz"]
    image = sparse(no_leaks / "disk.img", 320)
    sh.Command("mkfs.xfs")("-q", str(image))
    status, log = run_create(
        no_leaks, monkeypatch, image, built.tarball, capfd, reinstall=True, swap="yes", swap_size=16
    )
    assert status == 0, log
    assert osdef.probe(image).get("PTTYPE") == "dos" and "TYPE" not in osdef.probe(image)
    check_installed(
        no_leaks,
        image,
        Case("msdos", "ext4", 320, swap="yes", swap_size="16", expect=("root", "swap")),
        built,
    )


def test_too_small_disk(
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], stages: dict
) -> None:
    built = stages["openrc", "xz"]
    image = sparse(no_leaks / "disk.img", 200)
    status, log = run_create(no_leaks, monkeypatch, image, built.tarball, capfd)
    assert status == 1
    last = log.strip().splitlines()[-1]
    assert "has 200 MiB but this layout needs at least 256 MiB" in last, log
    assert osdef.table(image) == {} and osdef.probe(image) == {}, "the disk was touched"


def test_swap_leaving_root_too_little(
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], stages: dict
) -> None:
    built = stages["openrc", "xz"]
    image = sparse(no_leaks / "disk.img", 400)
    status, log = run_create(
        no_leaks, monkeypatch, image, built.tarball, capfd, filesystem="xfs", swap="yes"
    )  # swap = maxmem 512 MiB
    assert status == 1
    assert "has 400 MiB but this layout needs at least 813 MiB" in log.strip().splitlines()[-1]


@pytest.mark.parametrize("fs", ["ext4", "btrfs"])
def test_disk_in_use_is_refused(
    fs: str,
    no_leaks: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    stages: dict,
) -> None:
    built = stages["openrc", "xz"]
    image = sparse(no_leaks / "disk.img", 320)
    sh.Command(f"mkfs.{fs}")("-q", str(image))
    with osdef.mounted(image, no_leaks / "busy"):
        status, log = run_create(no_leaks, monkeypatch, image, built.tarball, capfd, reinstall=True)
        assert status == 1
        assert re.search(r"is in use: /dev/loop\d+ is mounted on \S+/busy", log), log
    assert osdef.probe(image)["TYPE"] == fs, "a disk in use was modified"


def test_an_idle_loop_device_of_the_file_is_named(
    no_leaks: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    stages: dict,
) -> None:
    """A loop device left on the image (e.g. by a killed run) is reported, not touched."""
    built = stages["openrc", "xz"]
    image = sparse(no_leaks / "disk.img", 320)
    stale = str(sh.losetup("--show", "--find", str(image))).strip()
    try:
        status, log = run_create(no_leaks, monkeypatch, image, built.tarball, capfd)
        assert status == 0, log
        assert f"is also attached to {stale}" in log
        assert stale in str(sh.losetup("--list", "--noheadings", "-O", "NAME"))
    finally:
        detach(Path(stale))
