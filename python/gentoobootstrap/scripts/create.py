"""``create``: install the Gentoo stage onto the instance's first disk.

A flat list of steps over the phases of :mod:`install`, each logged with its duration.
Every resource (loop device, partition devices, mounts, the mount directory) goes on the
stack and is released in reverse order on success, on error and on SIGTERM/SIGINT/SIGHUP.
The stage is obtained and verified before anything touches the disk.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

from gentoobootstrap.config.osenv import OSEnv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.disk import devices, filesystems, fstab, images
from gentoobootstrap.errors import (
    CommandError,
    ConfigError,
    DiskError,
    GentooBootstrapError,
    StageError,
)
from gentoobootstrap.guest import configure, hooks
from gentoobootstrap.scripts import install
from gentoobootstrap.scripts.install import Attached, Install, Mounted, Partitioned, Planned, step
from gentoobootstrap.stages import cache, obtain, unpack

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sources:
    """What create installs: the verified stage, and the portage snapshot if SNAPSHOT asks."""

    stage: Path
    snapshot: Optional[Path] = None


def obtain_stage(ctx: Install[None]) -> Install[Sources]:
    stage = obtain.stage(ctx.settings)
    logger.info("stage: %s", stage)
    return Install(ctx.env, ctx.settings, ctx.stack, ctx.source, Sources(stage))


def obtain_snapshot(ctx: Install[Sources]) -> Install[Sources]:
    """The verified portage snapshot (SNAPSHOT), and PORTAGE_CONFDIR checked, before the disk."""
    snapshot = obtain.snapshot(ctx.settings)
    confdir = ctx.settings.portage_confdir
    if confdir is not None and not confdir.is_dir():
        raise ConfigError(f"{confdir} is not a directory", key="PORTAGE_CONFDIR")
    return dataclasses.replace(ctx, job=dataclasses.replace(ctx.job, snapshot=snapshot))


def check_stage(ctx: Install[Sources]) -> None:
    """No member of the stage or snapshot may land outside the target: checked before the
    disk is touched (a cached download was checked once, when it entered the cache)."""
    for tarball in (ctx.job.stage, ctx.job.snapshot):
        if tarball is not None and not cache.recorded_member_count(tarball, ctx.settings.cache_dir):
            count = unpack.refuse_escaping_members(tarball)
            logger.info("%s: %d entries checked", tarball.name, count)


def attach_disk(ctx: Install[Sources]) -> Attached[Sources]:
    attached = install.attach_disk(ctx)
    if ctx.env.reinstall:
        logger.info("reinstall: everything on %s is replaced", ctx.source)
    return attached


def check_disk(ctx: Attached[Sources]) -> Planned[Sources]:
    return install.check_disk(ctx, unpack.unpacked_size(ctx.job.stage, ctx.settings.cache_dir))


def install_image(ctx: Partitioned[Sources]) -> Partitioned[Sources]:
    """The root filesystem from the stage's prepared image (see :mod:`images`), when it can be.

    Otherwise (one line in the log says why) make_filesystems makes it and unpack_stage
    unpacks the stage, as without images.  A separate /boot is always unpacked: the image
    holds the stage's /boot in the root filesystem.
    """
    if not ctx.settings.prepared_images:
        return ctx
    root = ctx.layout.root
    try:
        if ctx.layout.role("boot") is not None:
            raise images.Unusable("the layout has a separate /boot")
        image = images.prepared(ctx.job.stage, ctx.settings.cache_dir, root.fstype)
        disk_file = ctx.source if not devices.is_block_device(ctx.source) else None
        flush = tuple(dict.fromkeys((ctx.disk, ctx.root_dev)))
        how = images.install(
            image, root.fstype, ctx.root_dev, size=root.size, disk_file=disk_file,
            offset=root.start, flush=flush, wipe=ctx.layout.style != "none",
        )  # fmt: skip
    except images.Unusable as e:
        logger.info("root: unpacking the stage (%s)", e)
        return ctx
    except GentooBootstrapError as e:  # make_filesystems starts the root afresh
        logger.warning("root: unpacking the stage (the prepared image failed: %s)", e)
        return ctx
    uuid = filesystems.uuid_of(ctx.root_dev)
    logger.info(
        "root: %s on %s from %s (%s), UUID %s", root.fstype, ctx.root_dev, image.name, how, uuid
    )
    return dataclasses.replace(ctx, made=ctx.made | {"root"})


def unpack_stage(ctx: Mounted[Sources]) -> None:
    """The stage onto the mounted filesystems (or, from an image, root grown to its partition)."""
    if "root" in ctx.made:
        images.grow_mounted(ctx.layout.root.fstype, ctx.target)
        return
    try:
        unpack.extract(ctx.job.stage, ctx.target)
    except CommandError as e:
        if "No space left on device" not in e.stderr:
            raise
        raise DiskError(
            f"the stage does not fit: {ctx.layout.describe()} is full; "
            "give the instance a bigger disk (gnt-instance grow-disk) or lower BOOT_SIZE/SWAP_SIZE"
        ) from None


def make_swap_file(ctx: Mounted[Sources]) -> None:
    """SWAP=file: the swap file on root, after the stage (the layout left root room for it)."""
    if ctx.layout.swap_file:
        uuid = install.add_swap_file(ctx.root, ctx.layout.root.fstype, ctx.layout.swap_file)
        logger.info("swap: %s on root, UUID %s", filesystems.SWAP_FILE, uuid)


def unpack_snapshot(ctx: Mounted[Sources]) -> None:
    """The ebuild tree at /var/db/repos/gentoo (old snapshots have a top-level portage/).

    Unpacked into a directory of our own inside the guest's /var/db/repos
    (resolved inside the guest, like every path below), then renamed into place.
    """
    snapshot = ctx.job.snapshot
    if snapshot is None:
        return
    root = ctx.root
    scratch = root.mkdtemp("/var/db/repos", ".snapshot-")
    repos = str(PurePosixPath(scratch).parent)
    unpack.extract(snapshot, root.directory(scratch))
    tops = root.listdir(scratch)
    if len(tops) != 1 or not root.is_dir(f"{scratch}/{tops[0]}", follow=False):
        raise StageError(f"{snapshot}: expected one top-level gentoo/ or portage/ directory")
    root.rmtree(f"{repos}/gentoo")  # a stage ships it empty; the snapshot replaces it
    root.rename(f"{scratch}/{tops[0]}", f"{repos}/gentoo")
    root.rmdir(scratch)


def copy_portage_config(ctx: Mounted[Sources]) -> None:
    """PORTAGE_CONFDIR over the guest's /etc/portage."""
    if ctx.settings.portage_confdir is not None:
        ctx.root.copy_in(ctx.settings.portage_confdir, "/etc/portage")


