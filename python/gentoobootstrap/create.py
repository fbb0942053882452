"""``create``: install the Gentoo stage onto the instance's first disk.

A flat list of steps, each ``def step(ctx) -> None`` logged with its duration.
Every resource (loop device, partition devices, mounts, the mount directory)
goes on ``ctx.stack`` and is released in reverse order on success, on error
and on SIGTERM/SIGINT/SIGHUP.  The stage is obtained and verified before
anything touches the disk.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from gentoobootstrap import (
    cache,
    disks,
    filesystems,
    guest,
    hooks,
    images,
    layout,
    log,
    mounts,
    stages,
    unpack,
)
from gentoobootstrap.context import Context
from gentoobootstrap.errors import (
    CommandError,
    ConfigError,
    DiskError,
    GentooBootstrapError,
    StageError,
)
from gentoobootstrap.guestroot import GuestRoot
from gentoobootstrap.layout import Partition
from gentoobootstrap.osenv import OSEnv
from gentoobootstrap.settings import Settings

logger = logging.getLogger(__name__)


def obtain_stage(ctx: Context) -> None:
    ctx.stage = stages.obtain(ctx.settings)
    logger.info("stage: %s", ctx.stage)


def obtain_snapshot(ctx: Context) -> None:
    """The verified portage snapshot (SNAPSHOT), and PORTAGE_CONFDIR checked, before the disk."""
    ctx.snapshot = stages.obtain_snapshot(ctx.settings)
    confdir = ctx.settings.portage_confdir
    if confdir is not None and not confdir.is_dir():
        raise ConfigError(f"{confdir} is not a directory", key="PORTAGE_CONFDIR")


def check_stage(ctx: Context) -> None:
    """No member of the stage or snapshot may land outside the target: checked before the
    disk is touched (a cached download was checked once, when it entered the cache)."""
    for tarball in (ctx.stage, ctx.snapshot):
        if tarball is not None and not cache.recorded_member_count(tarball, ctx.settings.cache_dir):
            count = unpack.refuse_escaping_members(tarball)
            logger.info("%s: %d entries checked", tarball.name, count)


def attach_disk(ctx: Context) -> None:
    source = ctx.env.first_disk_path
    ctx.disk = ctx.stack.enter_context(disks.attach(source))
    if ctx.env.reinstall:
        logger.info("reinstall: everything on %s is replaced", source)


def check_disk(ctx: Context) -> None:
    assert ctx.disk is not None and ctx.stage is not None
    disks.check_unused(ctx.disk, ctx.env.disks[0].path)
    plan_disk(ctx, unpack.unpacked_size(ctx.stage, ctx.settings.cache_dir))


def plan_disk(ctx: Context, content_bytes: Optional[int]) -> None:
    """Plan the layout for ``ctx.disk``, its root big enough for ``content_bytes`` when known."""
    assert ctx.disk is not None
    min_root = images.root_mib(content_bytes) if content_bytes else 0
    root_path = ctx.env.hv.get("root_path", "")
    ctx.layout = layout.plan(
        ctx.settings,
        disks.size_of(ctx.disk),
        root_path=root_path,
        maxmem_mib=ctx.env.maxmem_mib,
        min_root_mib=min_root,
    )
    if ctx.layout.style == "none" and layout.first_disk_partition(root_path):
        logger.warning(
            "INSTANCE_HV_root_path=%s names a partition but PARTITION_STYLE=none puts root on "
            "the whole disk: set the instance's root_path to the disk (e.g. /dev/vda)",
            root_path,
        )
    logger.info("layout: %s", ctx.layout.describe())
    boot_type = ctx.env.hv.get("boot_type", "")
    if boot_type:
        logger.info("boot type: %s (INSTANCE_HV_boot_type)", boot_type)
    layout.check_boot_type(ctx.layout, boot_type)


def partition_disk(ctx: Context) -> None:
    assert ctx.disk is not None and ctx.layout is not None
    disks.wipe(ctx.disk)
    if ctx.layout.style != "none":
        disks.write_table(ctx.disk, ctx.layout)
    nodes = ctx.stack.enter_context(disks.partitions(ctx.disk, ctx.layout.partitions))
    roles = {p.role: nodes[p.number] for p in ctx.layout.partitions}
    ctx.root_dev, ctx.boot_dev, ctx.swap_dev = roles["root"], roles.get("boot"), roles.get("swap")
    ctx.esp_dev = roles.get("esp")


def _devices(ctx: Context) -> list[tuple[Partition, Path]]:
    """The planned partitions with their devices: root, then /boot, swap, the ESP."""
    assert ctx.layout is not None
    devices = {"root": ctx.root_dev, "boot": ctx.boot_dev, "swap": ctx.swap_dev, "esp": ctx.esp_dev}
    return [
        (p, device)
        for role, device in devices.items()
        for p in ctx.layout.partitions
        if p.role == role and device is not None
    ]


def install_image(ctx: Context) -> None:
    """The root filesystem from the stage's prepared image (see :mod:`images`), when it can be.

    Otherwise (one line in the log says why) make_filesystems makes it and unpack_stage
    unpacks the stage, as without images.  A separate /boot is always unpacked: the image
    holds the stage's /boot in the root filesystem.
    """
    assert ctx.stage is not None and ctx.layout is not None and ctx.root_dev is not None
    if not ctx.settings.prepared_images:
        return
    root = ctx.layout.root
    try:
        if ctx.layout.role("boot") is not None:
            raise images.Unusable("the layout has a separate /boot")
        image = images.prepared(ctx.stage, ctx.settings.cache_dir, root.fstype)
        source = ctx.env.disks[0].path
        disk_file = source if source is not None and not disks.is_block_device(source) else None
        flush = tuple(dict.fromkeys(d for d in (ctx.disk, ctx.root_dev) if d is not None))
        how = images.install(
            image, root.fstype, ctx.root_dev, size=root.size, disk_file=disk_file,
            offset=root.start, flush=flush, wipe=ctx.layout.style != "none",
        )  # fmt: skip
    except images.Unusable as e:
        logger.info("root: unpacking the stage (%s)", e)
        return
    except GentooBootstrapError as e:  # make_filesystems starts the root afresh
        logger.warning("root: unpacking the stage (the prepared image failed: %s)", e)
        return
    ctx.root_image = image
    uuid = filesystems.uuid_of(ctx.root_dev)
    logger.info(
        "root: %s on %s from %s (%s), UUID %s", root.fstype, ctx.root_dev, image.name, how, uuid
    )


def make_filesystems(ctx: Context) -> None:
    assert ctx.layout is not None
    for p, device in _devices(ctx):
        if p.role == "root" and ctx.root_image is not None:
            continue
        if ctx.layout.style != "none":
            disks.wipe(device)  # a new partition may start where an old filesystem did
        uuid = filesystems.make(device, p.fstype, p.role)
        logger.info("%s: %s on %s, UUID %s", p.role, p.fstype, device, uuid)


def mount_filesystems(ctx: Context) -> None:
    """Root on a directory of our own, /boot on a directory made in the new, empty root.

    The ESP is not mounted: the guest mounts it (fstab), and the grub hook writes its
    files with mtools, so the node needs no FAT driver.  Its mount point is made here.
    """
    assert ctx.root_dev is not None and ctx.layout is not None
    target = ctx.stack.enter_context(mounts.temporary_directory())
    ctx.stack.enter_context(mounts.mount(ctx.root_dev, target, options=mounts.FRESH))
    if ctx.boot_dev is not None:
        (target / "boot").mkdir()
        ctx.stack.enter_context(mounts.mount(ctx.boot_dev, target / "boot", options=mounts.FRESH))
    if ctx.esp_dev is not None:
        (target / layout.MOUNTPOINTS["esp"].lstrip("/")).mkdir()
    ctx.target = target


def unpack_stage(ctx: Context) -> None:
    """The stage onto the mounted filesystems (or, from an image, root grown to its partition)."""
    assert ctx.stage is not None and ctx.target is not None
    if ctx.root_image is not None:
        assert ctx.layout is not None
        images.grow_mounted(ctx.layout.root.fstype, ctx.target)
        return
    try:
        unpack.extract(ctx.stage, ctx.target)
    except CommandError as e:
        if "No space left on device" not in e.stderr:
            raise
        raise DiskError(
            f"the stage does not fit: {ctx.layout.describe() if ctx.layout else ''} is full; "
            "give the instance a bigger disk (gnt-instance grow-disk) or lower BOOT_SIZE/SWAP_SIZE"
        ) from None


def make_swap_file(ctx: Context) -> None:
    """SWAP=file: the swap file on root, after the stage (the layout left root room for it)."""
    assert ctx.target is not None and ctx.layout is not None
    if ctx.layout.swap_file:
        uuid = add_swap_file(GuestRoot(ctx.target), ctx.layout.root.fstype, ctx.layout.swap_file)
        logger.info("swap: %s on root, UUID %s", filesystems.SWAP_FILE, uuid)


def add_swap_file(root: GuestRoot, fstype: str, size: int) -> str:
    """A swap file of ``size`` bytes at SWAP_FILE in ``root``: fully allocated (the kernel
    refuses holes), NOCOW where the filesystem needs it; return its UUID."""
    nocow = filesystems.FILESYSTEMS[fstype].nocow_swap_file
    with root.allocate(filesystems.SWAP_FILE, size, nocow=nocow) as swap_file:
        return filesystems.make(swap_file, "swap", "swap")


def unpack_snapshot(ctx: Context) -> None:
    """The ebuild tree at /var/db/repos/gentoo (old snapshots have a top-level portage/).

    Unpacked into a directory of our own inside the guest's /var/db/repos
    (resolved inside the guest, like every path below), then renamed into place.
    """
    if ctx.snapshot is None:
        return
    assert ctx.target is not None
    root = GuestRoot(ctx.target)
    scratch = root.mkdtemp("/var/db/repos", ".snapshot-")
    repos = str(PurePosixPath(scratch).parent)
    unpack.extract(ctx.snapshot, root.directory(scratch))
    tops = root.listdir(scratch)
    if len(tops) != 1 or not root.is_dir(f"{scratch}/{tops[0]}", follow=False):
        raise StageError(f"{ctx.snapshot}: expected one top-level gentoo/ or portage/ directory")
    root.rmtree(f"{repos}/gentoo")  # a stage ships it empty; the snapshot replaces it
    root.rename(f"{scratch}/{tops[0]}", f"{repos}/gentoo")
    root.rmdir(scratch)


def copy_portage_config(ctx: Context) -> None:
    """PORTAGE_CONFDIR over the guest's /etc/portage."""
    if ctx.settings.portage_confdir is None:
        return
    assert ctx.target is not None
    GuestRoot(ctx.target).copy_in(ctx.settings.portage_confdir, "/etc/portage")


