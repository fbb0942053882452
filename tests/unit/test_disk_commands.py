"""The commands devices, filesystems, mounts and unpack run, with the tools faked."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import tarfile
from pathlib import Path

import pytest

from gentoobootstrap import resources, runner
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.disk import devices, filesystems, fstab, layout, mounts
from gentoobootstrap.errors import (
    CommandError,
    DiskError,
    Interrupted,
    StageError,
    ToolNotFoundError,
)
from gentoobootstrap.stages import unpack

MIB = layout.MIB
REAL_FIND_TOOL = runner.find_tool


@pytest.fixture(autouse=True)
def plain_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo what an earlier cli.main did to the library's logger, so caplog sees the records."""
    logger = logging.getLogger("gentoobootstrap")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)


@pytest.fixture(autouse=True)
def fake_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tools resolve to /fake/NAME; /dev/... paths count as block devices; no loop is busy."""
    monkeypatch.setattr(devices, "SYS_BLOCK", tmp_path / "sys-block")
    monkeypatch.setattr(runner, "find_tool", lambda name: f"/fake/{name}")
    monkeypatch.setattr(runner, "have_tool", lambda name: name in ("xz", "zstd", "gzip", "bzip2"))
    monkeypatch.setattr(devices, "is_block_device", lambda path: str(path).startswith("/dev/"))
    monkeypatch.setattr(devices, "kernel_partitions", lambda device: {})


@dataclasses.dataclass
class FakeLoops:
    """Loop devices handed out by a faked _new_loop (the ioctls need root), each with a real
    fd to close; ``released`` lists those waited for, in order."""

    made: list[tuple[str, int, int, bool, bool]] = dataclasses.field(default_factory=list)
    fds: list[int] = dataclasses.field(default_factory=list)
    released: list[str] = dataclasses.field(default_factory=list)
    failure: Exception | None = None

    def new(self, backing, offset, size, readonly, partscan):  # type: ignore[no-untyped-def]
        self.made.append((str(backing), offset, size, readonly, partscan))
        self.fds.append(os.open(os.devnull, os.O_RDONLY))
        return Path(f"/dev/loop{len(self.made) + 6}"), self.fds[-1]

    def wait(self, loop: Path, before: str | None) -> None:
        self.released.append(loop.name)
        if self.failure is not None:
            raise self.failure

    def all_closed(self) -> bool:
        return all(not _is_open(fd) for fd in self.fds)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.fixture
def loops(monkeypatch: pytest.MonkeyPatch) -> FakeLoops:
    fake = FakeLoops()
    monkeypatch.setattr(devices, "_new_loop", fake.new)
    monkeypatch.setattr(devices, "_wait_released", fake.wait)
    return fake


def test_attach_a_file_on_a_loop_device_and_release_it(loops: FakeLoops, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    with devices.attach(image) as device:
        assert device == Path("/dev/loop7")
        assert loops.made == [(str(image), 0, 0, False, True)]  # partition scanning asked
        assert _is_open(loops.fds[0])  # our reference keeps it (autoclear)
    assert loops.all_closed() and loops.released == ["loop7"]


def test_a_block_device_is_used_as_is(fp, loops: FakeLoops) -> None:  # type: ignore[no-untyped-def]
    with devices.attach(Path("/dev/vg/lv")) as device:
        assert device == Path("/dev/vg/lv")
    assert len(fp.calls) == 0 and loops.made == []


def test_a_failing_release_does_not_hide_the_original_error(
    loops: FakeLoops,
    tmp_path: Path,
    caplog,  # type: ignore[no-untyped-def]
) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    loops.failure = DiskError("timed out waiting for /dev/loop7 to be released")
    with pytest.raises(DiskError, match="original"), caplog.at_level(logging.ERROR):  # noqa: SIM117
        with devices.attach(image, readonly=True):
            raise DiskError("original")
    assert "could not release loop7" in caplog.text
    assert loops.made[0][3] is True and loops.all_closed()


def test_a_failing_release_after_success_is_an_error(loops: FakeLoops, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    loops.failure = DiskError("timed out waiting for /dev/loop7 to be released")
    with pytest.raises(DiskError, match="timed out"), devices.attach(image):
        pass
    assert loops.all_closed()


def test_write_table_feeds_sfdisk_the_layout(fp, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    plan = layout.plan(dataclasses.replace(Settings(), swap=True, swap_size=64), 1024 * MIB)
    fed = []
    fp.register(["/fake/blockdev", "--getss", "/dev/loop7"], stdout="512\n")
    fp.register(
        [
            "/fake/sfdisk",
            "--quiet",
            "--no-reread",
            "--no-tell-kernel",
            "--wipe",
            "always",
            "/dev/loop7",
        ],
        stdin_callable=fed.append,
    )
    devices.write_table(Path("/dev/loop7"), plan)
    assert fed == [plan.sfdisk_script()]


def test_wipe_erases_old_partitions_then_the_disk(fp, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(
        devices, "kernel_partitions", lambda device: {1: (Path("/dev/vda1"), MIB, 10 * MIB)}
    )
    fp.register(["/fake/wipefs", "--all", "--force", "/dev/vda1"])
    fp.register(["/fake/wipefs", "--all", "--force", "/dev/vda"])
    devices.wipe(Path("/dev/vda"))
    assert [c[-1] for c in fp.calls] == ["/dev/vda1", "/dev/vda"]


def test_partitions_fall_back_to_one_loop_device_each(fp, loops: FakeLoops) -> None:  # type: ignore[no-untyped-def]
    """No kernel partitions and partx refused (device-mapper, DRBD): loop slices."""
    wanted = layout.plan(dataclasses.replace(Settings(), boot_size=64), 1024 * MIB).partitions
    device = "/dev/drbd0"
    fp.register(["/fake/blockdev", "--rereadpt", device], returncode=22)
    fp.register(["/fake/partx", "--update", device], returncode=1, stderr="partx: failed\n")
    with devices.partitions(Path(device), wanted, readonly=True) as nodes:
        assert nodes == {1: Path("/dev/loop7"), 2: Path("/dev/loop8")}
    assert loops.made == [(device, p.start, p.size, True, False) for p in wanted]
    assert loops.released == ["loop8", "loop7"] and loops.all_closed()  # reverse order


#: What partx reports when the kernel refuses to delete a partition someone has open.
BUSY = "partx: /dev/loop3: error deleting partition 1\n"
DELETE = ["/fake/partx", "--delete", "/dev/loop3"]


def partx_adds_one_partition(fp, monkeypatch: pytest.MonkeyPatch) -> tuple[list, dict]:  # type: ignore[no-untyped-def]
    """The kernel knows no partition of /dev/loop3 until ``partx --update`` adds the planned
    one; (the planned partitions, the kernel's partitions as the fake sees them)."""
    wanted = layout.plan(Settings(), 1024 * MIB).partitions
    state: dict[int, tuple[Path, int, int]] = {}
    monkeypatch.setattr(devices, "kernel_partitions", lambda device: dict(state))
    fp.register(["/fake/blockdev", "--rereadpt", "/dev/loop3"])

    def add(process) -> None:  # type: ignore[no-untyped-def]
        state[1] = (Path("/dev/loop3p1"), wanted[0].start, wanted[0].size)

    fp.register(["/fake/partx", "--update", "/dev/loop3"], callback=add)
    return wanted, state


def test_partitions_added_with_partx_are_removed_again(fp, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    wanted, _ = partx_adds_one_partition(fp, monkeypatch)
    fp.register(DELETE)
    with devices.partitions(Path("/dev/loop3"), wanted) as nodes:
        assert nodes == {1: Path("/dev/loop3p1")}
        assert fp.call_count(DELETE) == 0
    assert fp.call_count(DELETE) == 1


def test_a_partition_held_open_for_a_moment_is_deleted_when_free(
    fp, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    wanted, state = partx_adds_one_partition(fp, monkeypatch)
    fp.register(DELETE, returncode=1, stderr=BUSY)
    fp.register(DELETE, callback=lambda _: state.clear())
    with devices.partitions(Path("/dev/loop3"), wanted):
        pass
    assert fp.call_count(DELETE) == 2 and not state


def test_a_partition_that_stays_busy_is_an_error_with_partx_s_words(
    fp, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    wanted, _ = partx_adds_one_partition(fp, monkeypatch)
    monkeypatch.setattr(devices, "RELEASE_TIMEOUT", 0.05)
    fp.register(DELETE, returncode=1, stderr=BUSY, occurrences=1000)
    with (
        pytest.raises(CommandError, match="error deleting partition 1"),
        devices.partitions(Path("/dev/loop3"), wanted),
    ):
        pass


def test_partitions_the_kernel_found_are_used_and_left(fp, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    wanted = layout.plan(Settings(), 1024 * MIB).partitions
    known = {1: (Path("/dev/vda1"), wanted[0].start, wanted[0].size)}
    monkeypatch.setattr(devices, "kernel_partitions", lambda device: known)
    with devices.partitions(Path("/dev/vda"), wanted) as nodes:
        assert nodes == {1: Path("/dev/vda1")}
    assert len(fp.calls) == 0


@pytest.mark.parametrize(
    ("fstype", "argv"),
    [
        ("ext4", ["/fake/mkfs.ext4", "-q", "-F", "-L", "root"]),
        ("ext2", ["/fake/mkfs.ext2", "-q", "-F", "-L", "root"]),
        ("xfs", ["/fake/mkfs.xfs", "-q", "-f", "-L", "root"]),
        ("btrfs", ["/fake/mkfs.btrfs", "-q", "-f", "-L", "root"]),
        ("swap", ["/fake/mkswap", "-L", "root"]),
        ("vfat", ["/fake/mkfs.vfat", "-F", "32", "-n", "ROOT"]),  # FAT labels: upper case
    ],
)
def test_make_filesystem_and_read_its_uuid(fp, fstype: str, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    fp.register([*argv, "/dev/loop0p1"])
    fp.register(
        ["/fake/blkid", "--probe", "--match-tag", "UUID", "--output", "value", "/dev/loop0p1"],
        stdout="0a1b2c3d-0000-4000-8000-000000000001\n",
    )
    assert filesystems.make(Path("/dev/loop0p1"), fstype, "root") == (
        "0a1b2c3d-0000-4000-8000-000000000001"
    )


def test_xfs_labels_are_cut_to_12_characters(fp) -> None:  # type: ignore[no-untyped-def]
    mkfs = ["/fake/mkfs.xfs", "-q", "-f", "-L", "gentoo-rootf", "/dev/x"]
    fp.register(mkfs)
    fp.register([fp.any()], stdout="u\n")
    filesystems.make(Path("/dev/x"), "xfs", "gentoo-rootfs-long")
    assert fp.call_count(mkfs) == 1


def test_missing_mkfs_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.undo()
    monkeypatch.setattr(runner, "tool_path", lambda: str(tmp_path))
    with pytest.raises(ToolNotFoundError, match=r"mkfs\.xfs not found: install xfsprogs"):
        filesystems.make(Path("/dev/x"), "xfs", "root")
    with pytest.raises(ToolNotFoundError, match=r"^mkfs\.vfat not found: install dosfstools$"):
        filesystems.make(Path("/dev/x"), "vfat", "esp")


def test_no_uuid_is_an_error(fp) -> None:  # type: ignore[no-untyped-def]
    fp.register([fp.any()], returncode=2)
    with pytest.raises(DiskError, match="no filesystem UUID"):
        filesystems.uuid_of(Path("/dev/x"))


def test_fstab_keeps_the_comments_and_lists_root_boot_swap() -> None:
    original = "# /etc/fstab: static file system information.\n#/dev/ROOT / ext4 noatime 0 1\n\n"
    entries = [
        fstab.entry("R", "/", "ext4"),
        fstab.entry("B", "/boot", "ext4"),
        fstab.entry("S", "none", "swap"),
        fstab.entry("1234-ABCD", "/efi", "vfat"),
    ]
    text = fstab.render(entries, original)
    assert text.startswith("# /etc/fstab: static file system information.\n#/dev/ROOT")
    active = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    assert active == [
        ["UUID=R", "/", "ext4", "noatime", "0", "1"],
        ["UUID=B", "/boot", "ext4", "noatime", "0", "2"],
        ["UUID=S", "none", "swap", "sw", "0", "0"],
        ["UUID=1234-ABCD", "/efi", "vfat", "umask=0077,nofail", "0", "0"],
    ]
    assert fstab.entry("R", "/", "btrfs").passno == "0"
    # One kind of line: what is written reads back as the same entry.
    assert [fstab.parse_line(e.line()) for e in entries] == entries


def test_the_swap_file_is_named_by_its_path_in_fstab() -> None:
    entries = [fstab.entry("R", "/", "xfs"), fstab.swap_file_entry()]
    active = [line for line in fstab.render(entries).splitlines() if line[0] != "#"]
    assert active[1] == "/swapfile\tnone\tswap\tsw\t0 0"


def test_a_busy_umount_is_retried_then_lazy(fp, monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(mounts, "is_mountpoint", lambda path: True)
    monkeypatch.setattr(mounts.time, "sleep", lambda s: None)
    fp.register(
        ["/fake/umount", "/mnt/x"],
        returncode=32,
        stderr="target is busy\n",
        occurrences=mounts.UMOUNT_ATTEMPTS,
    )
    fp.register(["/fake/umount", "--lazy", "/mnt/x"])
    with caplog.at_level(logging.WARNING):
        mounts.umount(Path("/mnt/x"))
    assert fp.call_count(["/fake/umount", "/mnt/x"]) == mounts.UMOUNT_ATTEMPTS
    assert "unmounting it lazily" in caplog.text


def test_a_failed_mount_needs_no_umount(fp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fp.register(["/fake/mount", "/dev/x", str(tmp_path)], returncode=32, stderr="bad fs\n")
    with pytest.raises(CommandError, match="bad fs"), mounts.mount(Path("/dev/x"), tmp_path):
        pass
    assert len(fp.calls) == 1


def test_mount_unmounts_after_an_error(fp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fp.register(["/fake/mount", "--types", "xfs", "--options", "ro", "/dev/x", str(tmp_path)])
    fp.register(["/fake/umount", str(tmp_path)])
    with (
        pytest.raises(RuntimeError),
        mounts.mount(Path("/dev/x"), tmp_path, fstype="xfs", options=["ro"]),
    ):
        raise RuntimeError
    assert fp.call_count(["/fake/umount", str(tmp_path)]) == 1


# --- unpack -------------------------------------------------------------------------------


def tar_with(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isreg() else None)
    return path


def member(name: str, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    if link:
        info.type, info.linkname = tarfile.LNKTYPE, link
    else:
        info.size = 1
    return info


@pytest.mark.parametrize(
    ("names", "reported"),
    [
        ([member("./etc/passwd"), member("/etc/shadow")], "`/' from member names"),
        ([member("./a/../../b")], "`./a/../../' from member names"),
        (
            [member("./a"), member("./b", link="../../etc/shadow")],
            "`../../' from hard link targets",
        ),
    ],
)
def test_members_escaping_the_target_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[tarfile.TarInfo], reported: str
) -> None:
    monkeypatch.setattr(runner, "find_tool", REAL_FIND_TOOL)  # GNU tar lists
    stage = tar_with(tmp_path / "s.tar", *names)
    with pytest.raises(
        StageError, match="refusing members outside the target .*" + re.escape(reported)
    ):
        unpack.refuse_escaping_members(stage)


def test_safe_members_pass_and_absolute_symlinks_are_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "find_tool", REAL_FIND_TOOL)
    link = tarfile.TarInfo("./etc/mtab")
    link.type, link.linkname = tarfile.SYMTYPE, "/proc/self/mounts"
    stage = tar_with(
        tmp_path / "s.tar", member("./etc/passwd"), link, member("./bin/gunzip", link="./bin/gzip")
    )
    assert unpack.refuse_escaping_members(stage) == 3


def test_not_a_tar_is_a_stage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "find_tool", REAL_FIND_TOOL)
    (tmp_path / "s.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(StageError):
        unpack.refuse_escaping_members(tmp_path / "s.tar")


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\xfd7zXZ\x00\x00", "xz"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"BZh91AY", "bzip2"),
        (b"\x1f\x8b\x08", "gzip"),
        (b"./\x00\x00", "none"),
    ],
)
def test_compression_from_the_first_bytes(tmp_path: Path, head: bytes, kind: str) -> None:
    (tmp_path / "stage").write_bytes(head + b"\0" * 16)
    assert unpack.compression(tmp_path / "stage") == kind


def test_extract_as_the_handbook_says(fp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stage = tmp_path / "stage3.tar.xz"
    stage.write_bytes(b"\xfd7zXZ\x00" + b"\0" * 10)
    tar = [
        "/fake/tar",
        "--extract",
        f"--directory={tmp_path}",
        f"--file={stage}",
        "--use-compress-program=/fake/xz -T0",
        "--same-owner",
        "--preserve-permissions",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*.*",
        "--xattrs-exclude=trusted.SGI_ACL_*",
        "--acls",
    ]
    fp.register(tar)
    unpack.extract(stage, tmp_path)
    assert fp.call_count(tar) == 1


def test_multithreaded_decompressors_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "have_tool", lambda name: name in ("pigz", "gzip", "lbzip2"))
    assert unpack.decompressor("gzip") == ["/fake/pigz"]
    assert unpack.decompressor("bzip2") == ["/fake/lbzip2"]
    monkeypatch.setattr(runner, "have_tool", lambda name: False)
    with pytest.raises(ToolNotFoundError, match="zstd not found: install zstd"):
        unpack.decompressor("zstd")


def test_release_logs_only_while_failing(caplog) -> None:  # type: ignore[no-untyped-def]
    def boom() -> None:
        raise DiskError("stuck")

    with caplog.at_level(logging.ERROR):
        resources.release("thing", boom, failing=True)
    assert "could not release thing: stuck" in caplog.text
    with pytest.raises(DiskError), contextlib.suppress(KeyError):
        resources.release("thing", boom, failing=False)


def test_an_interrupted_release_is_finished_then_the_interrupt_goes_on(caplog) -> None:  # type: ignore[no-untyped-def]
    calls = []

    def umount() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Interrupted(15, "SIGTERM")

    with caplog.at_level(logging.WARNING), pytest.raises(Interrupted):
        resources.release("the mount on /x", umount, failing=False)
    assert len(calls) == 2
    assert "interrupted while releasing the mount on /x" in caplog.text


def test_a_loop_device_is_waited_for_until_it_is_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """Freeing a loop device still open elsewhere only marks it; the last close frees it."""
    backing = devices.SYS_BLOCK / "loop7" / "loop" / "backing_file"
    backing.parent.mkdir(parents=True)
    backing.write_text("/images/disk.img\n")
    pauses = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:  # the last user closes it
            backing.unlink()

    monkeypatch.setattr(devices.time, "sleep", pause)
    devices._wait_released(Path("/dev/loop7"), "/images/disk.img\n")
    assert len(pauses) == 2 and not backing.exists()


def test_a_mount_made_as_the_signal_came_is_unmounted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mounted: list[str] = []
    commands: list[str] = []
    monkeypatch.setattr(mounts, "_mounts_on", lambda path: len(mounted))

    def run(argv, **kwargs):  # type: ignore[no-untyped-def]
        commands.append(str(argv[0]))
        if argv[0] == "mount":
            mounted.append(str(argv[-1]))  # mount got as far as mounting
            raise Interrupted(15, "SIGTERM")
        mounted.clear()

    monkeypatch.setattr(runner, "run", run)
    with pytest.raises(Interrupted), mounts.mount(Path("/dev/x"), tmp_path):
        pytest.fail("never reached")
    assert commands == ["mount", "umount"] and mounted == []


def test_the_mount_directory_pins_the_tools_and_goes_with_its_mount_points(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pinned: list[Path] = []
    monkeypatch.setattr(runner, "pin", pinned.append)
    monkeypatch.setattr(mounts.tempfile, "tempdir", str(tmp_path))
    with mounts.temporary_directory() as top:
        assert pinned == [top]  # before anything can be mounted in it
        (top / "root").mkdir()
        (top / "boot").mkdir()
    assert not top.exists()


def test_the_mount_directory_stays_while_something_is_mounted_on_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Never a recursive removal: what a mount left must stay untouched."""
    monkeypatch.setattr(runner, "pin", lambda path: None)
    monkeypatch.setattr(mounts.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(mounts, "is_mountpoint", lambda path: True)
    with pytest.raises(DiskError, match="original"), caplog.at_level(logging.ERROR):  # noqa: SIM117
        with mounts.temporary_directory() as top:
            (top / "etc").mkdir()  # as the guest's root filesystem would show
            raise DiskError("original")
    assert (top / "etc").is_dir()
    assert "could not release the directory" in caplog.text


def test_check_unused_asks_once_what_uses_each_device(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[Path] = []

    def users_of(device: Path) -> list[str]:
        asked.append(device)
        return [f"{device} is mounted on /busy"] if device == Path("/dev/loop1") else []

    monkeypatch.setattr(devices, "users_of", users_of)
    monkeypatch.setattr(devices, "is_block_device", lambda path: False)
    loops = [Path("/dev/loop1"), Path("/dev/loop2")]
    monkeypatch.setattr(devices, "loops_of", lambda source: loops)
    with pytest.raises(DiskError, match="in use: /dev/loop1 is mounted on /busy;"):
        devices.check_unused(Path("/dev/loop1"), Path("/images/disk.img"))
    assert asked == loops
    assert "is also attached to /dev/loop2" in caplog.text
