"""create's step runner: steps in order, each logged; resources released in reverse order
on success, on error and on a signal; the failing step named before the error."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from gentoobootstrap import create, osenv
from gentoobootstrap.context import Context
from gentoobootstrap.errors import DiskError, Interrupted, OSEnvError
from gentoobootstrap.settings import Settings
from support import ganeti_environ


@pytest.fixture
def ctx(tmp_path) -> Context:  # type: ignore[no-untyped-def]
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    return Context(osenv.parse("create", ganeti_environ(image)), Settings())


@pytest.fixture(autouse=True)
def plain_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("gentoobootstrap")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)


def steps_that(events: list[str], fail_with: BaseException | None = None):  # type: ignore[no-untyped-def]
    def attach_disk(ctx: Context) -> None:
        events.append("attach")
        ctx.stack.callback(events.append, "detach")

    def mount_filesystems(ctx: Context) -> None:
        events.append("mount")
        ctx.stack.callback(events.append, "umount")

    def unpack_stage(ctx: Context) -> None:
        events.append("unpack")
        if fail_with is not None:
            raise fail_with

    return (attach_disk, mount_filesystems, unpack_stage)


def test_success_releases_in_reverse_order_as_a_logged_step(ctx: Context, caplog) -> None:  # type: ignore[no-untyped-def]
    events: list[str] = []
    with caplog.at_level(logging.INFO):
        create.run_steps(ctx, steps_that(events))
    assert events == ["attach", "mount", "unpack", "umount", "detach"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "attach disk ..." and messages[-1].startswith("release disk done (")


@pytest.mark.parametrize("error", [DiskError("disk full"), Interrupted(15, "SIGTERM")])
def test_error_or_signal_releases_everything(ctx: Context, caplog, error: BaseException) -> None:  # type: ignore[no-untyped-def]
    events: list[str] = []
    with caplog.at_level(logging.INFO), pytest.raises(type(error)):
        create.run_steps(ctx, steps_that(events, error))
    assert events == ["attach", "mount", "unpack", "umount", "detach"]
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    if isinstance(error, DiskError):
        assert failed == ["unpack stage failed; releasing the disk"]
    assert not any("release disk" in r.getMessage() for r in caplog.records)


def test_the_stage_is_obtained_before_the_disk_is_touched() -> None:
    names = [step.__name__ for step in create.STEPS]
    assert names.index("obtain_stage") < names.index("attach_disk") < names.index("check_disk")
    assert names.index("check_disk") < names.index("partition_disk")


def test_the_swap_file_follows_the_stage_and_precedes_fstab() -> None:
    names = [step.__name__ for step in create.STEPS]
    assert names.index("unpack_stage") < names.index("make_swap_file") < names.index("write_fstab")


@pytest.mark.parametrize(("style", "ok"), [("msdos", False), ("gpt", True)])
def test_boot_type_uefi_needs_an_esp_before_the_disk_is_touched(  # type: ignore[no-untyped-def]
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog, style: str, ok: bool
) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    env = osenv.parse("create", ganeti_environ(image, INSTANCE_HV_boot_type="uefi"))
    ctx = Context(env, dataclasses.replace(Settings(), partition_style=style))
    ctx.disk = image
    monkeypatch.setattr(create.disks, "size_of", lambda disk: 4 << 30)
    caplog.set_level(logging.INFO)
    if ok:
        create.plan_disk(ctx, None)
        assert "boot type: uefi (INSTANCE_HV_boot_type)" in caplog.messages
    else:
        with pytest.raises(OSEnvError, match=r"^INSTANCE_HV_boot_type: uefi, but the disk's msdos"):
            create.plan_disk(ctx, None)
