"""The grub example hook installs GRUB onto a real (loop) disk and writes a config for the guest."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sh

from gentoobootstrap import hooks
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


@pytest.mark.root
@needs_grub
def test_grub_hook(disk: tuple[Path, Path, Path], tmp_path: Path) -> None:
    loop, part, mnt = disk
    (mnt / "boot").mkdir()
    newest = "6.12.3-gentoo-dist"
    kernels = ("vmlinuz-6.6.1-gentoo", f"vmlinuz-{newest}", f"vmlinuz-{newest}.old")
    for name in (*kernels, "initramfs-6.12.3-gentoo-dist.img"):
        (mnt / "boot" / name).write_text("fake\n")
    directory = tmp_path / "hooks"
    directory.mkdir()
    shutil.copy(REPO / "examples/hooks/grub", directory / "grub")
    (directory / "grub").chmod(0o755)
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
    hooks.run_parts(hooks.find(directory), env, mnt)

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
    directory = tmp_path / "hooks"
    directory.mkdir()
    shutil.copy(REPO / "examples/hooks/grub", directory / "grub")
    (directory / "grub").chmod(0o755)
    env = {"TARGET": str(mnt), "BLOCKDEV": str(loop), "ROOT_DEV": str(part)}
    with pytest.raises(Exception, match=r"grub: no kernel \(vmlinuz-\* or kernel-\*\)"):
        hooks.run_parts(hooks.find(directory), env, mnt)
