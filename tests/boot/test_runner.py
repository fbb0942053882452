"""The boot runner itself: bounded waits, fail-fast messages, login, commands, qemu killed.

The first tests talk to a scripted console (a small Python program standing in for
the guest's serial line: boot messages, a getty, a shell with tty echo), so the
runner's logic is checked in a second on any machine; the last ones boot qemu.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from boot import kit, qemu

#: A scripted serial console: prints BOOT, then a getty and a root shell that
#: echoes each line (as a tty does) and runs it with sh.
CONSOLE = r"""
import subprocess, sys
out = sys.stdout
out.write(sys.argv[1].encode().decode("unicode_escape")); out.flush()
if "login:" not in sys.argv[1]:
    sys.stdin.read()
    sys.exit(0)
user = sys.stdin.readline().strip()
out.write(user + "\r\n")
if sys.argv[2]:
    out.write(sys.argv[2]); out.flush()
    sys.stdin.read()
    sys.exit(0)
out.write("Linux inst1\r\nroot@inst1:~# "); out.flush()
for line in sys.stdin:
    out.write(line.replace("\n", "\r\n")); out.flush()
    # The login's terminal set-up must not touch this machine's console.
    line = line.replace("stty -echo; dmesg -n 1", "true")
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True)
    out.write(done.stdout.replace("\n", "\r\n") + "root@inst1:~# "); out.flush()
"""

BOOT = "INIT: version 3.06 booting\\r\\nINIT: Entering runlevel: 2\\r\\n\\r\\n"


@contextmanager
def console(tmp_path: Path, boot: str, after_login: str = "") -> Iterator[qemu.Guest]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CONSOLE, boot, after_login],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    with open(tmp_path / "serial.log", "wb") as log:
        try:
            yield qemu.Guest(proc, tmp_path / "serial.log", log)
        finally:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe:
                    pipe.close()


def test_logs_in_as_root_and_runs_commands(tmp_path: Path) -> None:
    with console(tmp_path, BOOT + "inst1 login: ") as guest:
        assert guest.login("inst1") >= 0
        assert guest.run("echo hello; echo world") == "hello\nworld"
        assert guest.run("true") == ""
        assert guest.boot_failures() == []
        with pytest.raises(qemu.BootFailed, match=r"'false' failed in the guest \(status 1\)"):
            guest.run("false")


@pytest.mark.parametrize(
    ("message", "meaning"),
    [
        (
            "Give root password for maintenance\\r\\n(or press Control-D to continue):",
            "maintenance",
        ),
        ("[    1.2] Kernel panic - not syncing: VFS: Unable to mount root fs", "panicked"),
        ("initrd failed: cannot mount /dev/vda1", "initrd could not mount"),
        ("grub rescue> ", "GRUB found neither"),
    ],
)
def test_early_failures_fail_fast(tmp_path: Path, message: str, meaning: str) -> None:
    started = time.monotonic()
    with console(tmp_path, "booting\\r\\n" + message) as guest:  # noqa: SIM117
        with pytest.raises(qemu.BootFailed, match=meaning) as failed:
            guest.login("inst1", timeout=60)
    assert time.monotonic() - started < 10
    assert message.split("\\r")[0][-20:] in str(failed.value)  # the log's tail is shown


def test_a_wrong_hostname_in_the_prompt_fails(tmp_path: Path) -> None:
    with console(tmp_path, BOOT + "localhost login: ") as guest:  # noqa: SIM117
        with pytest.raises(qemu.BootFailed, match="names 'localhost', expected 'inst1'"):
            guest.login("inst1")


def test_a_root_password_prompt_fails(tmp_path: Path) -> None:
    with console(tmp_path, BOOT + "inst1 login: ", "Password: ") as guest:  # noqa: SIM117
        with pytest.raises(qemu.BootFailed, match="asks for a root password"):
            guest.login("inst1")


def test_a_refused_password_fails(tmp_path: Path) -> None:
    refused = "Password: \\r\\n\\r\\nLogin incorrect\\r\\n"
    with console(tmp_path, BOOT + "inst1 login: ", refused) as guest:  # noqa: SIM117
        with pytest.raises(qemu.BootFailed, match="refused the root login"):
            guest.login("inst1", password="wrong")


def test_ssh_retries_until_its_bound_and_fails_with_the_log(tmp_path: Path) -> None:
    # Nothing listens on the reserved port: every try is refused until the bound.
    with qemu._reserved_port() as port, console(tmp_path, BOOT) as guest:
        guest.ssh_port = port
        started = time.monotonic()
        with pytest.raises(qemu.BootFailed, match="no SSH login as root within 2 s") as failed:
            guest.ssh(tmp_path / "no-key", "true", timeout=2)
        assert 2 <= time.monotonic() - started < 30
        assert "Entering runlevel" in str(failed.value)  # the serial log's tail


def test_no_getty_after_the_runlevel_fails_without_the_full_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qemu, "RUNLEVEL_TO_LOGIN", 1.0)
    started = time.monotonic()
    with console(tmp_path, BOOT) as guest:  # noqa: SIM117
        with pytest.raises(qemu.BootFailed, match="no login prompt 1 s after init entered"):
            guest.login("inst1", timeout=60)
    assert time.monotonic() - started < 10


def test_the_emulator_exiting_fails(tmp_path: Path) -> None:
    with console(tmp_path, "booting\\r\\n") as guest:
        assert guest.proc.stdin is not None
        guest.proc.stdin.close()  # the scripted console exits at EOF
        with pytest.raises(qemu.BootFailed, match=r"qemu exited \(status 0\)"):
            guest.login("inst1", timeout=60)


# -- with qemu ------------------------------------------------------------------------


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


@pytest.mark.boot
def test_a_disk_without_boot_loader_times_out_and_qemu_is_killed(tmp_path: Path) -> None:
    with pytest.raises(qemu.BootFailed, match="no login prompt on the serial console within 3 s"):  # noqa: SIM117
        with qemu.boot(_blank_disk(tmp_path), tmp_path) as guest:
            pid = guest.proc.pid
            guest.login("inst1", timeout=3)
    assert _gone(pid)


@pytest.mark.boot
def test_an_unmountable_root_fails_fast(tmp_path: Path, node_kernel: kit.NodeKernel) -> None:
    # /dev/vda exists but holds no filesystem: the initrd says so and powers off.
    disk = _blank_disk(tmp_path)
    with pytest.raises(qemu.BootFailed, match="initrd could not mount") as failed:  # noqa: SIM117
        with qemu.boot(disk, tmp_path, kernel=node_kernel, append="root=/dev/vda ro") as guest:
            pid = guest.proc.pid
            guest.login("inst1", timeout=120)
    assert _gone(pid)
    assert "cannot mount /dev/vda" in str(failed.value)
