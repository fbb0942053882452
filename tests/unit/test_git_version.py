"""build-aux/git-version: configure's version is setuptools-scm's, with or without it."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import REPO

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "PATH": "/usr/bin:/bin",
}


class Checkout:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "build-aux").mkdir(parents=True)
        shutil.copy2(REPO / "build-aux" / "git-version", root / "build-aux" / "git-version")
        shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
        self.git("init", "-q")
        self.commit()

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.root, env=GIT_ENV, check=True, capture_output=True, text=True
        ).stdout.strip()

    def commit(self) -> None:
        (self.root / "counter").write_text(str(time.monotonic_ns()))
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "change")

    def version(self, python: str = "/bin/false") -> str:
        # PYTHON=/bin/false: no setuptools-scm, so the git describe scheme answers.
        return subprocess.run(
            [self.root / "build-aux" / "git-version"],
            env={**GIT_ENV, "PYTHON": python},
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    @property
    def hash(self) -> str:
        return self.git("rev-parse", "--short", "HEAD")


@pytest.fixture
def checkout(tmp_path: Path) -> Checkout:
    return Checkout(tmp_path / "repo")


def test_no_tag(checkout: Checkout) -> None:
    checkout.commit()
    assert checkout.version() == f"0.0.1.dev2+g{checkout.hash}"


def test_on_a_tag_and_after_it(checkout: Checkout) -> None:
    checkout.git("tag", "v1.2.3")
    assert checkout.version() == "1.2.3"
    checkout.commit()
    checkout.commit()
    assert checkout.version() == f"1.2.4.dev2+g{checkout.hash}"


def test_uncommitted_changes_add_the_date(checkout: Checkout) -> None:
    checkout.git("tag", "2.0")
    (checkout.root / "counter").write_text("changed")
    date = time.strftime("%Y%m%d", time.gmtime())
    assert checkout.version() == f"2.1.dev0+g{checkout.hash}.d{date}"


def test_a_dist_tarball_carries_its_version(tmp_path: Path) -> None:
    (tmp_path / "build-aux").mkdir()
    shutil.copy2(REPO / "build-aux" / "git-version", tmp_path / "build-aux" / "git-version")
    assert (
        subprocess.run(
            [tmp_path / "build-aux" / "git-version"], capture_output=True, text=True, check=True
        ).stdout
        == "0.0.0\n"
    )
    (tmp_path / ".tarball-version").write_text("1.4.0\n")
    assert (
        subprocess.run(
            [tmp_path / "build-aux" / "git-version"], capture_output=True, text=True, check=True
        ).stdout
        == "1.4.0\n"
    )


@pytest.mark.skipif(
    importlib.util.find_spec("setuptools_scm") is None, reason="needs setuptools-scm"
)
def test_setuptools_scm_answers_when_present(checkout: Checkout) -> None:
    checkout.git("tag", "v3.1")
    checkout.commit()
    version = checkout.version(python=sys.executable)
    # setuptools-scm's own answer (its hash length varies between its versions).
    assert re.fullmatch(r"3\.2\.dev1\+g[0-9a-f]{7,}", version), version
    assert version.startswith(checkout.version().split("+")[0])
