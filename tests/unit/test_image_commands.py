"""Prepared images without root: the commands that install one, when one is not used, and
how the cache ages images with their stage."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gentoobootstrap import runner
from gentoobootstrap.disk import filesystems, images, layout
from gentoobootstrap.disk.filesystems import ROOT_FILESYSTEMS
from gentoobootstrap.errors import DiskError
from gentoobootstrap.stages import cache

MIB = layout.MIB


@pytest.fixture(autouse=True)
def fake_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "find_tool", lambda name: f"/fake/{name}")


def sparse_image(path: Path, mib: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(mib * MIB)
    return path


#: dumpe2fs of a 100 MiB ext4 image (4 KiB blocks, two groups): blocks 1024-25590 and
#: 25592-25599 free, as its superblock counts them.
DUMPE2FS = """\
Block count:              25600
Free blocks:              24575
Block size:               4096

Group 0: (Blocks 0-16383) csum 0x1234 [ITABLE_ZEROED]
  Free blocks: 1024-16383
Group 1: (Blocks 16384-25599) [INODE_UNINIT, ITABLE_ZEROED]
  Free blocks: 16384-25590, 25592-25599
"""
#: xfs_db's answer for a 300 MiB xfs image (4 KiB blocks, 4 groups of 19200 blocks).
XFS_DB = """\
blocksize = 4096
agblocks = 19200
    agno    agbno      len
       0     1000    18200
       1        6        1
       1       10    19190
   from      to extents  blocks    pct
      1       1       1       1   0.00
  16384   19200       2   37390 100.00
