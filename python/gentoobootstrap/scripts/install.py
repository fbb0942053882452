"""Installing onto the instance's first disk: what ``create`` and ``import`` share.

An install acquires its resources in order, and each is needed by every step after it:
the disk (attached), its layout (planned), the partitions' devices, the mounted root.
So an install moves through phases, one frozen context each (:class:`Install`,
:class:`Attached`, :class:`Planned`, :class:`Partitioned`, :class:`Mounted`), each holding
everything its predecessor held plus the resource just acquired; the step that acquires
a resource returns the next phase's context.  A step's argument type says what must exist
before it runs, so nothing is optional that a step needs, and mypy checks that ``create``
and ``import`` run their steps in an order that provides it.  What each script brings of
its own (create's verified stage, import's stream) travels unchanged in ``job``.

Every step runs through :func:`step`, logged with its duration; every resource goes on
the context's ``stack``, which :func:`session` releases in reverse order on success, on
error and on SIGTERM/SIGINT/SIGHUP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Optional, TypeVar

from gentoobootstrap import log
from gentoobootstrap.config.osenv import OSEnv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.disk import devices, filesystems, fstab, images, layout, mounts
from gentoobootstrap.disk.layout import Layout, Partition, Role
from gentoobootstrap.errors import GentooBootstrapError
from gentoobootstrap.guest.tree import GuestRoot

logger = logging.getLogger(__name__)

J = TypeVar("J")
C = TypeVar("C")
R = TypeVar("R")

#: The partitions that hold a filesystem or swap, in the order they are made and listed.
FILESYSTEM_ROLES: tuple[Role, ...] = ("root", "boot", "swap", "esp")


@dataclass(frozen=True)
class Install(Generic[J]):
    """Before the disk: the parsed environment, the settings (with the OS parameters
    applied, see config.apply_parameters), the disk to install onto as Ganeti names it
    (a file or a block device) and the stack every resource goes on."""

    env: OSEnv
    settings: Settings
    stack: contextlib.ExitStack
    source: Path
    job: J


@dataclass(frozen=True)
class Attached(Install[J]):
    disk: Path  # block device of the whole disk (BLOCKDEV for hooks)


@dataclass(frozen=True)
class Planned(Attached[J]):
    layout: Layout


@dataclass(frozen=True)
class Partitioned(Planned[J]):
    devices: Mapping[Role, Path]  # role (FILESYSTEM_ROLES) -> its partition's device
    made: frozenset[Role]  # roles whose filesystem is already in place (a prepared image)

    @property
    def root_dev(self) -> Path:
        return self.devices["root"]

    @property
    def boot_dev(self) -> Optional[Path]:
        return self.devices.get("boot")

    @property
    def swap_dev(self) -> Optional[Path]:
        return self.devices.get("swap")

    @property
    def esp_dev(self) -> Optional[Path]:  # the EFI system partition (gpt)
        return self.devices.get("esp")

    def placed(self) -> list[tuple[Partition, Path]]:
        """The planned partitions that get a filesystem, with their devices, in role order."""
        return [(p, self.devices[p.role]) for p in _in_role_order(self.layout)]


@dataclass(frozen=True)
class Mounted(Partitioned[J]):
    target: Path  # where the root filesystem is mounted

    @property
    def root(self) -> GuestRoot:
        return GuestRoot(self.target)


def _in_role_order(planned: Layout) -> list[Partition]:
    return [p for role in FILESYSTEM_ROLES for p in planned.partitions if p.role == role]


# -- running ---------------------------------------------------------------------------------


@contextlib.contextmanager
def session(env: OSEnv, settings: Settings, source: Path) -> Iterator[Install[None]]:
    """The first phase's context; on leaving, everything on its stack is released."""
    with contextlib.ExitStack() as stack:
        yield Install(env, settings, stack, source, None)
        # Unmounting writes the page cache out: a step of its own, worth its duration.
        with log.complete_step("release disk"):
            stack.close()


def step(action: Callable[[C], R], ctx: C) -> R:
    """Run one step on ``ctx``, logged with its duration; a failing one is named in the log."""
    name = action.__name__.replace("_", " ")
    try:
        with log.complete_step(name):
            return action(ctx)
    except GentooBootstrapError:
        logger.error("%s failed; releasing the disk", name)
        raise


# -- the disk steps --------------------------------------------------------------------------


def attach_disk(ctx: Install[J]) -> Attached[J]:
    disk = ctx.stack.enter_context(devices.attach(ctx.source))
    return Attached(**_fields(ctx), disk=disk)


