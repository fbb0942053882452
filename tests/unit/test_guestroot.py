"""Guest paths resolve inside the guest: no symlink leads a read or write onto the node.

Every test runs twice: with the kernel's openat2, and with the O_NOFOLLOW walk
that replaces it where openat2 is missing (forced by making openat2 fail with
ENOSYS, as an old kernel would).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gentoobootstrap.errors import GuestError
from gentoobootstrap.guest import initsystem, tree
from gentoobootstrap.guest.tree import GuestRoot
from support import canary_state
from support.guesttree import openrc_tree, systemd_tree


def _openat2_here() -> bool:
    try:
        os.close(tree._openat2(-100, "/", os.O_PATH, tree.RESOLVE_IN_ROOT))
    except OSError:
        return False
    return True


def _no_openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS), path)


@pytest.fixture(autouse=True, params=["openat2", "walk"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(tree, "_openat2_works", None)
    if request.param == "openat2" and not _openat2_here():
        pytest.skip("this kernel has no openat2 (or forbids it)")
    if request.param == "walk":
        monkeypatch.setattr(tree, "_openat2", _no_openat2)
    yield request.param
    # The back-end that was meant to answer did (None: the test resolved nothing).
    assert tree._openat2_works in (request.param == "openat2", None)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Path]:
    """A canary directory on the node that no guest operation may change."""
    canary = tmp_path / "node"
    (canary / "dir").mkdir(parents=True)
    (canary / "passwd").write_text("node's\n")
    (canary / "dir" / "kept").write_text("node's\n")
    before = canary_state(canary)
    yield canary
    assert canary_state(canary) == before


def test_absolute_and_climbing_links_stay_inside(tmp_path: Path, node: Path) -> None:
    top = tmp_path / "root"
    (top / "etc").mkdir(parents=True)
    os.symlink(str(node), top / "etc/abs")  # the node's path, absolute
    os.symlink("../../../../../../node/passwd", top / "etc/climb")
    root = GuestRoot(top)
    assert root.read_text("/etc/abs/passwd") is None  # not there inside the guest
    assert root.read_text("/etc/climb") is None
    assert not root.exists("/etc/abs") and not root.is_dir("/etc/abs")
    assert root.listdir("/etc/abs") == []
    (top / "node").mkdir()
    (top / "node/passwd").write_text("guest's\n")
    assert root.read_text("/etc/climb") == "guest's\n"
    assert root.realpath("/etc/climb") == "/node/passwd"
    assert root.path("/etc/climb") == top / "node/passwd"
    assert root.path("/etc/climb", follow=False) == top / "etc/climb"
    assert root.path("/etc/nothing/here") == top / "etc/nothing/here"
    root.write_text("/etc/climb", "replaced\n")
    assert not (top / "etc/climb").is_symlink()
    assert (top / "etc/climb").read_text() == "replaced\n"
    assert (top / "node/passwd").read_text() == "guest's\n"


def test_dot_dot_never_climbs_above_the_root(tmp_path: Path, node: Path) -> None:
    top = tmp_path / "root"
    (top / "etc").mkdir(parents=True)
    (top / "etc/hosts").write_text("guest's\n")
    os.symlink("../../../..", top / "etc/up")
    root = GuestRoot(top)
    assert root.read_text("/../../../etc/hosts") == "guest's\n"
    assert root.read_text("/etc/up/etc/hosts") == "guest's\n"
    assert root.read_text("/etc/up/node/passwd") is None
    assert root.realpath("/etc/up/../..") == "/"
    assert root.directory("/etc/up/..") == top


def test_link_loops_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.symlink("/etc/b", tmp_path / "etc/a")
    os.symlink("/etc/a", tmp_path / "etc/b")
    os.symlink("self", tmp_path / "etc/self")
    root = GuestRoot(tmp_path)
    for path in ("/etc/a", "/etc/self/x"):
        with pytest.raises(GuestError, match="too many levels of symbolic links"):
            root.read_text(path)
    with pytest.raises(GuestError, match="too many levels"):
        root.mkdir("/etc/a/b")
    root.write_text("/etc/a", "a file now\n")  # the loop's link itself is replaced
    assert root.read_text("/etc/b") == "a file now\n"


def test_dangling_links_where_directories_belong_are_one_error(tmp_path: Path, node: Path) -> None:
    top = openrc_tree(tmp_path / "root")
    (top / "root").rmdir()
    os.symlink(str(node / "home"), top / "root")  # dangling, absolute
    (top / "etc/runlevels/default/local").unlink()
    (top / "etc/runlevels/default").rmdir()
    os.symlink(str(node / "dir"), top / "etc/runlevels/default")  # the node has it, not the guest
    root = GuestRoot(top)
    with pytest.raises(GuestError, match=rf"^the guest's /root is a symbolic link to {node}/home"):
        root.write_text("/root/.ssh/authorized_keys", "key\n")
    with pytest.raises(GuestError, match=r"^the guest's /etc/runlevels/default is a symbolic"):
        initsystem.enable(root, "openrc", "sshd")
    with pytest.raises(GuestError, match=r"^cannot find directory /etc/runlevels/default in the"):
        root.directory("/etc/runlevels/default")
    assert not (top / str(node).lstrip("/")).exists()  # nor made inside the guest


def test_writes_replace_the_last_link_and_never_write_through(tmp_path: Path, node: Path) -> None:
    top = tmp_path / "root"
    (top / "etc").mkdir(parents=True)
    os.symlink(str(node / "passwd"), top / "etc/fstab")
    os.symlink(str(node / "passwd"), top / "etc/link")
    os.symlink(str(node / "passwd"), top / "etc/gone")
    os.symlink(str(node / "dir"), top / "etc/tree")
    root = GuestRoot(top)
    root.write_text("/etc/fstab", "guest fstab\n")
    assert (top / "etc/fstab").read_text() == "guest fstab\n"
    assert not (top / "etc/fstab").is_symlink()
    assert (top / "etc/fstab").stat().st_mode & 0o777 == 0o644
    root.symlink("/etc/link", "/usr/share/zoneinfo/UTC")
    assert os.readlink(top / "etc/link") == "/usr/share/zoneinfo/UTC"
    assert root.unlink("/etc/gone") and not os.path.lexists(top / "etc/gone")
    assert not root.unlink("/etc/gone")
    assert root.rmtree("/etc/tree") and not os.path.lexists(top / "etc/tree")
    assert sorted(os.listdir(top / "etc")) == ["fstab", "link"]  # no temporary left


def test_write_keeps_mode_and_owner(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    shadow = tmp_path / "etc/shadow"
    shadow.write_text("x\n")
    shadow.chmod(0o640)
    GuestRoot(tmp_path).write_text("/etc/shadow", "y\n")
    assert shadow.stat().st_mode & 0o777 == 0o640
    assert shadow.read_text() == "y\n"
    GuestRoot(tmp_path).write_text("/etc/shadow", "z\n", mode=0o600)
    assert shadow.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["shadow"]  # no temp left


def test_allocate_makes_a_full_private_file_and_writes_through_no_link(
    tmp_path: Path, node: Path
) -> None:
    top = tmp_path / "root"
    top.mkdir()
    os.symlink(str(node / "passwd"), top / "link")
    root = GuestRoot(top)
    with root.allocate("/swapfile", 1 << 20) as name:
        assert os.path.samefile(name, top / "swapfile")
    made = (top / "swapfile").stat()
    assert (made.st_mode & 0o777, made.st_size) == (0o600, 1 << 20)
    assert made.st_blocks * 512 >= made.st_size, "sparse"
    for taken in ("/swapfile", "/link"):
        with (
            pytest.raises(GuestError, match=f"cannot allocate {taken}"),
            root.allocate(taken, 1 << 20),
        ):
            pass
    with pytest.raises(RuntimeError), root.allocate("/var/swap", 4096):
        raise RuntimeError("mkswap failed")
    assert os.listdir(top / "var") == []  # a failed file is removed


def test_only_regular_files_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc/hosts.d").mkdir(parents=True)
    os.mkfifo(tmp_path / "etc/hostname")  # opening it for reading would block
    (tmp_path / "etc/big").write_bytes(b"x" * 10)
    root = GuestRoot(tmp_path)
    with pytest.raises(GuestError, match=r"^the guest's /etc/hostname is not a regular file"):
        root.read_text("/etc/hostname")
    with pytest.raises(GuestError, match="not a regular file"):
        root.read_text("/etc/hosts.d")
    monkeypatch.setattr(tree, "MAX_TEXT", 9)
    with pytest.raises(GuestError, match="too big"):
        root.read_text("/etc/big")
    with pytest.raises(GuestError, match=r"^cannot write /etc/hosts.d in the guest: Is a dir"):
        root.write_text("/etc/hosts.d", "x")
    with pytest.raises(GuestError, match=r"^cannot make directory /etc/big/x in the guest: Not"):
        root.mkdir("/etc/big/x")


def test_rmtree_follows_no_link_and_stays_on_its_filesystem(tmp_path: Path, node: Path) -> None:
    top = tmp_path / "root"
    (top / "repos/gentoo/a/b").mkdir(parents=True)
    (top / "repos/gentoo/a/b/file").write_text("x")
    os.symlink(str(node), top / "repos/gentoo/abs")
    os.symlink("../../../../node/dir", top / "repos/gentoo/a/climb")
    root = GuestRoot(top)
    assert root.rmtree("/repos/gentoo")
    assert os.listdir(top / "repos") == []
    assert not root.rmtree("/repos/gentoo")


def test_copy_in_merges_without_writing_through(tmp_path: Path, node: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "package.use").mkdir(parents=True)
    (conf / "package.use/ganeti").write_text("app-editors/vim -X\n")
    (conf / "make.conf").write_text('FEATURES="getbinpkg"\n')
    (conf / "make.conf").chmod(0o640)
    os.symlink("make.conf", conf / "make.conf.link")
    (conf / "env/deeper").mkdir(parents=True)  # new to the guest
    (conf / "env/deeper/file").write_text("new\n")
    top = tmp_path / "root"
    (top / "etc/portage/use").mkdir(parents=True)
    (top / "etc/portage/repos.conf").write_text("kept\n")
    os.symlink(str(node / "passwd"), top / "etc/portage/make.conf")
    os.symlink(str(node / "passwd"), top / "etc/portage/make.conf.link")
    os.symlink("/etc/portage/use", top / "etc/portage/package.use")  # inside the guest: followed
    GuestRoot(top).copy_in(conf, "/etc/portage")
    portage = top / "etc/portage"
    assert (portage / "make.conf").read_text() == 'FEATURES="getbinpkg"\n'
    assert (portage / "make.conf").stat().st_mode & 0o777 == 0o640
    assert (portage / "make.conf").stat().st_mtime_ns == (conf / "make.conf").stat().st_mtime_ns
    assert os.readlink(portage / "make.conf.link") == "make.conf"
    assert (portage / "use/ganeti").read_text() == "app-editors/vim -X\n"
    assert (portage / "repos.conf").read_text() == "kept\n"
    assert (portage / "env/deeper/file").read_text() == "new\n"
    # Links to nothing (or to a file) inside the guest give way to the admin's directories.
    os.symlink(str(node / "dir"), top / "etc/portage/package.env")
    os.symlink("/etc/portage/repos.conf", top / "etc/portage/package.mask")
    for name in ("package.env", "package.mask"):
        (conf / name).mkdir()
        (conf / name / "x").write_text("x\n")
    GuestRoot(top).copy_in(conf, "/etc/portage")
    for name in ("package.env", "package.mask"):
        assert not (portage / name).is_symlink()
        assert (portage / name / "x").read_text() == "x\n"
    assert (portage / "repos.conf").read_text() == "kept\n"
    (portage / "package.keywords").write_text("a file of the stage\n")
    (conf / "package.keywords").mkdir()
    with pytest.raises(GuestError, match=r"^the guest's /etc/portage/package.keywords is not a"):
        GuestRoot(top).copy_in(conf, "/etc/portage")


def test_scratch_directories_rename_and_listing(tmp_path: Path) -> None:
    (tmp_path / "var/db").mkdir(parents=True)
    os.symlink("/srv/repos", tmp_path / "var/db/repos")
    (tmp_path / "srv/repos").mkdir(parents=True)
    root = GuestRoot(tmp_path)
    scratch = root.mkdtemp("/var/db/repos", ".snapshot-")
    assert scratch.startswith("/srv/repos/.snapshot-")  # resolved inside the guest
    assert root.directory(scratch) == tmp_path / scratch.lstrip("/")
    assert (tmp_path / scratch.lstrip("/")).stat().st_mode & 0o777 == 0o700
    root.mkdir(f"{scratch}/gentoo/metadata")
    root.write_text(f"{scratch}/gentoo/metadata/x", "1")
    assert root.listdir(scratch) == ["gentoo"]
    assert root.is_dir(f"{scratch}/gentoo", follow=False)
    root.rename(f"{scratch}/gentoo", "/var/db/repos/gentoo")
    root.rmdir(scratch)
    assert root.glob("/var/db/repos", "*") == ["/var/db/repos/gentoo"]
    assert root.read_text("/srv/repos/gentoo/metadata/x") == "1"
    stamp = (1_000_000_000, 2_000_000_000)
    root.set_times("/var/db/repos/gentoo", stamp)
    found = root.stat("/srv/repos/gentoo")
    assert found is not None and (found.st_atime_ns, found.st_mtime_ns) == stamp


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


def test_a_unit_without_install_section_is_wanted_by_the_given_target(tmp_path: Path) -> None:
    s = GuestRoot(systemd_tree(tmp_path / "s"))
    (s.top / "usr/lib/systemd/system/serial-getty@.service").write_text("[Unit]\n")
    initsystem.enable(s, "systemd", "serial-getty@ttyS0.service", target="getty.target")
    link = s.top / "etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
    assert os.readlink(link) == "/usr/lib/systemd/system/serial-getty@.service"


def test_the_root_is_resolved_on_the_node_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every guest path is checked against the top's node name, taken when the root is made."""
    (tmp_path / "top" / "etc").mkdir(parents=True)
    (tmp_path / "link").symlink_to("top")
    root = GuestRoot(tmp_path / "link")
    calls: list[str] = []
    realpath = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda p: calls.append(str(p)) or realpath(p))
    assert root.realpath("/etc/../etc") == "/etc"
    root.write_text("/etc/hostname", "guest\n")
    assert root.read_text("/etc/hostname") == "guest\n"
    assert calls == []