total free extents 3
total free blocks 37391
average free extent size 12463.67
"""


def image_and_disk(tmp_path: Path, mib: int) -> tuple[Path, Path]:
    """An image with bytes where its filesystem uses blocks, and a disk full of old bytes."""
    image = sparse_image(tmp_path / "s.tar.zst~fs-x.img", mib)
    with open(image, "r+b") as f:
        f.write(b"superblock")
        f.seek(70 * MIB)
        f.write(b"used, after free space")
    disk = tmp_path / "disk"
    disk.write_bytes(b"\xaa" * (mib * MIB))
    return image, disk


def test_ext4_image_copies_used_blocks_grows_unmounted_then_gets_a_new_uuid(  # type: ignore[no-untyped-def]
    fp, tmp_path: Path
) -> None:
    image, disk = image_and_disk(tmp_path, 100)
    fp.register(["/fake/dumpe2fs", str(image)], stdout=DUMPE2FS)
    fp.register(["/fake/resize2fs", str(disk)])
    fp.register(["/fake/tune2fs", "-U", "random", str(disk)])
    how = images.install(image, "ext4", disk, size=1000 * MIB)
    assert how == "copied the image's used blocks"
    assert [c[0].rsplit("/", 1)[-1] for c in fp.calls] == ["dumpe2fs", "resize2fs", "tune2fs"]
    written, old = image.read_bytes(), disk.read_bytes()
    # Used: blocks 0-1023 and 25591 (its 64 KiB piece), read from the image, holes as zeros.
    assert old[: 4 * MIB] == written[: 4 * MIB], "not the image's bytes"
    assert old[100 * MIB - 64 * 1024 :] == written[100 * MIB - 64 * 1024 :], "not the image's bytes"
    # Free: the disk's old bytes are left there, as e2image leaves them.
    assert old[4 * MIB : 100 * MIB - 64 * 1024] == b"\xaa" * (96 * MIB - 64 * 1024)


def test_xfs_image_copies_what_xfs_db_does_not_list_free_and_grows_once_mounted(  # type: ignore[no-untyped-def]
    fp, tmp_path: Path
) -> None:
    image, disk = image_and_disk(tmp_path, 300)
    fp.register(["/fake/xfs_db", "-r", fp.any()], stdout=XFS_DB)
    fp.register(["/fake/xfs_admin", "-U", "generate", str(disk)])
    images.install(image, "xfs", disk, size=1000 * MIB)
    assert [c[0].rsplit("/", 1)[-1] for c in fp.calls] == ["xfs_db", "xfs_admin"]
    written, old = image.read_bytes(), disk.read_bytes()
    block = 4096
    group_1 = 19200 * block
    used = [(0, 1000 * block), (group_1, group_1 + 6 * block), (group_1 + 7 * block,
            group_1 + 10 * block), (2 * group_1, 300 * MIB)]  # fmt: skip
    for start, end in used:
        assert old[start:end] == written[start:end]
    assert old[1000 * block + 64 * 1024 : group_1 - 64 * 1024].count(b"\xaa") == (
        group_1 - 1000 * block - 128 * 1024
    )
    assert written[70 * MIB : 70 * MIB + 4] == b"used"
    assert old[70 * MIB : 70 * MIB + 4] == b"\xaa" * 4  # in group 0's free space
    fp.register(["/fake/xfs_growfs", str(tmp_path)])
    images.grow_mounted("xfs", tmp_path)
    images.grow_mounted("ext4", tmp_path)  # grown before it was mounted
    assert len(fp.calls) == 3


def test_free_space_that_does_not_add_up_is_not_trusted_and_nothing_is_written(  # type: ignore[no-untyped-def]
    fp, tmp_path: Path
) -> None:
    image, disk = image_and_disk(tmp_path, 100)
    fp.register(["/fake/dumpe2fs", str(image)], stdout=DUMPE2FS.replace("24575", "24576"))
    with pytest.raises(images.Unusable, match="dumpe2fs did not list the image's free space"):
        images.install(image, "ext4", disk, size=1000 * MIB, wipe=True)
    assert disk.read_bytes() == b"\xaa" * (100 * MIB)
    assert len(fp.calls) == 1  # no wipefs


@pytest.mark.parametrize(
    ("fstype", "image_mib", "size_mib", "why"),
    [
        ("ext4", 100, 99, r"root partition \(99 MiB\) is smaller than the image \(100 MiB\)"),
        ("xfs", 300, 300 * 65, "grown 65-fold would be left with too many small allocation"),
    ],
)
def test_an_image_that_does_not_fit_the_partition_is_not_used(  # type: ignore[no-untyped-def]
    fp, tmp_path: Path, fstype: str, image_mib: int, size_mib: int, why: str
) -> None:
    image = sparse_image(tmp_path / "i.img", image_mib)
    with pytest.raises(images.Unusable, match=why):
        images.install(image, fstype, Path("/dev/x"), size=size_mib * MIB)
    assert not fp.calls  # nothing written


def test_btrfs_and_stages_outside_the_cache_get_no_image(tmp_path: Path) -> None:
    with pytest.raises(images.Unusable, match="no tool lists the used blocks of btrfs"):
        images.prepared(tmp_path / "stage.tar.zst", tmp_path, "btrfs")
    stage = tmp_path / "elsewhere" / "stage.tar.zst"
    with pytest.raises(images.Unusable, match="is not a checked file of the cache"):
        images.prepared(stage, tmp_path / "cache", "ext4")


def test_every_filesystem_create_makes_is_declared_once() -> None:
    assert set(ROOT_FILESYSTEMS) <= set(filesystems.FILESYSTEMS)
    for name, fs in filesystems.FILESYSTEMS.items():
        if fs.space_map is not None:
            assert fs.new_uuid, f"{name}: an installed image needs a new UUID"


def test_root_fits_the_image_made_for_the_stage() -> None:
    assert images.root_mib(1000 * MIB) == 1100 + 64


def test_images_age_and_go_with_their_stage(tmp_path: Path) -> None:
    entry = cache.entry(tmp_path, "stage3", "amd64-openrc")
    made = []
    for n in ("a", "b", "c"):
        with entry.locked():
            tarball = tmp_path / f"{n}.tar.zst"
            tarball.write_bytes(n.encode())
            entry.store(tarball, cache.Meta("url", n, tarball.name, 0.0, 0.0, "signature"))
            image = entry.path / cache.derived_name(tarball.name, "ext4-1234.img")
            image.write_bytes(b"image")
            made.append(image.name)
    names = {p.name for p in entry.path.iterdir()}
    # The previous stage (a create may still be using it) keeps its image; older ones go.
    assert {"b.tar.zst", made[1], "c.tar.zst", made[2]} <= names
    assert "a.tar.zst" not in names and made[0] not in names
    with entry.locked():
        entry.remove()
    assert {p.name for p in entry.path.iterdir()} == {".lock"}


def test_an_image_shorter_than_its_filesystem_fails_the_copy_and_stops_its_reader(
    tmp_path: Path,
) -> None:
    image, disk = image_and_disk(tmp_path, 100)
    threads = threading.active_count()
    with pytest.raises(DiskError, match=f"{image} ends at {100 * MIB}, inside its filesystem"):
        images._copy(image, disk, [(0, 200 * MIB)])
    assert threading.active_count() == threads