def write_fstab(ctx: Mounted[Sources]) -> None:
    entries = list(install.fstab_entries(ctx).values())
    if ctx.layout.swap_file:
        entries.append(fstab.swap_file_entry())
    original = ctx.root.read_text("/etc/fstab") or ""
    ctx.root.write_text("/etc/fstab", fstab.render(entries, original))


def configure_guest(ctx: Mounted[Sources]) -> None:
    """Every piece of guest configuration (see :mod:`configure`)."""
    configure.guest(ctx.root, ctx.env, ctx.settings)


def run_hooks(ctx: Mounted[Sources]) -> None:
    """CUSTOMIZE_DIR's hooks, in the configured guest (see :mod:`hooks`)."""
    hooks.run(ctx.settings.customize_dir, ctx.root, hook_environment(ctx))


def hook_environment(ctx: Mounted[Sources]) -> dict[str, str]:
    """What a hook gets: Ganeti's variables, the settings, the disk and its devices."""
    places = {
        "TARGET": ctx.target,
        "BLOCKDEV": ctx.disk,
        "ROOT_DEV": ctx.root_dev,
        "BOOT_DEV": ctx.boot_dev,
        "SWAP_DEV": ctx.swap_dev,
        "ESP_DEV": ctx.esp_dev,
    }
    return hooks.environment(ctx.env, ctx.settings, places)


def main(env: OSEnv, settings: Settings, argv: list[str]) -> None:
    """Nothing touches the disk before the stage (and snapshot) are verified and checked."""
    with install.session(env, settings, env.first_disk_path) as start:
        prepared = step(obtain_stage, start)
        prepared = step(obtain_snapshot, prepared)
        step(check_stage, prepared)
        attached = step(attach_disk, prepared)
        planned = step(check_disk, attached)
        partitioned = step(install.partition_disk, planned)
        partitioned = step(install_image, partitioned)
        step(install.make_filesystems, partitioned)
        mounted = step(install.mount_filesystems, partitioned)
        step(unpack_stage, mounted)
        step(make_swap_file, mounted)
        step(unpack_snapshot, mounted)
        step(copy_portage_config, mounted)
        step(write_fstab, mounted)
        step(configure_guest, mounted)
        step(run_hooks, mounted)  # last: the configured guest, BLOCKDEV, TARGET, devices
    logger.info("%s is installed", env.instance_name)
