"""The instance boots: what ``create`` (or ``import``) writes boots under qemu and lets root in.

Every scenario drives the installed OS definition exactly as Ganeti does (a
variant file, the OS-interface environment), installs the bootable test stage
through ``STAGE4_FILE``, boots the disk and logs in as root on the serial
console to check the hostname, the root filesystem and its partition, swap and
``/boot``.  The negative controls prove the runner notices a broken guest.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from boot import kit, qemu
from support import REPO, ganeti_environ, leaks
from support.install import InstalledOS

pytestmark = [pytest.mark.boot, pytest.mark.slow]

FQDN = "inst1.example.com"
HOST = "inst1"
DISK_MIB = 512
#: The example hook that installs GRUB for guests booting from their own disk.
GRUB_HOOK = REPO / "examples" / "hooks" / "grub"

RecordProperty = Callable[[str, Any], None]


@dataclass(frozen=True)
class Expect:
    """What the booted guest must show."""

    fstype: str = "ext4"
    root: str = "/dev/vda1"
    boot: Optional[str] = None
    swap: Optional[str] = None


@dataclass
class Instance:
    """One instance's disk and the way to run the OS scripts on it, as Ganeti would."""

    installed_os: InstalledOS
    workdir: Path
    variant: str
    kernel: Optional[kit.NodeKernel]
    disk: Path

    def environ(self, **extra: str) -> dict[str, str]:
        env = ganeti_environ(
            self.disk,
            FQDN,
            OS_VARIANT=self.variant,
            INSTANCE_OS=f"gentoobootstrap+{self.variant}",
            INSTANCE_HV_kernel_path=str(self.kernel.vmlinuz) if self.kernel else "",
            INSTANCE_HV_initrd_path=str(self.kernel.initrd) if self.kernel else "",
        )
        env.update(extra)
        return env

    def run(
        self, script: str, *, check: bool = True, **extra: Any
    ) -> subprocess.CompletedProcess[Any]:
        kwargs = {k: v for k, v in extra.items() if k in ("stdin", "stdout", "text")}
        if "stdout" in kwargs:  # export's data goes there; keep its log for the message
            kwargs["stderr"] = subprocess.PIPE
        env = {k: v for k, v in extra.items() if k not in kwargs}
        result = self.installed_os.run(script, self.environ(**env), **kwargs)
        if check:
            assert result.returncode == 0, f"{script} failed:\n{str(result.stderr)[-3000:]}"
        assert not leaks(self.workdir), f"{script} left behind: {leaks(self.workdir)}"
        return result

    def create(self, **extra: str) -> None:
        self.run("create", **extra)

    def boot(
        self,
        record_property: RecordProperty,
        expect: Expect,
        more: Optional[Callable[[qemu.Guest], None]] = None,
    ) -> None:
        """Boot the disk, log in as root on the serial console and check what the guest shows."""
        with qemu.boot(self.disk, self.workdir, kernel=self.kernel) as guest:
            record_property("boot_seconds", guest.login(HOST))
            assert guest.run("hostname") == HOST
            source, fstype = guest.run("findmnt -no SOURCE,FSTYPE /").split()
            assert (re.sub(r"\[.*\]$", "", source), fstype) == (expect.root, expect.fstype)
            assert guest.run("findmnt -no OPTIONS /").startswith("rw"), "/ was not remounted rw"
            swaps = guest.run("swapon --show=NAME --noheadings").split()
            assert swaps == ([expect.swap] if expect.swap else [])
            assert guest.run("findmnt -no SOURCE /boot || true") == (expect.boot or "")
            assert not guest.boot_failures(), "the guest's boot scripts reported failures"
            if more:
                more(guest)


