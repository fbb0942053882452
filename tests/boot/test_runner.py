"""The boot runner itself: bounded waits, fail-fast messages, qemu always killed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from boot import kit, qemu

pytestmark = pytest.mark.boot


def _blank_disk(tmp_path: Path) -> Path:
    disk = tmp_path / "blank.img"
    disk.write_bytes(b"")
    os.truncate(disk, 64 * 2**20)
    return disk


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_disk_without_boot_loader_times_out_and_qemu_is_killed(tmp_path: Path) -> None:
    with pytest.raises(qemu.BootFailed, match="no login prompt on the serial console within 3 s"):  # noqa: SIM117
        with qemu.boot(_blank_disk(tmp_path), tmp_path) as guest:
            pid = guest.proc.pid
            guest.login("inst1", timeout=3)
    assert _gone(pid)


def test_an_unmountable_root_fails_fast(tmp_path: Path, node_kernel: kit.NodeKernel) -> None:
    # /dev/vda exists but holds no filesystem: the initrd says so and powers off.
    disk = _blank_disk(tmp_path)
    with pytest.raises(qemu.BootFailed, match="initrd could not mount") as failed:  # noqa: SIM117
        with qemu.boot(disk, tmp_path, kernel=node_kernel, append="root=/dev/vda ro") as guest:
            pid = guest.proc.pid
            guest.login("inst1", timeout=120)
    assert _gone(pid)
    assert "cannot mount /dev/vda" in str(failed.value)
