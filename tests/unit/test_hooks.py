"""CUSTOMIZE_DIR hooks: run-parts names and order, environment, failures, processes left behind."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from gentoobootstrap import processes
from gentoobootstrap.config import osenv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.errors import HookError
from gentoobootstrap.guest import hooks
from gentoobootstrap.scripts import create
from gentoobootstrap.scripts.install import Mounted
from support import ganeti_environ, mounted_context
from support.logs import plain_logging  # noqa: F401 (autouse)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x"


def hook(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


def make_ctx(tmp_path: Path, **environ: str) -> Mounted[Any]:
    disk = tmp_path / "disk.img"
    disk.touch()
    env = osenv.parse("create", ganeti_environ(disk, **environ))
    target = tmp_path / "target"
    target.mkdir()
    settings = Settings(customize_dir=tmp_path / "hooks", network="ganeti")
    return mounted_context(env, settings, target)


def test_run_parts_names_and_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "hooks"
    record = 'echo "${0##*/}" >> "$LOG"\n'
    for name in ("a", "B", "10-b", "2-a", "_x", "-dash"):
        hook(d, name, record)
    for name in ("c.sh", "d~", ".hidden", "e.dpkg-old", "f g"):
        hook(d, name, record)  # executable, but not a run-parts name
    hook(d, "notexec", record, mode=0o644)
    (d / "dir").mkdir()
    (d / "link-to-a").symlink_to(d / "a")
    (d / "broken").symlink_to(d / "missing")
    caplog.set_level(logging.INFO)

    found = hooks.find(d)

    expected = ["-dash", "10-b", "2-a", "B", "_x", "a", "link-to-a"]  # C locale: bytes
    assert [p.name for p in found] == expected
    log = tmp_path / "ran"
    hooks.run_parts(found, {"LOG": str(log)}, tmp_path)
    assert log.read_text().split() == expected
    assert (
        "skipped (names may hold only letters, digits, _ and -): .hidden c.sh d~ e.dpkg-old f g"
    ) in caplog.text
    assert "not executable, not run: notexec" in caplog.text


def test_no_hook_directory(tmp_path: Path) -> None:
    assert hooks.find(tmp_path / "none") == []
    create.run_hooks(make_ctx(tmp_path))  # nothing mounted, nothing run


def test_environment(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, OSP_SSH_KEY=KEY, NIC_0_IP="192.0.2.10")
    d = tmp_path / "hooks"
    hook(d, "env", 'env > "$TARGET/env"\nif read -r line; then echo input; else echo eof; fi\n')
    hooks.run_parts(hooks.find(d), create.hook_environment(ctx), ctx.target)
    env = dict(line.split("=", 1) for line in (tmp_path / "target/env").read_text().splitlines())
    assert env["TARGET"] == str(tmp_path / "target")
    assert env["BLOCKDEV"] == "/dev/loop7"
    assert env["ROOT_DEV"] == "/dev/loop7p1"
    assert env["BOOT_DEV"] == env["SWAP_DEV"] == ""
    # Ganeti's variables as given, OS parameters included.
    assert env["INSTANCE_NAME"] == "inst1.example.com"
    assert env["NIC_0_IP"] == "192.0.2.10"
    assert env["OSP_SSH_KEY"] == KEY
    assert env["PATH"] == "/sbin:/bin:/usr/sbin:/usr/bin"
    # Every resolved setting, as the settings files spell it.
    assert env["NETWORK"] == "ganeti"
    assert env["CUSTOMIZE_DIR"] == str(tmp_path / "hooks")
    assert env["SWAP"] == "no" and env["COPY_RESOLV_CONF"] == "yes"
    assert env["SSH_AUTHORIZED_KEYS"] == "" and env["KERNEL_ARGS"] == ""
    assert env["ROOT_PASSWORD"] == "empty"
    assert env["LC_ALL"] == "C"


def test_the_environment_has_exactly_the_documented_variables(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    places = {name: None for name in hooks.HOOK_VARIABLES}
    assert hooks.environment(ctx.env, ctx.settings, places)["ESP_DEV"] == ""
    for wrong in ({**places, "EXTRA_DEV": None}, {"TARGET": ctx.target}):
        with pytest.raises(ValueError, match="hook variables"):
            hooks.environment(ctx.env, ctx.settings, wrong)


def test_a_failing_hook_stops_create(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "hooks"
    hook(d, "10-talk", "echo step one\n")
    hook(d, "20-fail", "echo working\necho 'out of disk space' >&2\necho last words\nexit 3\n")
    hook(d, "30-never", 'touch "$0.ran"\n')
    caplog.set_level(logging.INFO)
    with pytest.raises(HookError) as e:
        hooks.run_parts(hooks.find(d), {}, tmp_path)
    assert str(e.value) == (
        f"hook {d}/20-fail failed with exit status 3: working | out of disk space | last words"
    )
    assert "10-talk: step one" in caplog.text
    assert "20-fail: out of disk space" in caplog.text  # stderr logged too
    assert not (d / "30-never.ran").exists()


def test_a_hook_that_cannot_run(tmp_path: Path) -> None:
    d = tmp_path / "hooks"
    d.mkdir()
    (d / "noshebang").write_bytes(b"\x7fELF garbage")
    (d / "noshebang").chmod(0o755)
    with pytest.raises(HookError, match=r"hook .*/noshebang cannot be run: Exec format error"):
        hooks.run_parts(hooks.find(d), {}, tmp_path)


def pid_alive(pid: int) -> bool:
    """Running (not a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    "how",
    [
        '(cd "$TARGET" && exec sleep 300) </dev/null >/dev/null 2>&1 &',  # cwd, fds detached
        'sleep 300 < "$TARGET/held" &',  # an open file, stdout still the log file
    ],
)
def test_a_process_left_in_target_is_killed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "held").write_text("x\n")
    d = tmp_path / "hooks"
    # Exit only once the process runs sleep (so holds TARGET): else the final sweep kills it.
    started = 'until [ "$(cat /proc/$!/comm)" = sleep ]; do :; done\n'
    hook(d, "daemon", f'{how}\n{started}echo $! > "$PIDFILE"\n')
    pidfile = tmp_path / "pid"
    hooks.run_parts(hooks.find(d), {"TARGET": str(target), "PIDFILE": str(pidfile)}, target)
    pid = int(pidfile.read_text())
    assert not pid_alive(pid)
    assert processes.holders(target) == []
    assert f"hook daemon left process {pid} (sleep)" in caplog.text


