"""A loop device for a test image that is really gone when the test ends.

The kernel releases a detached loop device asynchronously, once its last
user closes it: a leak check run right after ``losetup --detach`` can still
see it.  :func:`loop_device` waits (bounded) until it is gone.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import sh


def users_of(device: Path) -> list[str]:
    """Processes that have ``device`` open or mounted in their mount namespace.

    The latter happens when another test copies the mount table (``unshare -m``,
    ``ip netns exec``) while our filesystem is mounted: then our umount may
    not reach that copy, and the device stays busy until that process ends.
    """
    found = []
    rdev = device.stat().st_rdev
    number = f" {os.major(rdev)}:{os.minor(rdev)} "
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).startswith("/dev/") and fd.stat().st_rdev == rdev:
                        found.append(f"{proc.name} ({(proc / 'comm').read_text().strip()})")
            if number in (proc / "mountinfo").read_text():
                found.append(f"{proc.name} ({(proc / 'comm').read_text().strip()}) mounts it")
    return found


def _backing(loop: Path) -> str:
    try:
        return (Path("/sys/block") / loop.name / "loop/backing_file").read_text()
    except FileNotFoundError:
        return ""


def detach(loop: Path) -> None:
    """Detach ``loop`` and wait until the kernel has released it: while anything (a probe)
    still has it open, the kernel only marks it, and clears it on the last close."""
    before = _backing(loop)
    sh.losetup("--detach", str(loop))
    deadline = time.monotonic() + 30
    while before and _backing(loop) == before:  # gone, or already attached anew elsewhere
        assert time.monotonic() < deadline, f"{loop} stays attached, open by {users_of(loop)}"
        time.sleep(0.05)


@contextlib.contextmanager
def loop_device(image: Path, partitions: bool = False) -> Iterator[Path]:
    """``image`` on a loop device (with its partitions as ``LOOPpN`` when asked)."""
    argv = ["--find", "--show"] + (["--partscan"] if partitions else [])
    loop = Path(str(sh.losetup(*argv, str(image))).strip())
    try:
        if partitions and not Path(f"{loop}p1").exists():
            sh.partx("--add", str(loop))  # kernels that do not scan by themselves
        yield loop
    finally:
        detach(loop)
