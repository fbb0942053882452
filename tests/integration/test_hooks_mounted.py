"""Hooks on a mounted TARGET: chroot mounts in place, a daemon left behind, nothing leaked."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sh

from gentoobootstrap import processes
from gentoobootstrap.config import osenv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.errors import HookError
from gentoobootstrap.scripts import create
from gentoobootstrap.scripts.install import Mounted
from support import ganeti_environ, mounted_context, mounts_under
from support.logs import plain_logging  # noqa: F401 (autouse)
from support.loopdisk import loop_device

BUSYBOX = shutil.which("busybox")


def hook(directory: Path, name: str, body: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text("#!/bin/sh\nset -e\n" + body)
    (directory / name).chmod(0o755)


@pytest.fixture
def mounted(no_leaks: Path) -> Iterator[Path]:
    image, target = no_leaks / "root.img", no_leaks / "target"
    sh.truncate("-s", "64M", str(image))
    sh.Command("mkfs.ext4")("-q", "-F", str(image))
    target.mkdir()
    with loop_device(image) as loop:
        sh.mount(str(loop), str(target))
        yield target
        sh.umount(str(target))  # fails (and the test with it) if anything still holds it


def make_ctx(tmp_path: Path, target: Path) -> Mounted[Any]:
    disk = tmp_path / "disk.img"
    disk.touch()
    env = osenv.parse("create", ganeti_environ(disk))
    return mounted_context(env, Settings(customize_dir=tmp_path / "hooks"), target)


@pytest.mark.root
@pytest.mark.skipif(BUSYBOX is None, reason="needs a static busybox (Debian: busybox-static)")
def test_hooks_chroot_and_leave_a_daemon(
    mounted: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (mounted / "bin").mkdir()
    shutil.copy(str(BUSYBOX), mounted / "bin/busybox")
    for applet in ("sh", "sleep", "cat", "ls"):
        (mounted / "bin" / applet).symlink_to("busybox")
    d = tmp_path / "hooks"
    hook(
        d,
        "10-chroot",
        'grep " $TARGET/" /proc/mounts | cut -d" " -f2 > "$TARGET/mounts"\n'
        'chroot "$TARGET" /bin/sh -c "cat /proc/self/comm; ls /dev/null /dev/pts /sys/kernel"'
        ' > "$TARGET/seen"\n',
    )
    # A daemon in the chroot, and a shell sitting in the /dev bind mount with a pts open.
    started = 'until [ "$(cat /proc/$!/comm)" = sleep ]; do :; done\n'
    hook(d, "20-daemon", 'chroot "$TARGET" /bin/sleep 300 </dev/null >/dev/null 2>&1 &\n' + started)
    hook(d, "30-sitter", '(cd "$TARGET/dev" && exec sleep 300 <"$TARGET/dev/ptmx") &\n' + started)

    create.run_hooks(make_ctx(tmp_path, mounted))

    assert (mounted / "mounts").read_text().split() == [
        f"{mounted}/proc",
        f"{mounted}/sys",
        f"{mounted}/dev",
        f"{mounted}/dev/pts",
    ]
    seen = (mounted / "seen").read_text().split()
    assert seen[0] == "cat" and "/dev/null" in seen and "/dev/pts:" in seen
    assert mounts_under(mounted) == [str(mounted)]
    assert processes.holders(mounted) == []
    warnings = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert any("hook 20-daemon left process" in w and "(sleep)" in w for w in warnings)
    assert any("hook 30-sitter left process" in w for w in warnings)


@pytest.mark.root
def test_a_failing_hook_releases_everything(mounted: Path, tmp_path: Path) -> None:
    d = tmp_path / "hooks"
    hook(
        d, "10-busy-then-fail", '(cd "$TARGET/proc" && exec sleep 300) & echo broken >&2; exit 1\n'
    )
    with pytest.raises(HookError, match=r"10-busy-then-fail failed with exit status 1: broken"):
        create.run_hooks(make_ctx(tmp_path, mounted))
    assert mounts_under(mounted) == [str(mounted)]
    assert processes.holders(mounted) == []
