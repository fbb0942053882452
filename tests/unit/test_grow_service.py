"""The grow service written into OpenRC and systemd stages, enabled, and off with GROW_ROOT=no."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest
from test_guest import enabled, make_ctx

from gentoobootstrap.config import files
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.guest import grow
from gentoobootstrap.guest.tree import GuestRoot
from gentoobootstrap.scripts import create
from support.guesttree import GROW_FILES, TREES, openrc_tree, systemd_tree
from support.logs import plain_logging  # noqa: F401 (autouse)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_openrc_service_needs_localmount_and_is_in_the_default_runlevel(tmp_path: Path) -> None:
    top = openrc_tree(tmp_path / "root")
    grow.install_service(GuestRoot(top), "openrc", True)
    script = top / grow.SCRIPT.lstrip("/")
    assert script.read_text() == grow.SCRIPT_TEXT and mode(script) == 0o755
    service = top / grow.OPENRC_SERVICE.lstrip("/")
    assert mode(service) == 0o755
    text = service.read_text()
    assert text.startswith("#!/sbin/openrc-run\n") and "need localmount" in text
    assert f"\t{grow.SCRIPT}\n" in text
    assert enabled(top, "openrc", grow.NAME)
    rule = (top / grow.UDEV_RULE.lstrip("/")).read_text()
    assert 'ACTION=="change"' in rule and 'ENV{RESIZE}=="1"' in rule
    assert f'RUN+="{grow.SCRIPT}"' in rule
    assert not (top / grow.SYSTEMD_UNIT.lstrip("/")).exists()


def test_systemd_unit_is_wanted_by_multi_user_and_started_on_a_resize(tmp_path: Path) -> None:
    top = systemd_tree(tmp_path / "root")
    grow.install_service(GuestRoot(top), "systemd", True)
    assert (top / grow.SCRIPT.lstrip("/")).read_text() == grow.SCRIPT_TEXT
    unit = (top / grow.SYSTEMD_UNIT.lstrip("/")).read_text()
    assert f"ExecStart={grow.SCRIPT}\n" in unit and "After=local-fs.target" in unit
    assert "Type=oneshot" in unit and "RemainAfterExit" not in unit  # runs again on each start
    assert enabled(top, "systemd", grow.NAME)
    rule = (top / grow.UDEV_RULE.lstrip("/")).read_text()
    assert f"systemctl --no-block start {grow.NAME}.service" in rule
    assert not (top / grow.OPENRC_SERVICE.lstrip("/")).exists()


@pytest.mark.parametrize("init", ["openrc", "systemd"])
@pytest.mark.parametrize("grow_root", [True, False])
def test_create_installs_it_unless_grow_root_is_no(
    tmp_path: Path, init: str, grow_root: bool
) -> None:
    top = TREES[init](tmp_path / "root")
    settings = dataclasses.replace(Settings(), grow_root=grow_root)
    create.configure_guest(make_ctx(tmp_path, top, settings))
    written = {path for path in GROW_FILES if os.path.lexists(top / path.lstrip("/"))}
    if not grow_root:
        assert written == set()
        return
    assert grow.SCRIPT in written and grow.UDEV_RULE in written
    assert (grow.OPENRC_SERVICE in written) == (init == "openrc")
    assert (grow.SYSTEMD_UNIT in written) == (init == "systemd")
    assert enabled(top, init, grow.NAME)


def test_grow_root_setting_is_yes_unless_turned_off(tmp_path: Path) -> None:
    assert Settings().grow_root is True
    variant = tmp_path / "variant.conf"
    variant.write_text('GROW_ROOT="no"\n')
    assert files.parse(files.read_file(variant), variant).grow_root is False


@pytest.mark.parametrize("text", [grow.SCRIPT_TEXT, grow.OPENRC_TEXT])
def test_the_scripts_are_posix_sh(text: str) -> None:
    assert text.startswith(("#!/bin/sh\n", "#!/sbin/openrc-run\n"))
    subprocess.run(["sh", "-n"], input=text, text=True, check=True)
