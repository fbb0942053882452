"""The Gentoo ebuilds: pkgcheck against an offline stub repository, and their phases run.

Offline there is no ::gentoo tree, so ``stubrepo/`` stands in for it: the
profiles, the eclasses our ebuilds inherit (same metadata, no build logic) and
a stub for every package we depend on.  pkgcheck then checks everything it
checks in ::gentoo except what needs the real eclasses' code or the network
(see ``ebuild/README.md``).  What the phases do is checked by
``ebuild-phases.sh``, which runs them against the real ``make dist`` tarball.
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
from osimage import SCRIPTS, Layout, check_image, inside, resolve, run_installed_script
from pkgbuild import (
    EBUILD_DIR,
    PACKAGE,
    REPO,
    ebuild_version,
    missing,
    release_ebuild,
    require,
    run,
)

HERE = Path(__file__).parent
HARNESS = HERE / "ebuild-phases.sh"
LIVE = EBUILD_DIR / f"{PACKAGE}-9999.ebuild"
CATPKG = f"app-emulation/{PACKAGE}"
CONF_DIR = "/etc/ganeti/instance-gentoobootstrap"


def pkgcheck_argv() -> list[str]:
    """pkgcheck from this interpreter's environment (it is a PyPI package)."""
    try:
        import pkgcheck  # noqa: F401
    except ImportError:
        missing("pkgcheck is not installed (pip install pkgcheck)")
    return [sys.executable, "-m", "pkgcheck"]


def stub_repository(tmp: Path, tarball: Path) -> Path:
    """The stub repository with our package dir in it and a Manifest for the tarball."""
    repo = tmp / "repo"
    shutil.copytree(HERE / "stubrepo", repo)
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
    repo = stub_repository(tmp_path, release_tarball)
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
        (
            lambda s: s.replace("inherit optfeature python-single-r1", "inherit python-single-r1"),
            "MissingInherits",
        ),
        (
            lambda s: s.replace("python3_{11..14}", "python3_{11..13}"),
            "PythonCompatUpdate",
        ),
    ],
    ids=[
        "no-python-deps",
        "no-required-use",
        "unknown-dependency",
        "missing-inherit",
        "old-compat",
    ],
)
def test_pkgcheck_sees_broken_ebuilds(
    tmp_path: Path, release_tarball: Path, edit: object, finding: str
) -> None:
    """The stubs are good enough for pkgcheck to catch real mistakes."""
    repo = stub_repository(tmp_path, release_tarball)
    ebuild = repo / CATPKG / release_ebuild().name
    text = ebuild.read_text()
    broken = edit(text)  # type: ignore[operator]
    assert broken != text, "the edit no longer applies to the ebuild"
    ebuild.write_text(broken)
    findings = pkgcheck_scan(repo, tmp_path)
    assert any(line.startswith(f"{finding}: ") for line in findings), findings


def run_phases(ebuild: Path, source: Path, work: Path, use: str = "") -> Path:
    require("bash")
    # python-single-r1 would pick /usr/bin/python3.X; any python3.X with
    # configobj (and pytest for USE=test) does here.
    python = Path(sys.executable).with_name(f"python{sys.version_info[0]}.{sys.version_info[1]}")
    if not python.exists():
        python = Path(sys.executable)
    run(
        ["bash", str(HARNESS), str(ebuild), str(source), str(work)],
        work.parent,
        {"PYTHON": str(python), "USE": use},
    )
    return work / "image"


@pytest.fixture(scope="module")
def release_image(tmp_path_factory: pytest.TempPathFactory, release_tarball: Path) -> Path:
    """The release ebuild's image, with USE=test (its src_test runs make check)."""
    work = tmp_path_factory.mktemp("ebuild") / "release"
    return run_phases(release_ebuild(), release_tarball, work, use="test")


def epython() -> str:
    return f"python{sys.version_info[0]}.{sys.version_info[1]}"


