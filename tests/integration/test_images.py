"""Prepared images: create installs the same tree from an image as by unpacking, to the
nanosecond; a fresh UUID, a clean filesystem grown to its partition; btrfs and a separate
/boot fall back to unpacking; on reflink storage the disk shares the image's blocks."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import sh
from test_create import INSTALLED, run_create, sparse
from test_create_faults import create_stuck_in_unpack

from gentoobootstrap.disk import filesystems
from gentoobootstrap.disk.images import used_extents
from support import leaks, osdef, stage
from support.loopdisk import detach

pytestmark = pytest.mark.root

MIB = 1 << 20
FILLER_MIB = 64
#: What the log says when root came from an image: how the image got onto the disk.
FROM_IMAGE = re.compile(r"root: \S+ on \S+ from \S+\.img \((.*)\), UUID")
CHECK = {
    "ext4": ["e2fsck", "-f", "-n"],
    "xfs": ["xfs_repair", "-n"],
    "btrfs": ["btrfs", "check", "--readonly"],
}


@contextlib.contextmanager
def attached(image: Path, offset: int, size: int) -> Iterator[Path]:
    """The slice of ``image`` as a read-only loop device."""
    loop = Path(
        str(
            sh.losetup(
                "--show", "--find", "--read-only", "--offset", offset, "--sizelimit", size, image
            )
        ).strip()
    )
    try:
        yield loop
    finally:
        detach(loop)


def root_of(disk: Path) -> dict[str, int]:
    return osdef.partitions(disk)[0]


def check_clean(disk: Path, fs: str) -> None:
    root = root_of(disk)
    with attached(disk, root["start"], root["size"]) as loop:
        sh.Command(CHECK[fs][0])(*CHECK[fs][1:], str(loop))


def cached_images(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/*/*.img"))


def create_new(
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    tarball: Path,
    name: str,
    mib: int = 320,
    **settings: object,
) -> str:
    """A create that must work, on a new ``mib`` MiB disk file ``name``; its log."""
    status, log = run_create(tmp, monkeypatch, sparse(tmp / name, mib), tarball, capfd, **settings)
    assert status == 0, log
    return log


def test_the_fixture_stage_has_what_an_image_must_keep(stages) -> None:  # type: ignore[no-untyped-def]
    tree = stages["openrc", "xz"].tree
    assert "security.capability" in os.listxattr(tree / "bin/ping")
    names = {n for p in tree.rglob("*") if not p.is_symlink() for n in os.listxattr(p)}
    assert {"system.posix_acl_access", "system.posix_acl_default"} <= names
    assert stage.hardlink_groups(tree)


@pytest.mark.parametrize("fs", ["ext4", "xfs", "btrfs"])
def test_image_and_unpack_install_the_same_tree(  # type: ignore[no-untyped-def]
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd, stages, fs: str
) -> None:
    built = stages["openrc", "xz"]
    found, logs = {}, {}
    for images in ("yes", "no"):
        disk = sparse(no_leaks / f"{images}.img", 400)
        status, log = run_create(
            no_leaks / images, monkeypatch, disk, built.tarball, capfd,
            filesystem=fs, prepared_images=images,
        )  # fmt: skip
        assert status == 0, log
        found[images], logs[images] = FROM_IMAGE.search(log), log
        check_clean(disk, fs)
    if fs == "btrfs":
        assert found["yes"] is None
        assert "root: unpacking the stage (no tool lists the used blocks of btrfs)" in logs["yes"]
    else:
        assert (
            found["yes"] is not None and found["yes"].group(1) == "copied the image's used blocks"
        )
    assert found["no"] is None
    (image,) = cached_images(no_leaks / "yes" / "conf" / "cache") or [None]  # type: ignore[list-item]
    assert (image is None) == (fs == "btrfs")
    if image is not None:
        assert image.stat().st_mode & 0o777 == 0o644
    yes, no = root_of(no_leaks / "yes.img"), root_of(no_leaks / "no.img")
    uuids = {osdef.probe(no_leaks / "yes.img", yes["start"], yes["size"])["UUID"]}
    if image is not None:
        uuids.add(osdef.probe(image)["UUID"])
    assert len(uuids) == (2 if image is not None else 1), "the image's UUID was kept"
    with (
        osdef.mounted(
            no_leaks / "yes.img", no_leaks / "yes-root", yes["start"], yes["size"], fs
        ) as a,
        osdef.mounted(no_leaks / "no.img", no_leaks / "no-root", no["start"], no["size"], fs) as b,
    ):
        assert stage.differences(a, b, frozenset(INSTALLED)) == []
        assert stage.compare(built.tree, a, ignore=INSTALLED) == []
        # Grown to the partition: as much room as the unpacked one (within metadata's share).
        room = os.statvfs(a).f_blocks * os.statvfs(a).f_frsize
        assert room > 0.9 * os.statvfs(b).f_blocks * os.statvfs(b).f_frsize


@pytest.mark.parametrize("fs", ["ext4", "xfs"])
def test_an_image_copied_over_old_bytes_is_the_image_wherever_the_filesystem_looks(  # type: ignore[no-untyped-def]
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd, stages, fs: str
) -> None:
    """Only the blocks the image's filesystem uses are written, holes of the image file as
    the zeros they read as: every byte of the disk old, the filesystem is still clean and
    holds exactly the stage (no block it uses kept an old byte)."""
    built = stages["openrc", "xz"]
    disk = no_leaks / "old.img"
    with open(disk, "wb") as f:
        f.write(STALE * (400 * MIB // len(STALE)))
        f.truncate(400 * MIB)
    log = create_new(no_leaks, monkeypatch, capfd, built.tarball, "first.img", filesystem=fs)
    assert "Preparing the" in log
    status, log = run_create(no_leaks, monkeypatch, disk, built.tarball, capfd, filesystem=fs)
    assert status == 0, log
    found = FROM_IMAGE.search(log)
    assert found is not None and found.group(1) == "copied the image's used blocks", log
    check_clean(disk, fs)
    root = root_of(disk)
    (image,) = cached_images(no_leaks / "conf" / "cache")
    space_map = filesystems.FILESYSTEMS[fs].space_map
    assert space_map is not None
    # Every block the image's filesystem uses (growing then adds metadata that the kernel
    # initialises itself, as after e2image or xfs_copy).
    in_use = used_extents(image, space_map, image.stat().st_size)
    with attached(disk, root["start"], root["size"]) as loop, open(loop, "rb") as f:
        old = [start for start, end in in_use if STALE in os.pread(f.fileno(), end - start, start)]
    assert old == []
    with osdef.mounted(disk, no_leaks / "root", root["start"], root["size"], fs) as target:
        assert stage.compare(built.tree, target, ignore=INSTALLED) == []


def test_a_second_create_reuses_the_image_and_a_boot_partition_unpacks(  # type: ignore[no-untyped-def]
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd, stages
) -> None:
    built = stages["openrc", "xz"]
    cache = no_leaks / "conf" / "cache"
    log = create_new(no_leaks, monkeypatch, capfd, built.tarball, "1.img")
    assert "Preparing the ext4 image" in log and FROM_IMAGE.search(log)
    (image,) = cached_images(cache)
    made = image.stat().st_mtime_ns
    log = create_new(no_leaks, monkeypatch, capfd, built.tarball, "2.img")
    assert "Preparing" not in log and FROM_IMAGE.search(log)
    assert cached_images(cache) == [image] and image.stat().st_mtime_ns == made
    log = create_new(no_leaks, monkeypatch, capfd, built.tarball, "3.img", 400, boot_size=64)
    assert "root: unpacking the stage (the layout has a separate /boot)" in log


@pytest.fixture
def reflink_storage(no_leaks: Path) -> Iterator[Path]:
    """An xfs with reflink=1 on a loop device, mounted below the test's directory."""
    backing = sparse(no_leaks / "storage.xfs", 2048)
    sh.Command("mkfs.xfs")("-q", "-m", "reflink=1", str(backing))
    with osdef.loop_mounted(backing, no_leaks / "storage", "rw") as mountpoint:
        yield mountpoint


