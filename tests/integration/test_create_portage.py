"""create's snapshot and /etc/portage steps on a real directory tree (GNU tar as root)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gentoobootstrap.config.settings import Settings
from gentoobootstrap.errors import ConfigError
from gentoobootstrap.scripts import create
from gentoobootstrap.scripts.create import Sources
from gentoobootstrap.scripts.install import Mounted
from support import mounted_context
from support.mirror import make_tarball

pytestmark = pytest.mark.root


def context(target: Path, snapshot: Path | None = None, **changes: Any) -> Mounted[Sources]:
    settings = dataclasses.replace(Settings(), **changes)
    job = Sources(target / "no-stage", snapshot)
    return mounted_context(None, settings, target, job)  # type: ignore[arg-type]


@pytest.mark.parametrize("top", ["gentoo", "portage"])
def test_snapshot_lands_in_var_db_repos_gentoo(tmp_path: Path, top: str) -> None:
    snapshot = make_tarball(
        tmp_path / "snap.tar.xz",
        {f"{top}/metadata/timestamp.chk": b"now\n", f"{top}/profiles/x": b"1"},
    )
    target = tmp_path / "target"
    (target / "var" / "db" / "repos" / "gentoo").mkdir(parents=True)  # as a stage3 ships it
    ctx = context(target, snapshot)
    create.unpack_snapshot(ctx)
    repo = target / "var" / "db" / "repos" / "gentoo"
    assert (repo / "metadata" / "timestamp.chk").read_bytes() == b"now\n"
    assert [p.name for p in repo.parent.iterdir()] == ["gentoo"]


def test_no_snapshot_leaves_the_tree_alone(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    create.unpack_snapshot(ctx)
    create.copy_portage_config(ctx)
    assert list(tmp_path.iterdir()) == []


def test_portage_confdir_is_copied_over_etc_portage(tmp_path: Path) -> None:
    confdir = tmp_path / "conf"
    (confdir / "package.use").mkdir(parents=True)
    (confdir / "package.use" / "ganeti").write_text("app-editors/vim -X\n")
    (confdir / "make.conf").write_text('FEATURES="getbinpkg"\n')
    target = tmp_path / "target"
    (target / "etc" / "portage").mkdir(parents=True)
    (target / "etc" / "portage" / "make.conf").write_text("old\n")
    (target / "etc" / "portage" / "repos.conf").write_text("kept\n")
    create.copy_portage_config(context(target, portage_confdir=confdir))
    portage = target / "etc" / "portage"
    assert (portage / "make.conf").read_text() == 'FEATURES="getbinpkg"\n'
    assert (portage / "package.use" / "ganeti").read_text() == "app-editors/vim -X\n"
    assert (portage / "repos.conf").read_text() == "kept\n"


def test_missing_portage_confdir_fails_before_the_disk(tmp_path: Path) -> None:
    ctx = context(tmp_path, portage_confdir=tmp_path / "absent")
    with pytest.raises(ConfigError, match="PORTAGE_CONFDIR"):
        create.obtain_snapshot(ctx)
