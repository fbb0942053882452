"""The Gentoo ebuilds, checked by pkgcheck against Gentoo's own tree.

The package directory goes into a copy of ``shared/gentoo-tree`` (a subset of
::gentoo: the real eclasses, every profile, and the packages we depend on; see
``pkgbuild.gentoo_tree``) with a Manifest for the release tarball made here, and
pkgcheck scans it as it scans ::gentoo.  A finding against that tree is a finding
against Gentoo.  ``gentoo-extra/`` adds the two ::gentoo packages the subset lacks.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pkgbuild import (
    EBUILD_DIR,
    GENTOO_EXTRA,
    PACKAGE,
    REPO,
    ebuild_version,
    gentoo_tree,
    missing,
    release_ebuild,
)

from support.install import run_step

LIVE = EBUILD_DIR / f"{PACKAGE}-9999.ebuild"
CATPKG = f"app-emulation/{PACKAGE}"


def pkgcheck_argv() -> list[str]:
    """pkgcheck from this interpreter's environment (it is a PyPI package)."""
    try:
        import pkgcheck  # noqa: F401
    except ImportError:
        missing("pkgcheck is not installed (pip install pkgcheck)")
    return [sys.executable, "-m", "pkgcheck"]


def gentoo_repository(tmp: Path, tarball: Path) -> Path:
    """A copy of the Gentoo tree with our package in it and a Manifest for the tarball."""
    repo = tmp / "repo"
    shutil.copytree(gentoo_tree(), repo, symlinks=True)
    for package in GENTOO_EXTRA.glob("*/*"):
        shutil.copytree(package, repo / package.relative_to(GENTOO_EXTRA))
    pkgdir = repo / CATPKG
    shutil.copytree(EBUILD_DIR, pkgdir)
    data = tarball.read_bytes()
    (pkgdir / "Manifest").write_text(
        f"DIST {tarball.name} {len(data)}"
        f" BLAKE2B {hashlib.blake2b(data).hexdigest()}"
        f" SHA512 {hashlib.sha512(data).hexdigest()}\n"
    )
    return repo


