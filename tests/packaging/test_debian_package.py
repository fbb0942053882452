"""The Debian package: source and binary built from the release tarball with
``dpkg-buildpackage -us -uc``, taken apart and checked by lintian."""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from osimage import Layout, check_image, inside, resolve
from pkgbuild import PACKAGE, REPO, missing, require

from support.install import run_step

CONF_DIR = "/etc/ganeti/instance-gentoobootstrap"


def changelog_version() -> tuple[str, str]:
    """(upstream version, Debian version) of the newest debian/changelog entry."""
    first = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    match = re.match(rf"{PACKAGE} \((([^)-]+)-[^)]+)\)", first)
    assert match, first
    return match.group(2), match.group(1)


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory, release_tarball: Path) -> Path:
    """The binary package; beside it the source package and the .changes of both."""
    for tool in ("dpkg-buildpackage", "dh"):
        require(tool)
    upstream, debian = changelog_version()
    work = tmp_path_factory.mktemp("debian")
    orig = work / f"{PACKAGE}_{upstream}.orig.tar.gz"
    shutil.copy2(release_tarball, orig)
    with tarfile.open(orig) as archive:
        # The extraction filter came with Python 3.11.4; Debian 12 has 3.11.2.
        filtered = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
        archive.extractall(work, **filtered)  # type: ignore[arg-type]
    src = work / f"{PACKAGE}-{upstream}"
    shutil.copytree(REPO / "debian", src / "debian")
    checked = subprocess.run(
        ["dpkg-checkbuilddeps"], cwd=src, capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        missing(checked.stderr.strip())
    run_step(["dpkg-buildpackage", "-us", "-uc"], src)
    package = work / f"{PACKAGE}_{debian}_all.deb"
    assert package.is_file(), sorted(p.name for p in work.iterdir())
    return package


@pytest.fixture(scope="module")
def unpacked(deb: Path) -> Path:
    root = deb.parent / "root"
    run_step(["dpkg-deb", "--extract", str(deb), str(root)], deb.parent)
    run_step(["dpkg-deb", "--control", str(deb), str(root / "DEBIAN")], deb.parent)
    return root


def control_field(root: Path, name: str) -> list[str]:
    control = (root / "DEBIAN" / "control").read_text()
    match = re.search(rf"^{name}: (.*)$", control, re.M)
    return [rel.strip() for rel in match.group(1).split(",")] if match else []


def test_deb_installs_the_os_definition_for_debians_ganeti(unpacked: Path) -> None:
    check_image(unpacked, Layout(), shebang="/usr/bin/python3")
    assert not list(unpacked.rglob("__pycache__")), "byte code is made at install (py3compile)"
    postinst = (unpacked / "DEBIAN" / "postinst").read_text()
    assert f"py3compile -p {PACKAGE} /usr/share/{PACKAGE}/python" in postinst


def test_deb_marks_every_file_under_etc_as_conffile(unpacked: Path) -> None:
    conffiles = set((unpacked / "DEBIAN" / "conffiles").read_text().split())
    etc = {"/" + str(p.relative_to(unpacked)) for p in (unpacked / "etc").rglob("*") if p.is_file()}
    assert conffiles == etc
    assert f"{CONF_DIR}/variants.list" in conffiles
    link = inside(unpacked, "/usr/share/ganeti/os/gentoobootstrap/variants.list")
    assert link.is_symlink()
    assert resolve(unpacked, link) == inside(unpacked, f"{CONF_DIR}/variants.list")


def test_deb_relations(unpacked: Path) -> None:
    """debian/control's relations (test_dependencies checks them) made it into the .deb."""
    depends = {rel.split()[0].split(":")[0] for rel in control_field(unpacked, "Depends")}
    assert {"python3", "python3-configobj", "e2fsprogs", "fdisk", "mount", "gnupg"} <= depends
    assert "ganeti" in control_field(unpacked, "Recommends")
    assert {"xfsprogs", "btrfs-progs", "dump"} <= set(control_field(unpacked, "Suggests"))


def test_deb_ships_manual_pages_and_the_cache_directory(unpacked: Path) -> None:
    man = unpacked / "usr" / "share" / "man"
    for page in (
        "man8/gentoobootstrap-try.8.gz",
        "man8/gentoobootstrap-fetch.8.gz",
        f"man7/{PACKAGE}.7.gz",
    ):
        assert (man / page).is_file(), page
    assert (unpacked / "var" / "cache" / PACKAGE).is_dir()


def test_deb_ships_examples_and_keyring_notes_as_documentation(unpacked: Path) -> None:
    """Example hooks are executable examples to copy; the hooks directory starts empty."""
    doc = unpacked / "usr" / "share" / "doc" / PACKAGE
    assert (doc / "examples" / "variants" / "default.conf").is_file()
    scripts = [p for p in doc.rglob("*") if p.is_file() and p.read_bytes()[:2] == b"#!"]
    assert {p.name for p in scripts} >= {"grub", "hosts", "ssh-keys", "try-it.sh"}
    for path in doc.rglob("*"):
        if path.is_file():
            executable = bool(path.stat().st_mode & 0o111)
            assert executable == (path in scripts), f"{path}: executable={executable}"
    assert not list(inside(unpacked, f"{CONF_DIR}/hooks").iterdir())
    assert (doc / "README.md.gz").is_file() or (doc / "README.md").is_file()
    notes = (doc / "README.Debian").read_text()
    assert "13EBBDBEDE7A12775DFDB1BABB572E0E2D182910" in notes
    assert "KEYRING" in notes


def test_lintian_pedantic_reports_nothing(deb: Path) -> None:
    """Source and binary, every tag down to pedantic and experimental: nothing left but
    the overrides in debian/, each with the reason only a real upload can fix it."""
    require("lintian")
    changes = list(deb.parent.glob("*.changes"))
    assert len(changes) == 1, changes
    result = subprocess.run(
        ["lintian", "--pedantic", "-I", "-E", "--tag-display-limit", "0", str(changes[0])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        REPO / "debian" / "source" / "lintian-overrides",
        REPO / "debian" / f"{PACKAGE}.lintian-overrides",
    ],
    ids=["source", "binary"],
)
def test_every_lintian_override_says_why(overrides: Path) -> None:
    lines = overrides.read_text().splitlines()
    for number, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert number > 0 and lines[number - 1].startswith("#"), f"{line}: no reason"


def test_debian_rules_runs_make_check_only_with_every_test_module() -> None:
    """make check imports pytest, pytest-subprocess and sh: the skip test asks for all."""
    rules = (REPO / "debian" / "rules").read_text()
    assert "import pytest, pytest_subprocess, sh'" in rules
