"""The grub example hook installs GRUB onto a real (loop) disk and writes a config for the guest."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sh

from gentoobootstrap.config.settings import Settings
from gentoobootstrap.disk import layout
from gentoobootstrap.guest import hooks
from support import REPO
from support.loopdisk import loop_device

needs_grub = pytest.mark.skipif(
    shutil.which("grub-install") is None or not Path("/usr/lib/grub/i386-pc").is_dir(),
    reason="needs grub-install for i386-pc (Debian: grub-pc-bin grub2-common)",
)


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.fixture
def disk(no_leaks: Path) -> Iterator[tuple[Path, Path, Path]]:
    """A 64 MiB msdos-partitioned loop disk, its ext4 partition mounted: (disk, part, mnt)."""
    image, mnt = no_leaks / "disk.img", no_leaks / "mnt"
    sh.truncate("-s", "64M", str(image))
    sh.sfdisk("--quiet", str(image), _in="label: dos\nstart=2048, type=83\n")
    with loop_device(image, partitions=True) as loop:
        part = Path(f"{loop}p1")
        wait_for(part)
        sh.Command("mkfs.ext4")("-q", "-F", str(part))
        mnt.mkdir()
        sh.mount(str(part), str(mnt))
        try:
            yield loop, part, mnt
        finally:
            sh.umount(str(mnt))


def run_grub_hook(tmp_path: Path, env: dict[str, str]) -> None:
    """The example grub hook, alone in a hook directory, run on ``env``'s TARGET."""
    directory = tmp_path / "hooks"
    directory.mkdir()
    shutil.copy(REPO / "examples/hooks/grub", directory / "grub")
    (directory / "grub").chmod(0o755)
    hooks.run_parts(hooks.find(directory), env, Path(env["TARGET"]))


@pytest.mark.root
@needs_grub
def test_grub_hook(disk: tuple[Path, Path, Path], tmp_path: Path) -> None:
    loop, part, mnt = disk
    (mnt / "boot").mkdir()
    newest = "6.12.3-gentoo-dist"
    kernels = ("vmlinuz-6.6.1-gentoo", f"vmlinuz-{newest}", f"vmlinuz-{newest}.old")
    for name in (*kernels, "initramfs-6.12.3-gentoo-dist.img"):
        (mnt / "boot" / name).write_text("fake\n")
    env = {
        "PATH": "/sbin:/bin:/usr/sbin:/usr/bin",
        "TARGET": str(mnt),
        "BLOCKDEV": str(loop),
        "ROOT_DEV": str(part),
        "BOOT_DEV": "",
        "HYPERVISOR": "kvm",
        "INSTANCE_HV_serial_console": "True",
        "KERNEL_ARGS": "net.ifnames=0 quiet",
    }
    run_grub_hook(tmp_path, env)

    uuid = str(sh.blkid("-o", "value", "-s", "UUID", str(part))).strip()
    assert (mnt / "boot/grub/grub.cfg").read_text() == (
        "# Written by the grub hook of ganeti-instance-gentoobootstrap at instance creation.\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        "set timeout=3\nset default=0\n"
        "insmod part_msdos\ninsmod part_gpt\ninsmod ext2\n"
        f"search --no-floppy --fs-uuid --set=root {uuid}\n"
        "menuentry 'Gentoo Linux 6.12.3-gentoo-dist' {\n"
        f"\tlinux /boot/vmlinuz-6.12.3-gentoo-dist root=UUID={uuid} ro "
        "console=tty0 console=ttyS0,115200n8 net.ifnames=0 quiet\n"
        "\tinitrd /boot/initramfs-6.12.3-gentoo-dist.img\n"
        "}\n"
    )
    assert (mnt / "boot/grub/i386-pc/core.img").is_file()
    with open(loop, "rb") as f:
        mbr = f.read(512)
        f.seek(512)
        embedded = f.read(1024 * 1024 - 512)  # the gap before the partition holds core.img
    assert mbr[510:] == b"\x55\xaa" and b"GRUB" in mbr
    assert embedded.strip(b"\0"), "core.img was not embedded after the MBR"


