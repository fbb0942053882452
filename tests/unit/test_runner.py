"""The one runner of external tools, with the tools faked (pytest-subprocess)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gentoobootstrap import runner
from gentoobootstrap.errors import CommandError, ToolNotFoundError
from support import REPO

PYTHON_DIR = REPO / "python"

TOOL = "/usr/sbin/faketool"


@pytest.fixture(autouse=True)
def debug_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # Attached to the library's logger itself: cli's log.setup() stops propagation.
    logger = logging.getLogger("gentoobootstrap")
    level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.DEBUG)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)


def test_logs_the_command_and_returns_its_output(fp, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    fp.register([TOOL, "--list", "a b"], stdout="result\n")
    assert runner.output([TOOL, "--list", "a b"]) == "result"
    assert f"+ {TOOL} --list 'a b'" in caplog.messages


def test_clean_environment_and_closed_stdin(fp, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.setenv("http_proxy", "http://leak:3128")
    recorder = fp.register([TOOL])
    runner.run([TOOL], env={"EXTRA": "1"})
    kwargs = recorder.calls[0].kwargs
    assert kwargs["stdin"] == subprocess.DEVNULL
    env = kwargs["env"]
    assert env["LC_ALL"] == "C" and env["EXTRA"] == "1"
    assert "LANG" not in env and "http_proxy" not in env
    assert "/usr/sbin" in env["PATH"].split(":")


def test_input_goes_to_stdin(fp) -> None:  # type: ignore[no-untyped-def]
    recorder = fp.register([TOOL])
    runner.run([TOOL], input="data")
    assert recorder.calls[0].kwargs["stdin"] == subprocess.PIPE


def test_secrets_are_redacted(fp, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    fp.register([TOOL, "--password=hunter2", "user"])
    runner.run([TOOL, "--password=hunter2", "user"], redact=["hunter2"])
    assert f"+ {TOOL} '--password=***' user" in caplog.messages
    assert "hunter2" not in caplog.text


def test_failure_carries_exit_status_and_stderr_tail(fp) -> None:  # type: ignore[no-untyped-def]
    stderr = "".join(f"noise {i}\n" for i in range(20)) + "mkfs: device is busy\n"
    fp.register([TOOL, "/dev/loop9"], returncode=3, stderr=stderr)
    with pytest.raises(CommandError) as e:
        runner.run([TOOL, "/dev/loop9"])
    assert e.value.returncode == 3
    assert e.value.argv == [TOOL, "/dev/loop9"]
    assert e.value.stderr == stderr
    message = str(e.value)
    assert message.startswith(f"{TOOL} failed with exit status 3: ")
    assert message.endswith("mkfs: device is busy")
    assert "noise 0" not in message and "\n" not in message


def test_unchecked_failure_returns_the_result(fp) -> None:  # type: ignore[no-untyped-def]
    fp.register([TOOL], returncode=1, stdout="half\n", stderr="warn\n")
    result = runner.run([TOOL], check=False)
    assert (result.returncode, result.stdout, result.stderr) == (1, "half\n", "warn\n")


def test_missing_tool_names_its_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(runner, "_SYSTEM_PATH", str(tmp_path))
    with pytest.raises(ToolNotFoundError) as e:
        runner.run(["mkfs.xfs", "/dev/null"])
    assert str(e.value) == "mkfs.xfs not found: install xfsprogs"
    assert not runner.have_tool("mkfs.xfs")
    with pytest.raises(ToolNotFoundError, match=r"^frobnicate not found$"):
        runner.find_tool("frobnicate")


def test_tools_are_found_outside_the_callers_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tool = tmp_path / "sbin" / "mytool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(runner, "_SYSTEM_PATH", str(tool.parent))
    assert runner.find_tool("mytool") == str(tool)


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def guest_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh list of guest mount directories and tool cache for the test."""
    monkeypatch.setattr(runner, "_guest_dirs", [])
    monkeypatch.setattr(runner, "_found", {})


@pytest.mark.usefixtures("guest_dirs")
def test_tools_are_pinned_before_a_guest_mount_and_never_found_in_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A PATH entry below the mount directory (or a relative one) is never searched: the node's
    tar is pinned, the guest's blkid is never found, and children get the same PATH."""
    node_tar = executable(tmp_path / "node" / "tar")
    guest = tmp_path / "mounts"
    executable(guest / "root" / "usr" / "bin" / "blkid")
    executable(guest / "root" / "usr" / "bin" / "tar")
    entries = [str(guest / "root" / "usr" / "bin"), str(node_tar.parent), "bin", ""]
    monkeypatch.setenv("PATH", ":".join(entries))
    monkeypatch.setattr(runner, "_SYSTEM_PATH", str(tmp_path / "empty"))
    monkeypatch.chdir(guest / "root" / "usr")
    runner.pin(guest)
    assert runner.find_tool("tar") == str(node_tar)
    assert not runner.have_tool("blkid")
    assert runner.environment()["PATH"] == f"{node_tar.parent}:{tmp_path / 'empty'}"
    node_tar.unlink()  # resolved once: a later lookup does not search again
    assert runner.find_tool("tar") == str(node_tar)


@pytest.mark.usefixtures("guest_dirs")
def test_a_tool_that_leads_into_a_guest_mount_is_not_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    guest = tmp_path / "mounts"
    executable(guest / "root" / "bin" / "wipefs")
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "wipefs").symlink_to(guest / "root" / "bin" / "wipefs")
    monkeypatch.setenv("PATH", str(tmp_path / "node"))
    monkeypatch.setattr(runner, "_SYSTEM_PATH", str(tmp_path / "empty"))
    runner.pin(guest)
    with pytest.raises(ToolNotFoundError, match="wipefs not found: install util-linux"):
        runner.find_tool("wipefs")


def test_spawn_streams_and_checks_the_exit_status(tmp_path: Path) -> None:
    with runner.spawn(
        ["/bin/sh", "-c", "cat; echo gone >&2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"stream")
        proc.stdin.close()
        assert proc.stdout.read() == b"stream"
    with pytest.raises(CommandError) as e, runner.spawn(["/bin/sh", "-c", "echo oops >&2; exit 4"]):
        pass
    assert e.value.returncode == 4 and "oops" in str(e.value)


def test_spawn_terminates_the_child_when_the_body_fails() -> None:
    with pytest.raises(RuntimeError), runner.spawn(["/bin/sleep", "600"]) as proc:
        raise RuntimeError("step failed")
    assert proc.returncode is not None


def test_empty_command_is_refused() -> None:
    with pytest.raises(ValueError):
        runner.run([])


def test_a_child_dies_with_the_script(tmp_path: Path) -> None:
    """A script killed with SIGKILL takes its running tools with it (they would otherwise keep
    its mount namespace, and so its loop devices, alive)."""
    pidfile = tmp_path / "child.pid"
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from gentoobootstrap import runner;"
        "runner.run(['sh', '-c', 'echo $$ > ' + sys.argv[2] + '; exec sleep 600'])"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(PYTHON_DIR), str(pidfile)])
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the child never started"
        assert parent.poll() is None, "the script ended early"
        time.sleep(0.01)
    child = int(pidfile.read_text())
    parent.kill()
    parent.wait()
    while Path(f"/proc/{child}").exists() and "Z" not in _state(child):
        assert time.monotonic() < deadline + 30, f"child {child} outlived the script"
        time.sleep(0.01)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"