def used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@pytest.fixture(scope="module")
def filled_stage(tmp_path_factory: pytest.TempPathFactory) -> stage.Stage:
    """The test stage with 64 MiB more data: what sharing saves shows above the metadata."""
    return stage.build(tmp_path_factory.mktemp("filled"), "openrc", "zstd", filler_mib=FILLER_MIB)


@pytest.mark.parametrize("fs", ["ext4", "xfs"])
def test_reflink_storage_shares_the_images_blocks(  # type: ignore[no-untyped-def]
    reflink_storage: Path, monkeypatch: pytest.MonkeyPatch, capfd, filled_stage, fs: str
) -> None:
    built = filled_stage
    work = reflink_storage
    # The first create prepares the image; the second is the one measured.
    status, log = run_create(
        work, monkeypatch, sparse(work / "first.img", 400), built.tarball, capfd, filesystem=fs
    )
    assert status == 0, log
    disk = sparse(work / "disk.img", 400)
    before = used(work)
    status, log = run_create(work, monkeypatch, disk, built.tarball, capfd, filesystem=fs)
    assert status == 0, log
    found = FROM_IMAGE.search(log)
    assert found is not None and found.group(1) == "shared the image's blocks (reflink)", log
    (image,) = cached_images(work / "conf" / "cache")
    assert shared_bytes(disk) >= FILLER_MIB * MIB  # the stage's data is the image's
    # The disk costs what the install changed (for xfs, the 64 MiB log its new UUID clears),
    # less than the copy it would otherwise be.
    assert used(work) - before < image_data(image)
    check_clean(disk, fs)
    root = root_of(disk)
    with osdef.mounted(disk, work / "root", root["start"], root["size"], fs) as target:
        assert stage.compare(built.tree, target, ignore=INSTALLED) == []
    assert osdef.probe(disk, root["start"], root["size"])["UUID"] != osdef.probe(image)["UUID"]