def test_release_ebuild_installs_the_os_definition(release_image: Path) -> None:
    layout = Layout()
    check_image(release_image, layout, shebang=f"/usr/bin/{epython()}")

    # The scripts find their library (here: the image's, through PYTHONPATH).
    status, output = run_installed_script(release_image, layout, "create")
    assert status != 0 and "ERROR: create: INSTANCE_NAME" in output, output
    assert "Traceback" not in output

    sbin = inside(release_image, "/usr/sbin")
    for script in sbin.iterdir():
        assert script.read_text().startswith(f"#!/usr/bin/{epython()}\n"), script

    # Byte code for every optimisation level, compiled for the image's paths.
    lib = inside(release_image, layout.pylibdir) / "gentoobootstrap"
    for module in lib.glob("*.py"):
        tag = sys.implementation.cache_tag
        for suffix in (".pyc", ".opt-1.pyc", ".opt-2.pyc"):
            assert (lib / "__pycache__" / f"{module.stem}.{tag}{suffix}").is_file()


def test_release_ebuild_keeps_admin_files_under_etc(release_image: Path) -> None:
    """Everything an admin edits is under /etc, which CONFIG_PROTECT covers."""
    link = inside(release_image, "/usr/share/ganeti/os/gentoobootstrap/variants.list")
    assert link.is_symlink(), "variants.list in the OS directory would be overwritten on upgrade"
    assert resolve(release_image, link) == inside(release_image, f"{CONF_DIR}/variants.list")
    assert not os.path.isabs(os.readlink(link)), "dosym -r makes a relative link"
    keep = inside(release_image, f"{CONF_DIR}/hooks")
    assert any(p.name.startswith(".keep") for p in keep.iterdir()), "hooks dir needs keepdir"
    assert not inside(release_image, "/var/lib").exists(), "econf's /var/lib leaked in"


def test_release_ebuild_installs_examples_as_documentation(
    release_image: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    version = ebuild_version(release_ebuild())
    doc = inside(release_image, f"/usr/share/doc/{PACKAGE}-{version}")
    examples = doc / "examples"
    assert (examples / "variants" / "default.conf").is_file()
    executable = [p for p in doc.rglob("*") if p.is_file() and p.stat().st_mode & 0o111]
    assert not executable, f"executable documentation: {executable}"
    assert (doc / "README.md").is_file()
    work = release_image.parent
    skipped = (work / "docompress-skip").read_text().split()
    assert f"/usr/share/doc/{PACKAGE}-{version}/examples" in skipped


def test_release_ebuild_tells_how_to_add_variants_and_where_the_keyring_is(
    release_image: Path,
) -> None:
    elog = (release_image.parent / "elog").read_text()
    assert f"{CONF_DIR}/variants.list" in elog
    assert f"{CONF_DIR}/variants/NAME.conf" in elog
    assert "gentoobootstrap+NAME" in elog
    assert "/usr/share/openpgp-keys/gentoo-release.asc" in elog
    for optional in ("sys-fs/xfsprogs", "sys-fs/btrfs-progs", "dev-util/catalyst"):
        assert optional in elog


def test_live_ebuild_installs_the_same_os_definition(tmp_path: Path, release_image: Path) -> None:
    """The live ebuild (git clone + eautoreconf) of HEAD installs what the release one does."""
    require("git")
    require("autoreconf")
    image = run_phases(LIVE, REPO, tmp_path / "live")
    layout = Layout()
    live = check_image(image, layout, shebang=f"/usr/bin/{epython()}")
    release = check_image(release_image, layout, shebang=f"/usr/bin/{epython()}")
    assert live == release
    assert set(SCRIPTS) <= set(live)


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

    tags = run(["git", "tag", "--list", "v[0-9]*"], REPO).stdout.split()
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
    at_head = run(["git", "tag", "--points-at", "HEAD", "--list", "v[0-9]*"], REPO).stdout.split()
    for tag in at_head:
        assert tag == f"v{version}", f"HEAD is tagged {tag} but the release ebuild is {version}"
