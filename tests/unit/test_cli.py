"""cli.main: the only place errors become exit codes and one final ERROR line."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from gentoobootstrap import cli, paths
from gentoobootstrap.config.osenv import OSEnv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.errors import DiskError, Interrupted
from support import ganeti_environ


@pytest.fixture(autouse=True)
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Configured paths under tmp_path: a defaults file, variants/default.conf, variants.list."""
    os_path = tmp_path / "os" / "gentoobootstrap"
    os_path.mkdir(parents=True)
    (os_path / "variants.list").write_text("default\n")
    variants = tmp_path / "etc" / "variants"
    variants.mkdir(parents=True)
    (variants / "default.conf").write_text("")
    monkeypatch.setattr(paths, "OS_PATH", os_path)
    monkeypatch.setattr(paths, "VARIANTS_DIR", variants)
    monkeypatch.setattr(paths, "DEFAULTS_FILE", tmp_path / "etc" / "defaults")
    return tmp_path


def verify_env(**osp: str) -> dict[str, str]:
    env = {"OS_API_VERSION": "20", "OS_NAME": "gentoobootstrap", "OS_VARIANT": "default"}
    env["DEBUG_LEVEL"] = "0"
    return {**env, **{f"OSP_{k}": v for k, v in osp.items()}}


def last_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""  # export's stdout is the data stream: nothing else goes there
    return captured.err.rstrip("\n").splitlines()[-1]


def test_verify_parameters_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main("verify", ["parameters"], verify_env(FILESYSTEM="xfs")) == 0
    assert capsys.readouterr().out == ""


def test_verify_bad_parameter_fails_with_one_error_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main("verify", ["parameters"], verify_env(FILESYSTEM="ntfs")) == 1
    line = last_line(capsys)
    assert line.endswith(
        "ERROR: verify: OS parameter 'filesystem' has a bad value; "
        "allowed values: ext2, ext3, ext4, xfs, btrfs"
    )
    assert "ntfs" not in line


def test_verify_unknown_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main("verify", ["parameters"], verify_env(FOO="1")) == 1
    assert "ERROR: verify: unknown OS parameter 'foo'" in last_line(capsys)


def test_verify_unknown_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main("verify", ["everything"], verify_env()) == 1
    assert "unknown verify check 'everything'" in last_line(capsys)


def test_missing_instance_variable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env = ganeti_environ(tmp_path / "disk")
    del env["INSTANCE_NAME"]
    assert cli.main("create", [], env, isolate=False) == 1
    assert last_line(capsys).endswith("ERROR: create: INSTANCE_NAME: required but not set")


def test_configuration_error(capsys: pytest.CaptureFixture[str], configured: Path) -> None:
    (configured / "etc" / "defaults").write_text('SWAP="maybe"\n')
    assert cli.main("verify", ["parameters"], verify_env()) == 1
    assert last_line(capsys).endswith(
        "ERROR: verify: "
        f"{configured}/etc/defaults:1: SWAP: bad value 'maybe'; allowed values: yes, file, no"
    )


def test_variant_not_listed(capsys: pytest.CaptureFixture[str]) -> None:
    env = {**verify_env(), "OS_VARIANT": "nope"}
    assert cli.main("verify", ["parameters"], env) == 1
    assert "variant 'nope' is not listed" in last_line(capsys)


def fail_with(exception: BaseException):  # type: ignore[no-untyped-def]
    def main(env: OSEnv, settings: Settings, argv: list[str]) -> None:
        raise exception

    return main


def test_library_error_becomes_exit_1_and_the_last_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from gentoobootstrap.scripts import create

    monkeypatch.setattr(create, "main", fail_with(DiskError("disk is too small: 10 MiB")))
    assert cli.main("create", [], ganeti_environ(tmp_path / "disk"), isolate=False) == 1
    assert last_line(capsys).endswith(" ERROR: create: disk is too small: 10 MiB")


def test_unexpected_errors_keep_their_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from gentoobootstrap.scripts import create

    monkeypatch.setattr(create, "main", fail_with(ZeroDivisionError("bug")))
    with pytest.raises(ZeroDivisionError):
        cli.main("create", [], ganeti_environ(tmp_path / "disk"), isolate=False)


def test_interrupted_exits_128_plus_signal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from gentoobootstrap.scripts import create

    monkeypatch.setattr(create, "main", fail_with(Interrupted(signal.SIGTERM, "SIGTERM")))
    assert (
        cli.main("create", [], ganeti_environ(tmp_path / "disk"), isolate=False)
        == 128 + signal.SIGTERM
    )
    assert "ERROR: create: interrupted by SIGTERM" in last_line(capsys)


def test_a_real_sigterm_unwinds_and_handlers_are_restored(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from gentoobootstrap.scripts import create

    released = []

    def main(env: OSEnv, settings: Settings, argv: list[str]) -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            released.append("disk")

    monkeypatch.setattr(create, "main", main)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main("create", [], ganeti_environ(tmp_path / "disk"), isolate=False) == 143
    assert released == ["disk"]
    assert signal.getsignal(signal.SIGTERM) == before
    assert "interrupted by SIGTERM" in last_line(capsys)


def test_debug_level_shows_debug_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main("verify", ["parameters"], {**verify_env(), "DEBUG_LEVEL": "1"}) == 0
    assert "DEBUG: verify: variant default" in capsys.readouterr().err
    assert cli.main("verify", ["parameters"], verify_env()) == 0
    assert "DEBUG" not in capsys.readouterr().err


def test_debug_level_is_read_as_osenv_checked_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main("verify", ["parameters"], {**verify_env(), "DEBUG_LEVEL": "00"}) == 0
    assert "DEBUG" not in capsys.readouterr().err  # zero, however written


def test_debug_setting_shows_debug_lines(
    capsys: pytest.CaptureFixture[str], configured: Path
) -> None:
    (configured / "etc" / "defaults").write_text('DEBUG="yes"\n')
    assert cli.main("verify", ["parameters"], verify_env()) == 0
    assert "DEBUG: verify: variant default" in capsys.readouterr().err


@pytest.mark.parametrize("operation", ["create", "import", "export", "rename"])
def test_an_os_script_but_verify_takes_no_arguments(
    operation: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(operation, ["--force"], ganeti_environ(tmp_path / "disk"), isolate=False) == 1
    assert last_line(capsys).endswith(
        f"ERROR: {operation}: argv: {operation} takes no arguments, got '--force'"
    )