#: Where btrfs keeps its first superblock copy, and the magic that marks it.
BTRFS_MIRROR, BTRFS_MAGIC = 64 * MIB + 0x40, b"_BHRfS_M"
#: What an old root leaves behind, for the new one to leave nowhere.
STALE = b"stale bytes of an old root"


@pytest.mark.parametrize("old", ["btrfs", "xfs"])
def test_a_shared_image_over_an_old_root_leaves_no_old_signature(  # type: ignore[no-untyped-def]
    reflink_storage: Path, monkeypatch: pytest.MonkeyPatch, capfd, filled_stage, old: str
) -> None:
    """Sharing replaces the whole root partition (the rest of it freed), so no wipefs is
    needed: only the new filesystem's signature is left, not even btrfs's copy at 64 MiB,
    nor anything the old filesystem held past the end of the image."""
    work = reflink_storage
    disk = sparse(work / "disk.img", 400)
    status, log = run_create(work, monkeypatch, disk, filled_stage.tarball, capfd, filesystem=old)
    assert status == 0, log
    root = root_of(disk)
    with open(disk, "rb") as f:
        f.seek(root["start"] + BTRFS_MIRROR)
        assert (f.read(len(BTRFS_MAGIC)) == BTRFS_MAGIC) == (old == "btrfs")
    with open(disk, "r+b") as f:  # old data everywhere, as a well-filled root leaves it
        for at in stale_spots(root):
            f.seek(at)
            f.write(STALE)
    status, log = run_create(
        work, monkeypatch, disk, filled_stage.tarball, capfd, reinstall=True, filesystem="ext4"
    )
    assert status == 0, log
    found = FROM_IMAGE.search(log)
    assert found is not None and found.group(1) == "shared the image's blocks (reflink)", log
    assert root_of(disk) == root
    with attached(disk, root["start"], root["size"]) as loop:
        types = str(sh.wipefs("--no-act", "--noheadings", "--output", "TYPE", str(loop)))
    assert types.split() == ["ext4"]
    with open(disk, "rb") as f:
        f.seek(root["start"] + BTRFS_MIRROR)
        assert f.read(len(BTRFS_MAGIC)) != BTRFS_MAGIC
        left = []
        for at in stale_spots(root):
            f.seek(at)
            if f.read(len(STALE)) == STALE:
                left.append(at - root["start"])
    assert left == []
    check_clean(disk, "ext4")