@pytest.mark.root
@needs_grub
def test_grub_hook_without_a_kernel(disk: tuple[Path, Path, Path], tmp_path: Path) -> None:
    loop, part, mnt = disk
    (mnt / "boot").mkdir()
    env = {"TARGET": str(mnt), "BLOCKDEV": str(loop), "ROOT_DEV": str(part)}
    with pytest.raises(Exception, match=r"grub: no kernel \(vmlinuz-\* or kernel-\*\)"):
        run_grub_hook(tmp_path, env)


needs_grub_efi = pytest.mark.skipif(
    not Path("/usr/lib/grub/x86_64-efi/linux.mod").is_file() or shutil.which("mcopy") is None,
    reason="needs GRUB's x86_64-efi modules and mtools (Debian: grub-efi-amd64-bin mtools)",
)


@pytest.mark.root
@needs_grub
@needs_grub_efi
def test_grub_hook_on_gpt_for_bios_and_uefi(no_leaks: Path, tmp_path: Path) -> None:
    """The layout create makes with PARTITION_STYLE=gpt (BOOT_FIRMWARE both): GRUB's
    i386-pc core image in the BIOS boot partition, its x86_64-efi image on the ESP's
    removable path, one grub.cfg for both."""
    image, mnt = no_leaks / "disk.img", no_leaks / "mnt"
    sh.truncate("-s", "256M", str(image))
    plan = layout.plan(dataclasses.replace(Settings(), partition_style="gpt"), 256 * layout.MIB)
    numbers = {p.role: p.number for p in plan.partitions}
    sh.sfdisk("--quiet", str(image), _in=plan.sfdisk_script())
    with loop_device(image, partitions=True) as loop:
        root, esp = Path(f"{loop}p{numbers['root']}"), Path(f"{loop}p{numbers['esp']}")
        wait_for(root)
        wait_for(esp)
        sh.Command("mkfs.ext4")("-q", "-F", str(root))
        sh.Command("mkfs.vfat")("-F", "32", "-n", "ESP", str(esp))
        mnt.mkdir()
        sh.mount(str(root), str(mnt))
        try:
            (mnt / "boot").mkdir()
            (mnt / "boot/vmlinuz-6.12.3-gentoo-dist").write_text("fake\n")
            env = {
                "PATH": "/sbin:/bin:/usr/sbin:/usr/bin",
                "TARGET": str(mnt),
                "BLOCKDEV": str(loop),
                "ROOT_DEV": str(root),
                "ESP_DEV": str(esp),
            }
            run_grub_hook(tmp_path, env)
            assert (mnt / "boot/grub/i386-pc/core.img").is_file()
            assert (mnt / "boot/grub/x86_64-efi/linux.mod").is_file()
            assert (
                "menuentry 'Gentoo Linux 6.12.3-gentoo-dist'"
                in (mnt / "boot/grub/grub.cfg").read_text()
            )
        finally:
            sh.umount(str(mnt))
        # Read the ESP as firmware would, without mounting it: a PE image on the removable path.
        efi = no_leaks / "BOOTX64.EFI"
        sh.mcopy(
            "-i", str(esp), "::/EFI/BOOT/BOOTX64.EFI", str(efi), _env={"MTOOLS_SKIP_CHECK": "1"}
        )
        assert efi.read_bytes()[:2] == b"MZ"
        assert b"search --no-floppy --fs-uuid" in efi.read_bytes()  # the embedded early config
    bios = plan.role("bios")
    assert bios is not None
    with open(image, "rb") as f:
        mbr = f.read(512)
        f.seek(bios.start)
        core = f.read(bios.size)
    assert mbr[510:] == b"\x55\xaa" and b"GRUB" in mbr
    assert core.strip(b"\0"), "core.img was not embedded in the BIOS boot partition"