@pytest.fixture
def make_instance(
    installed_os: InstalledOS,
    stage_tarball: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Callable[..., Instance]:
    """An instance with its own variant (the test stage plus ``settings``) and a fresh disk."""

    def make(
        kernel: Optional[kit.NodeKernel],
        settings: Optional[dict[str, str]] = None,
        disk_mib: int = DISK_MIB,
        hooks: tuple[Path, ...] = (),
        name: str = "",
    ) -> Instance:
        variant = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"boot-{request.node.name}{name}").strip("-")
        hooks_dir = tmp_path / f"hooks{name}"
        hooks_dir.mkdir()
        for hook in hooks:  # the examples ship disabled: enabling is making them executable
            shutil.copy(hook, hooks_dir / hook.name)
            (hooks_dir / hook.name).chmod(0o755)
        installed_os.add_variant(
            variant,
            {
                "STAGE4_FILE": str(stage_tarball),
                "CUSTOMIZE_DIR": str(hooks_dir),
                **(settings or {}),
            },
        )
        disk = tmp_path / f"disk{name}.img"
        with open(disk, "wb") as f:
            f.truncate(disk_mib * 2**20)
        return Instance(installed_os, tmp_path, variant, kernel, disk)

    return make


@contextmanager
def mounted_partition(disk: Path, number: int, mountpoint: Path) -> Iterator[Path]:
    """Mount partition ``number`` of a disk image (a loop device over its byte range)."""
    table = json.loads(kit.sh("sfdisk", "--json", disk))["partitiontable"]
    sector = table.get("sectorsize", 512)
    part = next(p for p in table["partitions"] if p["node"].endswith(str(number)))
    loop = kit.sh(
        "losetup", "--find", "--show",
        "--offset", str(part["start"] * sector), "--sizelimit", str(part["size"] * sector),
        disk,
    ).strip()  # fmt: skip
    try:
        mountpoint.mkdir(exist_ok=True)
        kit.sh("mount", loop, mountpoint)
        try:
            yield mountpoint
        finally:
            kit.sh("umount", mountpoint)
    finally:
        kit.sh("losetup", "--detach", loop)


# -- node-kernel mode: INSTANCE_HV_kernel_path, root_path=/dev/vda1, serial_console=True --


NODE_KERNEL_SCENARIOS = {
    "default": ({}, {}, Expect()),
    # The test stage's kernel has no vfat module to mount an ESP: BIOS only (test_uefi has both).
    "gpt": ({"PARTITION_STYLE": "gpt", "BOOT_FIRMWARE": "bios"}, {}, Expect()),
    "boot-and-swap": (
        {"BOOT_SIZE": "64", "SWAP": "yes", "SWAP_SIZE": "64"},
        {},
        Expect(boot="/dev/vda2", swap="/dev/vda3"),
    ),
    "xfs": ({}, {"OSP_FILESYSTEM": "xfs"}, Expect(fstype="xfs")),
    "btrfs": ({}, {"OSP_FILESYSTEM": "btrfs"}, Expect(fstype="btrfs")),
}


@pytest.mark.parametrize(
    ("settings", "params", "expect"),
    NODE_KERNEL_SCENARIOS.values(),
    ids=NODE_KERNEL_SCENARIOS.keys(),
)
def test_boots_with_the_node_kernel(
    make_instance: Callable[..., Instance],
    node_kernel: kit.NodeKernel,
    record_property: RecordProperty,
    settings: dict[str, str],
    params: dict[str, str],
    expect: Expect,
) -> None:
    instance = make_instance(node_kernel, settings)
    instance.create(**params)
    instance.boot(record_property, expect)


OWN_DISK_SCENARIOS = {
    "msdos": ({}, Expect()),
    # gpt: GRUB's core image goes into the BIOS boot partition create makes.
    "gpt-boot": (
        {"PARTITION_STYLE": "gpt", "BOOT_FIRMWARE": "bios", "BOOT_SIZE": "64"},
        Expect(boot="/dev/vda2"),
    ),
}


