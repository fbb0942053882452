"""The instance grows with its disk, under real systemd and real OpenRC.

``create`` installs onto a 2 GiB disk image; the image file then grows to 3 GiB
(``gnt-instance grow-disk`` on a stopped instance) and the instance boots with the
node's kernel: the grow service must have grown the root partition to the disk's
end and the filesystem with it, without failing.  One running guest's disk also
grows through qemu's monitor (``block_resize``, as Ganeti's KVM tells a running
guest): the kernel's resize event must grow the filesystem without a reboot.  With
``GROW_ROOT="no"`` the filesystem keeps its size: the control that the growth is
the service's doing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from boot import kit, qemu, test_boot
from boot.test_boot import HOST, Instance, RecordProperty, settled

pytestmark = [pytest.mark.boot, pytest.mark.slow]

make_instance = test_boot.make_instance

MIB = 2**20
GIB = 2**30
#: The disk as created, and as it boots after growing.
CREATED, GROWN, GROWN_ONLINE = 2 * GIB, 3 * GIB, 4 * GIB
#: How long the filesystem may take to follow a disk grown under the running guest.
ONLINE_SECONDS = 120
BOOT_AND_SWAP = {"BOOT_SIZE": "64", "SWAP": "yes", "SWAP_SIZE": "64"}


@dataclass(frozen=True)
class Case:
    init: str  # which test stage: "systemd" or "openrc"
    fstype: str
    settings: dict[str, str] = field(default_factory=dict)
    online: bool = False  # grow the disk again while the guest runs
    grows: bool = True


CASES = {
    # gpt with /boot and swap before root (1 root, 2 /boot, 3 swap, 4 BIOS boot; root last);
    # no ESP: the test kit's kernel has no vfat, and the failed /efi mount would degrade boot.
    "systemd-ext4-gpt-boot-swap": Case(
        "systemd",
        "ext4",
        {"PARTITION_STYLE": "gpt", "BOOT_FIRMWARE": "bios", **BOOT_AND_SWAP},
        online=True,
    ),
    "systemd-xfs": Case("systemd", "xfs"),
    "systemd-btrfs": Case("systemd", "btrfs"),
    "openrc-ext4": Case("openrc", "ext4"),
    "openrc-xfs": Case("openrc", "xfs"),
    "openrc-btrfs-boot-swap": Case("openrc", "btrfs", BOOT_AND_SWAP),
    "openrc-ext4-grow-root-no": Case("openrc", "ext4", {"GROW_ROOT": "no"}, grows=False),
}


def fs_bytes(guest: qemu.Guest) -> int:
    return int(guest.run("df -B1 --output=size / | tail -n 1"))


def root_reaches_the_disk_end(guest: qemu.Guest) -> None:
    """Root's partition ends where the disk does (less than 2 MiB left: gpt's backup table)."""
    start, size, disk = map(
        int,
        guest.run(
            'p=$(findmnt -nvo SOURCE /); p=${p##*/}; d=$(readlink -f "/sys/class/block/$p/..");'
            ' cat "/sys/class/block/$p/start" "/sys/class/block/$p/size" "$d/size"'
        ).split(),
    )
    left = (disk - start - size) * 512
    guest.check(0 <= left < 2 * MIB, f"root ends {left} bytes before the disk's end")


def service_log(guest: qemu.Guest, case: Case) -> str:
    """What the grow service said, after checking that it ran and did not fail."""
    if case.init == "systemd":
        settled(guest, guest.run)  # every unit started; none failed
        result = guest.run("systemctl show -P Result ganeti-growroot.service")
        guest.check(result == "success", f"ganeti-growroot.service's result is {result!r}")
        return guest.run("journalctl -b -o cat -u ganeti-growroot.service --no-pager")
    status = guest.run("rc-service ganeti-growroot status 2>&1 || true")
    guest.check("started" in status, f"ganeti-growroot is not started: {status!r}")
    # OpenRC shows a service's output on the console.
    console = guest.logfile.read_text(errors="replace").replace("\r", "")
    return "\n".join(line for line in console.splitlines() if "ganeti-growroot" in line)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_grows_with_its_disk(
    make_instance: Callable[..., Instance],
    node_kernel: kit.NodeKernel,
    request: pytest.FixtureRequest,
    record_property: RecordProperty,
    case: Case,
) -> None:
    stage: Path = request.getfixturevalue(f"{case.init}_stage")
    instance = make_instance(node_kernel, case.settings, disk_mib=CREATED // MIB, stage=stage)
    instance.create(OSP_FILESYSTEM=case.fstype)
    os.truncate(instance.disk, GROWN)  # sparse, as Ganeti's file disks
    with qemu.boot(
        instance.disk, instance.workdir, kernel=node_kernel, monitor=case.online
    ) as guest:
        record_property("boot_seconds", guest.login(HOST))
        fstype = guest.run("findmnt -no FSTYPE /")
        guest.check(fstype == case.fstype, f"/ is {fstype}, not {case.fstype}")
        if not case.grows:
            guest.check(
                guest.run("ls /usr/libexec/ganeti-growroot /etc/init.d/ganeti-growroot"
                          " 2>/dev/null || true") == "",
                "GROW_ROOT=no installed the grow service",
            )  # fmt: skip
            size = fs_bytes(guest)
            guest.check(size <= CREATED, f"/ has {size} bytes with GROW_ROOT=no")
            guest.check(not guest.boot_failures(), "the boot scripts reported failures")
            return
        said = service_log(guest, case)
        guest.check(
            f"grew the {case.fstype} filesystem on /" in said,
            f"the service did not say it grew /:\n{said}",
        )
        size = fs_bytes(guest)
        guest.check(
            size > CREATED + (GROWN - CREATED) // 2,
            f"/ has {size} bytes on a {GROWN}-byte disk made at {CREATED}; the service said:\n"
            + said,
        )
        root_reaches_the_disk_end(guest)
        guest.check(not guest.boot_failures(), "the boot scripts reported failures")
        if case.online:
            guest.resize_disk(GROWN_ONLINE)
            # Bounded wait on the real condition: the udev rule starts the service.
            limit = GROWN + (GROWN_ONLINE - GROWN) // 2
            size = int(
                guest.run(
                    f"i=0; while [ $(df -B1 --output=size / | tail -n 1) -le {limit} ]"
                    f" && [ $i -lt {ONLINE_SECONDS} ]; do sleep 1; i=$((i + 1)); done;"
                    " df -B1 --output=size / | tail -n 1",
                    timeout=ONLINE_SECONDS + 30,
                )
            )
            said = service_log(guest, case)
            guest.check(
                size > limit,
                f"/ has {size} bytes {ONLINE_SECONDS} s after the disk grew to {GROWN_ONLINE}"
                f" under the running guest; the service said:\n{said}",
            )
            root_reaches_the_disk_end(guest)
            grown = re.findall(rf"grew the {case.fstype} filesystem on /", said)
            guest.check(len(grown) == 2, f"the service did not grow / twice:\n{said}")
