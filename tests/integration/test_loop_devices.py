"""Loop devices as devices.py sets them up: with autoclear from the start (LO_FLAGS_AUTOCLEAR),
held open while in use, so the kernel frees them when their last user goes — on leaving,
on a signal during the set-up, or when the process is killed outright."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sh

from gentoobootstrap.disk import devices
from gentoobootstrap.errors import Interrupted
from support import REPO

pytestmark = pytest.mark.root

MIB = 1 << 20


def info(loop: Path) -> dict[str, Any]:
    out = sh.losetup(
        "--list", "--json", "--output", "NAME,AUTOCLEAR,PARTSCAN,RO,OFFSET,SIZELIMIT,BACK-FILE",
        str(loop),
    )  # fmt: skip
    found: dict[str, Any] = json.loads(str(out))["loopdevices"][0]
    return found


def gone(image: Path) -> None:
    """Wait (bounded) until no loop device is backed by ``image``: the kernel clears one
    asynchronously after its last close."""
    devices.wait_for(
        lambda: not devices.loops_of(image),
        f"the loop devices of {image} to go",
        devices.RELEASE_TIMEOUT,
    )


@pytest.fixture
def image(no_leaks: Path) -> Path:
    path = no_leaks / "disk.img"
    with open(path, "wb") as f:
        f.truncate(16 * MIB)
    return path


@pytest.mark.parametrize("ioctls", ["LOOP_CONFIGURE", "LOOP_SET_FD+LOOP_SET_STATUS64"])
def test_a_disk_and_its_read_only_slice(
    ioctls: str, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if ioctls != "LOOP_CONFIGURE":  # as on kernels before 5.8: an ioctl it does not know
        monkeypatch.setattr(devices, "LOOP_CONFIGURE", 0x4CFF)
    with devices.attach(image) as loop:
        seen = info(loop)
        assert (seen["autoclear"], seen["partscan"], seen["ro"]) == (True, True, False)
        assert seen["back-file"] == str(image)
        with devices.loop_device(loop, offset=MIB, size=4 * MIB, readonly=True) as part:
            seen = info(part)
            assert (seen["autoclear"], seen["ro"], seen["offset"], seen["sizelimit"]) == (
                True, True, MIB, 4 * MIB,
            )  # fmt: skip
            assert devices.size_of(part) == 4 * MIB
        assert devices.loops_of(loop) == []
    assert devices.loops_of(image) == []


def test_a_signal_during_the_set_up_leaves_nothing(
    image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure = devices._configure

    def attached_then_signalled(fd: int, file_fd: int, info: bytes) -> None:
        configure(fd, file_fd, info)
        raise Interrupted(15, "SIGTERM")

    monkeypatch.setattr(devices, "_configure", attached_then_signalled)
    with pytest.raises(Interrupted), devices.attach(image):
        pytest.fail("never reached")
    gone(image)


KEEPER = """
import sys
from pathlib import Path
from gentoobootstrap.disk import devices
with devices.attach(Path(sys.argv[1])) as loop:
    print(loop, flush=True)
    sys.stdin.read()
"""


def test_a_process_killed_outright_leaves_nothing(image: Path) -> None:
    """No handler runs on SIGKILL: the kernel clears the device when the process's fd goes."""
    with subprocess.Popen(
        [sys.executable, "-c", KEEPER, str(image)],
        env={"PYTHONPATH": str(REPO / "python"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            loop = Path(process.stdout.readline().strip())
            assert devices.loops_of(image) == [loop]
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=30) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    gone(image)
