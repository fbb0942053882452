"""Guest paths resolve inside the guest: no symlink leads a read or write onto the node."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gentoobootstrap import initsystem
from gentoobootstrap.errors import GuestError
from gentoobootstrap.guestroot import GuestRoot
from support.guesttree import openrc_tree, systemd_tree


def test_absolute_and_climbing_links_stay_inside(tmp_path: Path) -> None:
    top, outside = tmp_path / "root", tmp_path / "node"
    (top / "etc").mkdir(parents=True)
    outside.mkdir()
    (outside / "passwd").write_text("node's\n")
    os.symlink(str(outside), top / "etc/abs")  # the node's path, absolute
    os.symlink("../../../../../../node/passwd", top / "etc/climb")
    root = GuestRoot(top)
    assert root.path("/etc/abs/passwd") == top / str(outside).lstrip("/") / "passwd"
    assert root.path("/etc/climb") == top / "node/passwd"
    root.write_text("/etc/climb", "guest's\n")
    assert (outside / "passwd").read_text() == "node's\n"
    assert not (top / "etc/climb").is_symlink()
    assert (top / "etc/climb").read_text() == "guest's\n"


def test_link_loops_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.symlink("/etc/b", tmp_path / "etc/a")
    os.symlink("/etc/a", tmp_path / "etc/b")
    with pytest.raises(GuestError, match="too many levels"):
        GuestRoot(tmp_path).read_text("/etc/a")


def test_write_keeps_mode_and_owner(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    shadow = tmp_path / "etc/shadow"
    shadow.write_text("x\n")
    shadow.chmod(0o640)
    GuestRoot(tmp_path).write_text("/etc/shadow", "y\n")
    assert shadow.stat().st_mode & 0o777 == 0o640
    assert shadow.read_text() == "y\n"
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["shadow"]  # no temp left


def test_detect(tmp_path: Path) -> None:
    assert initsystem.detect(GuestRoot(openrc_tree(tmp_path / "o"))) == "openrc"
    assert initsystem.detect(GuestRoot(systemd_tree(tmp_path / "s"))) == "systemd"


def test_enable_openrc_and_systemd(tmp_path: Path) -> None:
    o = GuestRoot(openrc_tree(tmp_path / "o"))
    initsystem.enable(o, "openrc", "sshd")
    assert os.readlink(o.top / "etc/runlevels/default/sshd") == "/etc/init.d/sshd"
    with pytest.raises(GuestError, match=r"no OpenRC service nope \(/etc/init.d/nope\)"):
        initsystem.enable(o, "openrc", "nope")
    s = GuestRoot(systemd_tree(tmp_path / "s"))
    initsystem.enable(s, "systemd", "systemd-networkd")
    etc = s.top / "etc/systemd/system"
    assert {str(p.relative_to(etc)): os.readlink(p) for p in etc.rglob("*") if p.is_symlink()} == {
        "multi-user.target.wants/systemd-networkd.service":
            "/usr/lib/systemd/system/systemd-networkd.service",
        "dbus-org.freedesktop.network1.service": "/usr/lib/systemd/system/systemd-networkd.service",
        "sockets.target.wants/systemd-networkd.socket":
            "/usr/lib/systemd/system/systemd-networkd.socket",
    }  # fmt: skip
    assert initsystem.has_service(s, "systemd", "sshd")
    assert not initsystem.has_service(s, "systemd", "nope")


def test_a_unit_without_install_section_is_wanted_by_the_given_target(tmp_path: Path) -> None:
    s = GuestRoot(systemd_tree(tmp_path / "s"))
    (s.top / "usr/lib/systemd/system/serial-getty@.service").write_text("[Unit]\n")
    initsystem.enable(s, "systemd", "serial-getty@ttyS0.service", target="getty.target")
    link = s.top / "etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
    assert os.readlink(link) == "/usr/lib/systemd/system/serial-getty@.service"
