"""Prepared images without root: the commands that install one, when one is not used, and
how the cache ages images with their stage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gentoobootstrap import runner
from gentoobootstrap.disk import filesystems, images, layout
from gentoobootstrap.disk.filesystems import ROOT_FILESYSTEMS
from gentoobootstrap.stages import cache

MIB = layout.MIB


@pytest.fixture(autouse=True)
def fake_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "find_tool", lambda name: f"/fake/{name}")


def sparse_image(path: Path, mib: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(mib * MIB)
    return path


def test_ext4_image_copies_used_blocks_grows_unmounted_then_gets_a_new_uuid(  # type: ignore[no-untyped-def]
    fp, tmp_path: Path
) -> None:
    image = sparse_image(tmp_path / "s.tar.zst~ext4-x.img", 100)
    dev = Path("/dev/loop0p1")
    fp.register(["/fake/e2image", "-r", "-a", str(image), str(dev)])
    fp.register(["/fake/resize2fs", str(dev)])
    fp.register(["/fake/tune2fs", "-U", "random", str(dev)])
    how = images.install(image, "ext4", dev, size=1000 * MIB)
    assert how == "copied the image's used blocks"
    assert [c[0].rsplit("/", 1)[-1] for c in fp.calls] == ["e2image", "resize2fs", "tune2fs"]


def test_xfs_image_keeps_xfs_copys_log_to_itself_and_grows_once_mounted(  # type: ignore[no-untyped-def]
    fp, tmp_path: Path
) -> None:
    image = sparse_image(tmp_path / "s.tar.zst~xfs-x.img", 300)
    dev = Path("/dev/loop0p1")
    fp.register(["/fake/xfs_copy", "-d", "-L", fp.any(min=1, max=1), str(image), str(dev)])
    fp.register(["/fake/xfs_admin", "-U", "generate", str(dev)])
    images.install(image, "xfs", dev, size=1000 * MIB)
    log = str(fp.calls[0][3])
    assert not log.startswith("/var/tmp") and not os.path.exists(log)
    fp.register(["/fake/xfs_growfs", str(tmp_path)])
    images.grow_mounted("xfs", tmp_path)
    images.grow_mounted("ext4", tmp_path)  # grown before it was mounted
    assert len(fp.calls) == 3


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
    with pytest.raises(images.Unusable, match="no tool writes only the used blocks of btrfs"):
        images.prepared(tmp_path / "stage.tar.zst", tmp_path, "btrfs")
    stage = tmp_path / "elsewhere" / "stage.tar.zst"
    with pytest.raises(images.Unusable, match="is not a checked file of the cache"):
        images.prepared(stage, tmp_path / "cache", "ext4")


def test_every_filesystem_create_makes_is_declared_once() -> None:
    assert set(ROOT_FILESYSTEMS) <= set(filesystems.FILESYSTEMS)
    for name, fs in filesystems.FILESYSTEMS.items():
        if fs.image_writer is not None:
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
