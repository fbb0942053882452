"""A hostile stage cannot reach the node: create touches the guest tree only inside it.

Each stage carries symlinks that name a canary directory on the node, by the
node's absolute path.  Followed from the node they would overwrite the
canary's files, delete its directories or mount over them; resolved inside the
guest they name a path of the guest.  Either create succeeds with everything
landing inside the guest, or it stops with one ``ERROR:`` line naming what is
in the way; the canary stays byte for byte as it was, and nothing stays
attached or mounted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from gentoobootstrap.config.settings import Settings
from gentoobootstrap.scripts import create
from gentoobootstrap.scripts.create import Sources
from gentoobootstrap.stages import obtain
from support import canary_state, ganeti_environ, mounted_context, mounts_under, osdef, stage
from support.mirror import make_tarball

pytestmark = pytest.mark.root

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkQ7bVvVQ2mXH7bRkHVY5N4w0rZ9wWk8m6eR4zE2x1y admin@x"


@pytest.fixture
def canary(no_leaks: Path) -> Iterator[Path]:
    """The node's files a hostile stage aims at; unchanged after every test."""
    node = no_leaks / "node"
    for name, text in (
        ("passwd", "root:x:0:0::/root:/bin/sh\n"),
        ("etc-dir/kept", "node's package.use\n"),
        ("repos/gentoo/metadata/timestamp.chk", "the node's own tree\n"),
        ("dev/kept", "node's /dev\n"),
        ("proc/kept", "node's /proc\n"),
    ):
        (node / name).parent.mkdir(parents=True, exist_ok=True)
        (node / name).write_text(text)
    before = canary_state(node)
    yield node
    assert canary_state(node) == before
    assert [m for m in mounts_under(no_leaks) if m.startswith(str(node))] == []


def hostile(tmp: Path, change: Callable[[Path], None]) -> Path:
    """An OpenRC test stage changed by ``change(tree)``, packed as an uncompressed tar."""
    tree = tmp / "hostile-tree"
    stage.build_tree(tree, "openrc")
    change(tree)
    return stage.pack(tree, tmp / "stage4-amd64-hostile-openrc.tar", "none")


def link(tree: Path, path: str, target: Path | str) -> None:
    """Make the stage's ``path`` a symlink to ``target``, whatever was there."""
    where = tree / path
    if where.is_dir() and not where.is_symlink():
        for entry in sorted(where.rglob("*"), reverse=True):
            entry.unlink() if entry.is_symlink() or not entry.is_dir() else entry.rmdir()
        where.rmdir()
    elif os.path.lexists(where):
        where.unlink()
    where.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(str(target), where)


def inside(tree: Path, node_path: Path) -> Path:
    """Where the node's absolute ``node_path`` is within ``tree``."""
    return tree / str(node_path).lstrip("/")


def run_create(
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    stage_file: Path,
    **settings: object,
) -> tuple[int, str, Path]:
    """create onto a fresh disk with root on the whole disk; (status, log, image)."""
    image = tmp / "disk.img"
    with open(image, "wb") as f:
        f.truncate(300 << 20)
    confdir = osdef.configure(
        tmp / "conf", stage4_file=stage_file, partition_style="none", **settings
    )
    osdef.point_paths_at(confdir, monkeypatch)
    environ = ganeti_environ(image, INSTANCE_HV_root_path="/dev/vda", OSP_SSH_KEY=KEY)
    status = osdef.create(environ)
    return status, capfd.readouterr().err, image


def one_error(status: int, log: str) -> str:
    """The message of the one ``ERROR: create:`` line a failed run ends with (no traceback)."""
    assert status != 0
    assert "Traceback" not in log
    lines = log.strip().splitlines()
    assert [line for line in lines if "ERROR: create: " in line] == lines[-1:], log
    return "ERROR: " + lines[-1].split("ERROR: create: ", 1)[1]