@pytest.mark.parametrize(
    ("settings", "expect"), OWN_DISK_SCENARIOS.values(), ids=OWN_DISK_SCENARIOS.keys()
)
def test_boots_from_its_own_disk_with_the_grub_hook(
    make_instance: Callable[..., Instance],
    record_property: RecordProperty,
    settings: dict[str, str],
    expect: Expect,
) -> None:
    # No kernel_path: the BIOS boots GRUB from the disk, GRUB the stage's own kernel.
    instance = make_instance(None, settings, hooks=(GRUB_HOOK,))
    instance.create()
    instance.boot(record_property, expect)


def test_boots_after_reinstall(
    make_instance: Callable[..., Instance],
    node_kernel: kit.NodeKernel,
    record_property: RecordProperty,
) -> None:
    instance = make_instance(node_kernel, {"BOOT_SIZE": "64"})
    instance.create()
    # gnt-instance reinstall: create again on the used disk, another filesystem this time.
    instance.create(INSTANCE_REINSTALL="1", OSP_FILESYSTEM="btrfs")
    instance.boot(record_property, Expect(fstype="btrfs", boot="/dev/vda2"))


def test_boots_after_export_and_import_onto_a_larger_disk(
    make_instance: Callable[..., Instance],
    node_kernel: kit.NodeKernel,
    record_property: RecordProperty,
    tmp_path: Path,
) -> None:
    source = make_instance(node_kernel, name="-source")
    source.create()
    marker = str(uuid.uuid4())
    with mounted_partition(source.disk, 1, tmp_path / "mnt") as root:
        (root / "root" / "marker").write_text(marker + "\n")
    image = tmp_path / "export.img"
    with open(image, "wb") as out:
        source.run(
            "export",
            stdout=out,
            text=False,
            EXPORT_DEVICE=str(source.disk),
            EXPORT_DISK_PATH=str(source.disk),
            EXPORT_INDEX="0",
        )
    target = make_instance(node_kernel, disk_mib=2 * DISK_MIB, name="-target")
    with open(image, "rb") as data:
        target.run(
            "import",
            stdin=data,
            text=False,
            IMPORT_DEVICE=str(target.disk),
            IMPORT_DISK_PATH=str(target.disk),
            IMPORT_INDEX="0",
            OSP_FILESYSTEM="xfs",
        )
    # Ganeti runs rename after every import.
    target.run("rename", OLD_INSTANCE_NAME=FQDN)

    def restored(guest: qemu.Guest) -> None:
        assert guest.run("cat /root/marker") == marker
        assert int(guest.run("lsblk -bno SIZE /dev/vda1")) > DISK_MIB * 2**20

    target.boot(record_property, Expect(fstype="xfs"), restored)


# -- negative controls: the runner must notice a guest that does not let root in --------


def test_control_no_serial_console_gives_no_login(
    make_instance: Callable[..., Instance], node_kernel: kit.NodeKernel
) -> None:
    instance = make_instance(node_kernel)
    instance.create(INSTANCE_HV_serial_console="False")
    with pytest.raises(qemu.BootFailed, match="no login prompt"):  # noqa: SIM117
        with qemu.boot(instance.disk, instance.workdir, kernel=node_kernel) as guest:
            guest.login(HOST)


def test_control_wrong_fstab_uuid_stops_in_maintenance(
    make_instance: Callable[..., Instance], node_kernel: kit.NodeKernel, tmp_path: Path
) -> None:
    instance = make_instance(node_kernel)
    instance.create()
    with mounted_partition(instance.disk, 1, tmp_path / "mnt") as root:
        fstab = root / "etc" / "fstab"
        text, count = re.subn(
            r"^UUID=\S+(\s+/\s)", rf"UUID={uuid.uuid4()}\1", fstab.read_text(), flags=re.M
        )
        assert count == 1, f"no root entry by UUID in fstab:\n{fstab.read_text()}"
        fstab.write_text(text)
    with pytest.raises(qemu.BootFailed, match="maintenance"):  # noqa: SIM117
        with qemu.boot(instance.disk, instance.workdir, kernel=node_kernel) as guest:
            guest.login(HOST)
