"""The install's step runner: steps in order, each logged; resources released in reverse
order on success, on error and on a signal; the failing step named before the error.  And
the order create and import run their steps in."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import pytest

from gentoobootstrap.config import osenv
from gentoobootstrap.config.osenv import OSEnv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.errors import DiskError, Interrupted, OSEnvError
from gentoobootstrap.scripts import create, import_, install
from gentoobootstrap.scripts.install import Attached, Install
from support import ganeti_environ


@pytest.fixture
def env(tmp_path: Path) -> OSEnv:
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    return osenv.parse("create", ganeti_environ(image))


def run_steps(env: OSEnv, steps: Sequence[Callable[[Install[None]], None]]) -> None:
    with install.session(env, Settings(), env.first_disk_path) as start:
        for action in steps:
            install.step(action, start)


@pytest.fixture(autouse=True)
def plain_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("gentoobootstrap")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)


def steps_that(events: list[str], fail_with: BaseException | None = None):  # type: ignore[no-untyped-def]
    def attach_disk(ctx: Install[None]) -> None:
        events.append("attach")
        ctx.stack.callback(events.append, "detach")

    def mount_filesystems(ctx: Install[None]) -> None:
        events.append("mount")
        ctx.stack.callback(events.append, "umount")

    def unpack_stage(ctx: Install[None]) -> None:
        events.append("unpack")
        if fail_with is not None:
            raise fail_with

    return (attach_disk, mount_filesystems, unpack_stage)


def test_success_releases_in_reverse_order_as_a_logged_step(env: OSEnv, caplog) -> None:  # type: ignore[no-untyped-def]
    events: list[str] = []
    with caplog.at_level(logging.INFO):
        run_steps(env, steps_that(events))
    assert events == ["attach", "mount", "unpack", "umount", "detach"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "attach disk ..." and messages[-1].startswith("release disk done (")


@pytest.mark.parametrize("error", [DiskError("disk full"), Interrupted(15, "SIGTERM")])
def test_error_or_signal_releases_everything(env: OSEnv, caplog, error: BaseException) -> None:  # type: ignore[no-untyped-def]
    events: list[str] = []
    with caplog.at_level(logging.INFO), pytest.raises(type(error)):
        run_steps(env, steps_that(events, error))
    assert events == ["attach", "mount", "unpack", "umount", "detach"]
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    if isinstance(error, DiskError):
        assert failed == ["unpack stage failed; releasing the disk"]
    assert not any("release disk" in r.getMessage() for r in caplog.records)


def steps_of(script: Any, monkeypatch: pytest.MonkeyPatch, run: Callable[[], None]) -> list[str]:
    """The names of the steps ``script`` runs, in order (none of them is run)."""
    names: list[str] = []

    def record(action: Callable[[Any], Any], ctx: Any) -> Any:
        names.append(action.__name__)
        return ctx

    monkeypatch.setattr(script, "step", record)
    run()
    return names


def create_steps(env: OSEnv, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return steps_of(create, monkeypatch, lambda: create.main(env, Settings(), []))


def test_the_stage_is_obtained_before_the_disk_is_touched(
    env: OSEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = create_steps(env, monkeypatch)
    assert names.index("obtain_stage") < names.index("attach_disk") < names.index("check_disk")
    assert names.index("check_disk") < names.index("partition_disk")


def test_the_swap_file_follows_the_stage_and_precedes_fstab(
    env: OSEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = create_steps(env, monkeypatch)
    assert names.index("unpack_stage") < names.index("make_swap_file") < names.index("write_fstab")
    assert names[-2:] == ["configure_guest", "run_hooks"]


def test_import_reads_the_stream_before_the_disk_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    environ = ganeti_environ(image, IMPORT_DEVICE=str(image), IMPORT_INDEX="0")
    env = osenv.parse("import", environ)
    names = steps_of(import_, monkeypatch, lambda: import_.main(env, Settings(), []))
    assert names == [
        "read_stream_head", "attach_disk", "check_disk", "partition_disk", "make_filesystems",
        "mount_filesystems", "restore_files", "remake_swap_file", "rewrite_fstab",
    ]  # fmt: skip


@pytest.mark.parametrize(("style", "ok"), [("msdos", False), ("gpt", True)])
def test_boot_type_uefi_needs_an_esp_before_the_disk_is_touched(  # type: ignore[no-untyped-def]
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog, style: str, ok: bool
) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    env = osenv.parse("create", ganeti_environ(image, INSTANCE_HV_boot_type="uefi"))
    settings = dataclasses.replace(Settings(), partition_style=style)
    ctx = Attached(env, settings, contextlib.ExitStack(), image, None, disk=image)
    monkeypatch.setattr(install.devices, "size_of", lambda disk: 4 << 30)
    caplog.set_level(logging.INFO)
    if ok:
        install.plan_disk(ctx, None)
        assert "boot type: uefi (INSTANCE_HV_boot_type)" in caplog.messages
    else:
        with pytest.raises(OSEnvError, match=r"^INSTANCE_HV_boot_type: uefi, but the disk's msdos"):
            install.plan_disk(ctx, None)