def stale_spots(root: dict[str, int]) -> range:
    """One place in every MiB of the partition, away from where filesystems keep metadata."""
    return range(root["start"] + MIB - 4096, root["start"] + root["size"], MIB)


def shared_bytes(file: Path) -> int:
    """Bytes of ``file`` in extents it shares with another file (``filefrag -v``)."""
    out = str(sh.filefrag("-v", str(file)))
    block = int(re.search(r"blocks of (\d+) bytes", out).group(1))  # type: ignore[union-attr]
    lengths = [int(line.split(":")[3].split()[0]) for line in out.splitlines() if "shared" in line]
    return sum(lengths) * block


def image_data(image: Path) -> int:
    """Bytes the sparse image really holds."""
    return os.stat(image).st_blocks * 512


def test_sigterm_while_the_image_is_made_leaves_no_image_and_nothing_attached(  # type: ignore[no-untyped-def]
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd, stages
) -> None:
    built = stages["openrc", "xz"]
    disk = sparse(no_leaks / "disk.img", 320)
    confdir = osdef.configure(no_leaks / "conf", stage4_file=built.tarball)
    with create_stuck_in_unpack(no_leaks, disk, confdir) as (process, logfile):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    log = logfile.read_text()
    assert "Preparing the ext4 image" in log and "tar --extract" in log, log
    assert leaks(no_leaks) == []
    cache = confdir / "cache"
    assert cached_images(cache) == [] and list((cache / "tmp").iterdir()) == []
    # The next create makes the image and installs from it.
    status, log = run_create(no_leaks, monkeypatch, disk, built.tarball, capfd)
    assert status == 0 and FROM_IMAGE.search(log), log
    assert len(cached_images(cache)) == 1


def test_a_stage_that_does_not_record_its_size_gets_an_image_too(  # type: ignore[no-untyped-def]
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd, stages
) -> None:
    built = stages["openrc", "xz"]
    # Compressed from a pipe, as many build scripts do: the frame has no content size.
    piped = no_leaks / "piped.tar.zst"
    tar = sh.tar.bake("--create", "--directory", str(built.tree), "--numeric-owner", "--xattrs")
    with open(piped, "wb") as out:
        sh.zstd(
            "-q",
            "-c",
            _in=tar("--xattrs-include=*.*", "--acls", "--file=-", ".", _piped=True),
            _out=out,
        )
    assert "Decompressed Size" not in str(sh.zstd("--list", "-v", str(piped)))
    disk = sparse(no_leaks / "disk.img", 400)
    status, log = run_create(no_leaks, monkeypatch, disk, piped, capfd)
    assert status == 0 and FROM_IMAGE.search(log), log
    root = root_of(disk)
    with osdef.mounted(disk, no_leaks / "root", root["start"], root["size"]) as target:
        assert stage.compare(built.tree, target, ignore=INSTALLED) == []


def test_an_image_others_could_write_or_a_link_in_its_place_is_made_again(  # type: ignore[no-untyped-def]
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd, stages
) -> None:
    built = stages["openrc", "xz"]
    cache = no_leaks / "conf" / "cache"
    log = create_new(no_leaks, monkeypatch, capfd, built.tarball, "1.img")
    (image,) = cached_images(cache)
    image.chmod(0o664)
    log = create_new(no_leaks, monkeypatch, capfd, built.tarball, "2.img")
    assert "making it again" in log and "Preparing the ext4 image" in log, log
    assert image.stat().st_mode & 0o777 == 0o644
    # A link planted in its place points at a file of the node: never followed, never written.
    canary = no_leaks / "canary"
    canary.write_bytes(b"node file\n")
    image.unlink()
    image.symlink_to(canary)
    log = create_new(no_leaks, monkeypatch, capfd, built.tarball, "3.img")
    assert "Preparing the ext4 image" in log and FROM_IMAGE.search(log), log
    assert canary.read_bytes() == b"node file\n" and not image.is_symlink()
