"""One gpt disk boots under BIOS and under UEFI: the grub hook installs GRUB for both.

``create`` with ``PARTITION_STYLE="gpt"`` (``BOOT_FIRMWARE`` empty: both) makes the
BIOS boot partition and the EFI system partition; the ``grub`` example hook puts
GRUB's i386-pc core image in the one and its x86_64-efi image on the other's
removable path.  The same disk then boots the stage's own kernel to a root login
under SeaBIOS and under OVMF with an empty variable store (no boot entry), as
Ganeti's KVM boots it with ``boot_type=bios`` and ``boot_type=uefi``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from boot import qemu
from boot.test_boot import GRUB_HOOK, HOST, Instance, RecordProperty
from boot.test_boot import make_instance as make_instance  # the fixture, shared

pytestmark = [
    pytest.mark.boot,
    pytest.mark.slow,
    pytest.mark.skipif(
        not qemu.OVMF_CODE.is_file() or not qemu.OVMF_VARS.is_file(),
        reason="needs OVMF (Debian: ovmf)",
    ),
]


def test_the_same_gpt_disk_boots_under_bios_and_uefi(
    make_instance: Callable[..., Instance], record_property: RecordProperty, tmp_path: Path
) -> None:
    instance = make_instance(None, {"PARTITION_STYLE": "gpt"}, disk_mib=768, hooks=(GRUB_HOOK,))
    instance.create(INSTANCE_HV_boot_type="uefi")
    for firmware in ("uefi", "bios"):
        workdir = tmp_path / firmware
        workdir.mkdir()
        with qemu.boot(instance.disk, workdir, firmware=firmware) as guest:
            record_property("boot_seconds", guest.login(HOST))
            assert guest.run("hostname") == HOST
            booted = guest.run("if [ -d /sys/firmware/efi ]; then echo uefi; else echo bios; fi")
            assert booted == firmware
            assert guest.run("findmnt -no SOURCE /") == "/dev/vda1"
            # The ESP is in fstab; the test stage's kernel has no vfat module to mount it
            # (nor efivarfs), so its boot scripts say "failed" there: a Gentoo kernel has both.
            assert guest.run("findmnt --fstab -no TARGET,FSTYPE,OPTIONS /efi").split() == [
                "/efi",
                "vfat",
                "umask=0077,nofail",
            ]