def write_fstab(ctx: Context) -> None:
    assert ctx.target is not None and ctx.layout is not None
    entries = [
        filesystems.fstab_entry(filesystems.uuid_of(device), p.mountpoint or "none", p.fstype)
        for p, device in _devices(ctx)
    ]
    if ctx.layout.swap_file:
        entries.append(filesystems.swap_file_entry())
    root = GuestRoot(ctx.target)
    original = root.read_text("/etc/fstab") or ""
    root.write_text("/etc/fstab", filesystems.fstab_text(entries, original))


#: What create does, in order: nothing touches the disk before the stage (and snapshot) are
#: verified and checked.  Hooks run last: they see the configured guest, ctx.disk as
#: BLOCKDEV, ctx.target as TARGET and the devices.
STEPS: tuple[Callable[[Context], None], ...] = (
    obtain_stage,
    obtain_snapshot,
    check_stage,
    attach_disk,
    check_disk,
    partition_disk,
    install_image,
    make_filesystems,
    mount_filesystems,
    unpack_stage,
    make_swap_file,
    unpack_snapshot,
    copy_portage_config,
    write_fstab,
    guest.configure_guest,
    hooks.run_hooks,
)


def run_steps(ctx: Context, steps: tuple[Callable[[Context], None], ...] = STEPS) -> None:
    """Run ``steps`` in order; the last one that fails is named in the log."""
    with ctx.stack:
        for step in steps:
            name = step.__name__.replace("_", " ")
            try:
                with log.complete_step(name):
                    step(ctx)
            except GentooBootstrapError:
                logger.error("%s failed; releasing the disk", name)
                raise
        # Unmounting writes the page cache out: a step of its own, worth its duration.
        with log.complete_step("release disk"):
            ctx.stack.close()


def main(env: OSEnv, settings: Settings, argv: list[str]) -> None:
    run_steps(Context(env, settings))
    logger.info("%s is installed", env.instance_name)
