"""Helpers for the packaging tests: source copies and ``make dist`` tarballs.

Every build happens in a copy of the checkout under a temporary directory, so
the tests never leave configure output or tarballs in the working tree.  The
copy carries the checkout's version in ``.tarball-version`` (the same file
``make dist`` writes), because it has no ``.git`` of its own.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from support.install import copy_checkout, run_step

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "ganeti-instance-gentoobootstrap"
EBUILD_DIR = REPO / "ebuild" / "app-emulation" / PACKAGE


def missing(message: str) -> NoReturn:
    """Something the test needs is not installed: skip — except in CI, which must have it."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must install it)")
    pytest.skip(message)


def require(tool: str) -> str:
    """The tool's path, or the test is skipped (failed in CI)."""
    path = shutil.which(tool)
    if path is None:
        missing(f"{tool} is not installed")
    return path


def checkout_version() -> str:
    """The version configure gets in this checkout (setuptools-scm, via build-aux/git-version)."""
    result = run_step([str(REPO / "build-aux" / "git-version")], REPO, {"PYTHON": sys.executable})
    return result.stdout.strip().splitlines()[-1]


def copy_source(dest: Path, version: str | None = None) -> Path:
    """:func:`support.install.copy_checkout` of this checkout."""
    return copy_checkout(REPO, dest, version)


GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "release test",
    "GIT_AUTHOR_EMAIL": "release@test.invalid",
    "GIT_COMMITTER_NAME": "release test",
    "GIT_COMMITTER_EMAIL": "release@test.invalid",
}


def tagged_source(dest: Path, version: str) -> Path:
    """A copy of the checkout committed to a fresh repository and tagged ``v{version}``:
    the first step of the release procedure."""
    require("git")
    src = copy_source(dest)
    for argv in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "--no-gpg-sign", "-m", f"release {version}"],
        ["git", "tag", "-a", "--no-sign", "-m", f"release {version}", f"v{version}"],
    ):
        run_step(argv, src, GIT_IDENTITY)
    return src


def make_dist(src: Path, version: str) -> Path:
    """``autogen.sh && configure && make dist`` in ``src``; the tarball, named for ``version``."""
    for tool in ("autoreconf", "make"):
        require(tool)
    env = {"PYTHON": sys.executable}  # autogen.sh asks this Python's setuptools-scm
    run_step(["./autogen.sh"], src, env)
    run_step(["./configure", f"PYTHON={sys.executable}"], src)
    run_step(["make", "dist"], src)
    tarball = src / f"{PACKAGE}-{version}.tar.gz"
    assert tarball.is_file(), f"make dist made {sorted(p.name for p in src.glob('*.tar.*'))}"
    return tarball


def gentoo_tree() -> Path:
    """The shared subset of Gentoo's ebuild repository: ``shared/gentoo-tree`` beside the
    clone (CI puts ``shared/`` next to it) or beside one of its parent directories."""
    for parent in REPO.parents:
        tree = parent / "shared" / "gentoo-tree"
        if (tree / "profiles" / "repo_name").is_file():
            return tree
    missing(f"no shared/gentoo-tree beside {REPO} or a parent directory")


#: ::gentoo packages the shared subset lacks (see the README there).
GENTOO_EXTRA = Path(__file__).resolve().parent / "gentoo-extra"


def gentoo_package_exists(atom: str) -> bool:
    """Whether ``category/name`` is a package of ::gentoo (the subset or its additions)."""
    return any((base / atom).is_dir() for base in (gentoo_tree(), GENTOO_EXTRA))


def release_ebuild() -> Path:
    """The release ebuild (there is exactly one beside the live one)."""
    ebuilds = [p for p in EBUILD_DIR.glob("*.ebuild") if not p.name.endswith("-9999.ebuild")]
    assert len(ebuilds) == 1, f"expected one release ebuild, found {ebuilds}"
    return ebuilds[0]


def ebuild_version(ebuild: Path) -> str:
    return ebuild.name.removeprefix(f"{PACKAGE}-").removesuffix(".ebuild")