# -- only root's hooks run as root ---------------------------------------------------------------


def refused(directory: Path) -> str:
    with pytest.raises(HookError) as e:
        hooks.find(directory)
    message = str(e.value)
    assert message.startswith("refusing to run hooks: ") and "\n" not in message
    return message


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_a_hook_directory_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    d = tmp_path / "hooks"
    hook(d, "10-a", "true\n")
    d.chmod(mode)
    assert refused(d).startswith(f"refusing to run hooks: {d} is writable by group or others;")


@pytest.mark.parametrize("mode", [0o775, 0o757])
def test_a_hook_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    d = tmp_path / "hooks"
    hook(d, "10-a", "true\n")
    bad = hook(d, "20-b", "true\n", mode=mode)
    assert refused(d).startswith(f"refusing to run hooks: {bad} is writable by group or others;")


def test_a_symlinked_hook_is_judged_by_what_it_resolves_to(tmp_path: Path) -> None:
    d = tmp_path / "hooks"
    elsewhere = hook(tmp_path / "elsewhere", "shared", "true\n")
    d.mkdir()
    (d / "10-shared").symlink_to(elsewhere)
    assert hooks.find(d) == [d / "10-shared"]
    elsewhere.chmod(0o777)
    assert refused(d).startswith(
        f"refusing to run hooks: {elsewhere} (target of {d / '10-shared'}) is writable by group"
    )
    elsewhere.chmod(0o755)
    (tmp_path / "elsewhere").chmod(0o777)
    assert refused(d).startswith(
        f"refusing to run hooks: {tmp_path / 'elsewhere'} (above {d / '10-shared'}) is writable"
    )


def test_a_directory_above_that_others_could_swap_it_through_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    d = shared / "hooks"
    shared.mkdir()
    hook(d, "10-a", "true\n")
    shared.chmod(0o777)
    assert refused(d).startswith(f"refusing to run hooks: {shared} (above {d}) is writable by")
    shared.chmod(0o1777)  # sticky, as /tmp: others cannot rename what is not theirs
    assert hooks.find(d) == [d / "10-a"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files away")
def test_hooks_owned_by_someone_else_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "hooks"
    theirs = hook(d, "10-theirs", "true\n")
    os.chown(theirs, 65534, 65534)
    assert refused(d).startswith(f"refusing to run hooks: {theirs} is owned by uid 65534, not root")
    theirs.unlink()
    os.chown(d, 65534, 65534)
    assert refused(d).startswith(f"refusing to run hooks: {d} is owned by uid 65534, not root")


def test_a_refused_hook_is_not_run(tmp_path: Path) -> None:
    d = tmp_path / "hooks"
    ran = tmp_path / "ran"
    hook(d, "10-a", f"touch {ran}\n", mode=0o777)
    with pytest.raises(HookError):
        create.run_hooks(make_ctx(tmp_path))
    assert not ran.exists()