def check_disk(ctx: Attached[J], content_bytes: Optional[int]) -> Planned[J]:
    """Refuse a disk in use; plan its layout, root big enough for ``content_bytes`` when known."""
    devices.check_unused(ctx.disk, ctx.source)
    return Planned(**_fields(ctx), layout=plan_disk(ctx, content_bytes))


def plan_disk(ctx: Attached[J], content_bytes: Optional[int]) -> Layout:
    """The layout for ``ctx.disk``, its root big enough for ``content_bytes`` when known."""
    min_root = images.root_mib(content_bytes) if content_bytes else 0
    root_path = ctx.env.hv.get("root_path", "")
    planned = layout.plan(
        ctx.settings,
        devices.size_of(ctx.disk),
        root_path=root_path,
        maxmem_mib=ctx.env.maxmem_mib,
        min_root_mib=min_root,
    )
    if planned.style == "none" and layout.first_disk_partition(root_path):
        logger.warning(
            "INSTANCE_HV_root_path=%s names a partition but PARTITION_STYLE=none puts root on "
            "the whole disk: set the instance's root_path to the disk (e.g. /dev/vda)",
            root_path,
        )
    logger.info("layout: %s", planned.describe())
    boot_type = ctx.env.hv.get("boot_type", "")
    if boot_type:
        logger.info("boot type: %s (INSTANCE_HV_boot_type)", boot_type)
    layout.check_boot_type(planned, boot_type)
    return planned


def partition_disk(ctx: Planned[J]) -> Partitioned[J]:
    devices.wipe(ctx.disk)
    if ctx.layout.style != "none":
        devices.write_table(ctx.disk, ctx.layout)
    nodes = ctx.stack.enter_context(devices.partitions(ctx.disk, ctx.layout.partitions))
    by_role = {p.role: nodes[p.number] for p in _in_role_order(ctx.layout)}
    return Partitioned(**_fields(ctx), devices=by_role, made=frozenset())


def make_filesystems(ctx: Partitioned[J]) -> None:
    """Each planned filesystem (and swap), but those already in place."""
    for p, device in ctx.placed():
        if p.role in ctx.made:
            continue
        if ctx.layout.style != "none":
            devices.wipe(device)  # a new partition may start where an old filesystem did
        uuid = filesystems.make(device, p.fstype, p.role)
        logger.info("%s: %s on %s, UUID %s", p.role, p.fstype, device, uuid)


def mount_filesystems(ctx: Partitioned[J], options: Sequence[str] = mounts.FRESH) -> Mounted[J]:
    """Root on a directory of our own, /boot on a directory made in the new, empty root,
    both with ``options``.

    The ESP is not mounted: the guest mounts it (fstab), and the grub hook writes its
    files with mtools, so the node needs no FAT driver.  Its mount point is made here.
    """
    target = ctx.stack.enter_context(mounts.temporary_directory())
    ctx.stack.enter_context(mounts.mount(ctx.root_dev, target, options=options))
    if ctx.boot_dev is not None:
        (target / "boot").mkdir()
        ctx.stack.enter_context(mounts.mount(ctx.boot_dev, target / "boot", options=options))
    if ctx.esp_dev is not None:
        (target / layout.MOUNTPOINTS["esp"].lstrip("/")).mkdir()
    return Mounted(**_fields(ctx), target=target)


def fstab_entries(ctx: Partitioned[J]) -> dict[Role, fstab.Entry]:
    """Role -> the fstab entry of the new filesystem (or swap partition) on its device."""
    entries: dict[Role, fstab.Entry] = {}
    for p, device in ctx.placed():
        uuid = filesystems.uuid_of(device)
        entries[p.role] = fstab.entry(uuid, p.mountpoint or "none", p.fstype)
    return entries


def add_swap_file(root: GuestRoot, fstype: str, size: int) -> str:
    """A swap file of ``size`` bytes at SWAP_FILE in ``root``: fully allocated (the kernel
    refuses holes), NOCOW where the filesystem needs it; return its UUID."""
    nocow = filesystems.FILESYSTEMS[fstype].nocow_swap_file
    with root.allocate(filesystems.SWAP_FILE, size, nocow=nocow) as swap_file:
        return filesystems.make(swap_file, "swap", "swap")


def _fields(ctx: Install[J]) -> dict[str, Any]:
    """What ``ctx`` holds, to build the next phase's context from."""
    return {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx)}
