"""The Debian package: built with ``dpkg-buildpackage -us -uc -b`` and taken apart."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from osimage import Layout, check_image, inside, resolve
from pkgbuild import PACKAGE, REPO, copy_source, missing, require, run

CONF_DIR = "/etc/ganeti/instance-gentoobootstrap"


def changelog_version() -> tuple[str, str]:
    """(upstream version, Debian version) of the newest debian/changelog entry."""
    first = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    match = re.match(rf"{PACKAGE} \((([^)-]+)-[^)]+)\)", first)
    assert match, first
    return match.group(2), match.group(1)


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("dpkg-buildpackage", "dh", "autoreconf"):
        require(tool)
    upstream, debian = changelog_version()
    work = tmp_path_factory.mktemp("debian")
    src = copy_source(work / f"{PACKAGE}-{upstream}", upstream)
    checked = subprocess.run(
        ["dpkg-checkbuilddeps"], cwd=src, capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        missing(checked.stderr.strip())
    run(["dpkg-buildpackage", "-us", "-uc", "-b"], src)
    package = work / f"{PACKAGE}_{debian}_all.deb"
    assert package.is_file(), sorted(p.name for p in work.iterdir())
    return package


@pytest.fixture(scope="module")
def unpacked(deb: Path) -> Path:
    root = deb.parent / "root"
    run(["dpkg-deb", "--extract", str(deb), str(root)], deb.parent)
    run(["dpkg-deb", "--control", str(deb), str(root / "DEBIAN")], deb.parent)
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
    depends = control_field(unpacked, "Depends")
    for package in (
        "python3-configobj",
        "e2fsprogs",
        "fdisk",
        "mount",
        "xz-utils",
        "zstd",
        "gnupg",
        "gpgv",
    ):
        assert package in depends
    assert any(
        rel.startswith("python3") for rel in depends if rel.split()[0] != "python3-configobj"
    )
    assert "ganeti" in control_field(unpacked, "Recommends")
    assert {"xfsprogs", "btrfs-progs"} <= set(control_field(unpacked, "Suggests"))


def test_deb_ships_examples_and_keyring_notes_as_documentation(unpacked: Path) -> None:
    doc = unpacked / "usr" / "share" / "doc" / PACKAGE
    assert (doc / "examples" / "variants" / "default.conf").is_file()
    executable = [p for p in doc.rglob("*") if p.is_file() and p.stat().st_mode & 0o111]
    assert not executable, f"executable documentation: {executable}"
    assert (doc / "README.md.gz").is_file() or (doc / "README.md").is_file()
    notes = (doc / "README.Debian").read_text()
    assert "13EBBDBEDE7A12775DFDB1BABB572E0E2D182910" in notes
    assert "KEYRING" in notes


def test_lintian_finds_no_errors(deb: Path) -> None:
    require("lintian")
    result = subprocess.run(
        ["lintian", "--no-tag-display-limit", str(deb)],
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert not errors, result.stdout