def test_fstab_and_portage_links_are_replaced_in_the_guest(
    canary: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    tmp = canary.parent

    def change(tree: Path) -> None:
        link(tree, "etc/fstab", canary / "passwd")
        link(tree, "etc/portage/make.conf", canary / "passwd")
        link(tree, "etc/portage/package.use", canary / "etc-dir")

    confdir = tmp / "portage"
    (confdir / "package.use").mkdir(parents=True)
    (confdir / "package.use/ganeti").write_text("app-editors/vim -X\n")
    (confdir / "make.conf").write_text('FEATURES="getbinpkg"\n')
    status, log, image = run_create(
        tmp, monkeypatch, capfd, hostile(tmp, change), portage_confdir=confdir
    )
    assert status == 0, log
    with osdef.mounted(image, tmp / "check", fstype="ext4") as root:
        fstab = root / "etc/fstab"
        assert not fstab.is_symlink()
        active = [line.split() for line in fstab.read_text().splitlines() if line[:1] not in "#"]
        assert [fields[1:3] for fields in active] == [["/", "ext4"]]
        portage = root / "etc/portage"
        assert not (portage / "make.conf").is_symlink()
        assert (portage / "make.conf").read_text() == 'FEATURES="getbinpkg"\n'
        # The link led nowhere inside the guest: the admin's directory takes its place.
        assert not (portage / "package.use").is_symlink()
        assert (portage / "package.use/ganeti").read_text() == "app-editors/vim -X\n"


def test_a_snapshot_lands_where_the_guests_repos_link_leads(
    canary: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    tmp = canary.parent
    repos = canary / "repos"

    def change(tree: Path) -> None:
        link(tree, "var/db/repos", repos)
        # The stage has that very path too: the link resolves to the guest's copy.
        (inside(tree, repos) / "gentoo/old").mkdir(parents=True)

    snapshot = make_tarball(tmp / "snapshot.tar.xz", {"gentoo/metadata/timestamp.chk": b"new\n"})
    monkeypatch.setattr(obtain, "snapshot", lambda settings: snapshot)
    status, log, image = run_create(tmp, monkeypatch, capfd, hostile(tmp, change))
    assert status == 0, log
    with osdef.mounted(image, tmp / "check", fstype="ext4") as root:
        tree = inside(root, repos) / "gentoo"
        assert (tree / "metadata/timestamp.chk").read_bytes() == b"new\n"
        assert sorted(os.listdir(tree)) == ["metadata"]
        assert sorted(os.listdir(tree.parent)) == ["gentoo"]  # no scratch directory left


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("var/db/repos", "repos"),  # with SNAPSHOT
        ("root", "etc-dir"),  # SSH keys go to /root/.ssh
        ("etc/runlevels/default", "etc-dir"),  # enabling sshd links a runlevel service
    ],
)
def test_links_to_nothing_in_the_guest_are_one_error(
    canary: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    path: str,
    named: str,
) -> None:
    tmp = canary.parent
    snapshot = make_tarball(tmp / "snapshot.tar.xz", {"gentoo/metadata/timestamp.chk": b"new\n"})
    monkeypatch.setattr(obtain, "snapshot", lambda settings: snapshot)
    status, log, _ = run_create(
        tmp, monkeypatch, capfd, hostile(tmp, lambda tree: link(tree, path, canary / named))
    )
    error = one_error(status, log)
    assert error == (
        f"ERROR: the guest's /{path} is a symbolic link to {canary / named}, "
        "which does not exist in the guest"
    )


HOOK = """#!/bin/sh
set -e
cut -d' ' -f2 /proc/mounts > {seen}
"""


@pytest.mark.parametrize("in_stage", [True, False], ids=["resolved-in-guest", "dangling"])
def test_chroot_mounts_land_inside_the_guest(
    canary: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    in_stage: bool,
) -> None:
    tmp = canary.parent
    seen = tmp / "seen-mounts"

    def change(tree: Path) -> None:
        for name in ("proc", "dev"):
            link(tree, name, canary / name)
            if in_stage:
                inside(tree, canary / name).mkdir(parents=True)

    hooks = tmp / "conf/hooks"
    hooks.mkdir(parents=True)
    (hooks / "10-mounts").write_text(HOOK.format(seen=seen))
    (hooks / "10-mounts").chmod(0o755)
    status, log, _ = run_create(tmp, monkeypatch, capfd, hostile(tmp, change))
    if not in_stage:
        assert one_error(status, log) == (
            f"ERROR: the guest's /proc is a symbolic link to {canary / 'proc'}, "
            "which does not exist in the guest"
        )
        assert not seen.exists()
        return
    assert status == 0, log
    mounts = seen.read_text().split()
    top = next(m for m in mounts if m.startswith(str(tmp / "conf/tmp")))  # create's root mount
    assert [m for m in mounts if m.startswith(top + "/")] == [
        f"{top}{canary}/proc",
        f"{top}/sys",
        f"{top}{canary}/dev",
        f"{top}{canary}/dev/pts",
    ]


def test_snapshot_and_portage_steps_replace_links_at_their_own_names(canary: Path) -> None:
    """The steps themselves, on a bare tree: /var/db/repos/gentoo and /etc/portage are links."""
    tmp = canary.parent
    target = tmp / "target"
    (target / "var/db/repos").mkdir(parents=True)
    os.symlink(str(canary / "repos/gentoo"), target / "var/db/repos/gentoo")
    (target / "etc").mkdir()
    os.symlink(str(canary / "etc-dir"), target / "etc/portage")
    confdir = tmp / "portage"
    confdir.mkdir()
    (confdir / "make.conf").write_text('FEATURES="getbinpkg"\n')
    snapshot = make_tarball(tmp / "snap.tar.xz", {"gentoo/metadata/timestamp.chk": b"new\n"})
    job = Sources(tmp / "no-stage", snapshot)
    settings = Settings(portage_confdir=confdir)
    ctx = mounted_context(None, settings, target, job)  # type: ignore[arg-type]
    create.unpack_snapshot(ctx)
    create.copy_portage_config(ctx)
    repo = target / "var/db/repos/gentoo"
    assert not repo.is_symlink() and (repo / "metadata/timestamp.chk").read_bytes() == b"new\n"
    portage = target / "etc/portage"
    assert not portage.is_symlink() and os.listdir(portage) == ["make.conf"]