def pkgcheck_scan(repo: Path, tmp: Path) -> list[str]:
    """pkgcheck's findings for our package, one ``Keyword: version: text`` line each."""
    result = subprocess.run(
        [
            *pkgcheck_argv(),
            "scan",
            "--color=n",
            f"--cache-dir={tmp / 'cache'}",
            "-R",
            "FormatReporter",
            "--format",
            "{name}: {version}: {desc}",
            # A new package starts in ~arch.
            "--keywords=-UnstableOnly",
            "-r",
            str(repo),
            CATPKG,
        ],
        cwd=repo,
        env={**os.environ, "HOME": str(tmp), "XDG_CACHE_HOME": str(tmp / "cache")},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"pkgcheck failed:\n{result.stdout}{result.stderr}"
    return result.stdout.splitlines()


def test_pkgcheck_reports_nothing(tmp_path: Path, release_tarball: Path) -> None:
    """Both ebuilds, every profile of every arch: nothing but UnstableOnly (filtered)."""
    repo = gentoo_repository(tmp_path, release_tarball)
    assert pkgcheck_scan(repo, tmp_path) == []


@pytest.mark.parametrize(
    ("edit", "finding"),
    [
        (
            lambda s: s.replace(
                "\t${PYTHON_DEPS}\n\t$(python_gen_cond_dep", "\t$(python_gen_cond_dep", 1
            ),
            "PythonMissingDeps",
        ),
        (
            lambda s: s.replace('REQUIRED_USE="${PYTHON_REQUIRED_USE}"\n', ""),
            "PythonMissingRequiredUse",
        ),
        (lambda s: s.replace("sys-fs/e2fsprogs", "sys-fs/e2fsprogz"), "NonexistentDeps"),
        (lambda s: s.replace("\tsys-apps/util-linux\n", "\tsys-apps/psmisc\n"), "NonexistentDeps"),
        (
            lambda s: s.replace("inherit optfeature python-single-r1", "inherit python-single-r1"),
            "MissingInherits",
        ),
        (
            lambda s: s.replace("python3_{12..14}", "python3_{12..13}"),
            "PythonCompatUpdate",
        ),
    ],
    ids=[
        "no-python-deps",
        "no-required-use",
        "unknown-dependency",
        "psmisc-in-the-wrong-category",
        "missing-inherit",
        "old-compat",
    ],
)
def test_pkgcheck_sees_broken_ebuilds(
    tmp_path: Path, release_tarball: Path, edit: object, finding: str
) -> None:
    """pkgcheck sees real mistakes in this set-up (a clean scan means something)."""
    repo = gentoo_repository(tmp_path, release_tarball)
    ebuild = repo / CATPKG / release_ebuild().name
    text = ebuild.read_text()
    broken = edit(text)  # type: ignore[operator]
    assert broken != text, "the edit no longer applies to the ebuild"
    ebuild.write_text(broken)
    findings = pkgcheck_scan(repo, tmp_path)
    assert any(line.startswith(f"{finding}: ") for line in findings), findings


def python_impls(ebuild: Path) -> tuple[list[str], list[str]]:
    """The ebuild's PYTHON_COMPAT and the targets python-utils-r1 supports today."""
    eclass = gentoo_tree() / "eclass" / "python-utils-r1.eclass"
    script = (
        'source <(sed -n "/^PYTHON_COMPAT=/p" "$1")\n'
        'source <(sed -n "/^_PYTHON_ALL_IMPLS=(/,/^)/p" "$2")\n'
        'echo "${PYTHON_COMPAT[*]}"; echo "${_PYTHON_ALL_IMPLS[*]}"\n'
    )
    result = run_step(["bash", "-c", script, "bash", str(ebuild), str(eclass)], REPO)
    compat, supported = result.stdout.splitlines()
    return compat.split(), supported.split()


@pytest.mark.parametrize("ebuild", [release_ebuild(), LIVE], ids=["release", "live"])
def test_python_compat_names_only_supported_targets(ebuild: Path) -> None:
    compat, supported = python_impls(ebuild)
    assert compat, "empty PYTHON_COMPAT"
    retired = [impl for impl in compat if impl not in supported]
    assert not retired, f"retired in python-utils-r1.eclass: {retired} (supported: {supported})"


def test_ebuilds_keep_the_cache_directory() -> None:
    """The stage cache is configure's $localstatedir/cache/PN; Portage drops empty dirs."""
    for ebuild in (release_ebuild(), LIVE):
        assert re.search(r"^\tkeepdir .*/var/cache/\$\{PN\}", ebuild.read_text(), re.M), ebuild


def test_live_ebuild_differs_from_the_release_one_only_where_it_must() -> None:
    """Keep the two ebuilds in step: the live one is the release one plus git and autotools."""
    release = release_ebuild().read_text()
    expected = (
        release.replace("inherit optfeature", "inherit autotools git-r3 optfeature")
        .replace(
            re.search(r'SRC_URI="[^"]*"\n', release).group(0),  # type: ignore[union-attr]
            'EGIT_REPO_URI="https://github.com/zorry/ganeti-gentoobootstrap.git"\n',
        )
        .replace('KEYWORDS="~amd64 ~arm64"\n', "")
        .replace(
            "src_configure() {",
            "src_prepare() {\n\tdefault\n"
            "\t# A git checkout has no configure yet (the release tarball ships one).\n"
            "\teautoreconf\n}\n\nsrc_configure() {",
        )
    )
    assert LIVE.read_text() == expected


def test_release_ebuild_version_is_the_release_version() -> None:
    """One version: the release tag, the ebuild's ${PV} and the Debian changelog agree."""
    version = ebuild_version(release_ebuild())
    changelog = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    debian = re.match(rf"{PACKAGE} \(([^)-]+)-[^)]+\)", changelog)
    assert debian, changelog
    assert debian.group(1) == version, "debian/changelog and the release ebuild disagree"

    tags = run_step(["git", "tag", "--list", "v[0-9]*"], REPO).stdout.split()
    released = sorted(
        (
            tuple(int(n) for n in t[1:].split("."))
            for t in tags
            if re.fullmatch(r"v\d+\.\d+\.\d+", t)
        ),
    )
    ours = tuple(int(n) for n in version.split("."))
    if released:
        assert ours >= released[-1], f"ebuild {version} is older than tag v{released[-1]}"
    at_head = run_step(
        ["git", "tag", "--points-at", "HEAD", "--list", "v[0-9]*"], REPO
    ).stdout.split()
    for tag in at_head:
        assert tag == f"v{version}", f"HEAD is tagged {tag} but the release ebuild is {version}"
