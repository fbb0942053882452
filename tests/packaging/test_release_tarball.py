"""The ``make dist`` tarball: one version, both install flows of the README, same result.

The README installs with ``--with-os-dir=/srv/ganeti/os`` (Ganeti built
from source) or with the default OS directory (Ganeti from a package).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
import tarfile
from pathlib import Path

import pytest
from osimage import Layout, autoconf_values, check_image, run_installed_script
from pkgbuild import (
    GIT_IDENTITY,
    PACKAGE,
    REPO,
    checkout_version,
    copy_source,
    ebuild_version,
    release_ebuild,
    require,
    tagged_source,
)

from support.install import run_step

README_FLOW = ["--prefix=/usr", "--localstatedir=/var", "--sysconfdir=/etc"]
FLOWS = {
    "srv-ganeti-os": (["--with-os-dir=/srv/ganeti/os"], Layout(os_dir="/srv/ganeti/os")),
    "default-os-dir": ([], Layout()),
}


def unpack(tarball: Path, dest: Path) -> Path:
    with tarfile.open(tarball) as archive:
        # The extraction filter came with Python 3.11.4; Debian 12 has 3.11.2.
        filtered = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
        archive.extractall(dest, **filtered)
    top = tarball.name.removesuffix(".tar.gz")
    assert (dest / top / "configure").is_file(), "the tarball ships no configure"
    return dest / top


def install(src: Path, root: Path, *configure_args: str, check: bool = False) -> None:
    run_step(["./configure", *README_FLOW, *configure_args, f"PYTHON={sys.executable}"], src)
    run_step(["make"], src)
    if check:
        run_step(["make", "check"], src)
    run_step(["make", "install", f"DESTDIR={root}"], src)


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under root with its mode and content (link target), byte code aside."""
    entries = {}
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        if path.is_symlink():
            data = str(path.readlink()).encode()
        elif path.is_file():
            data = path.read_bytes()
        else:
            data = b""
        entries[str(path.relative_to(root))] = (path.lstat().st_mode, data)
    return entries


def test_tarball_is_named_for_the_one_version(dist_tarball: Path, tmp_path: Path) -> None:
    version = checkout_version()
    assert dist_tarball.name == f"{PACKAGE}-{version}.tar.gz"
    src = unpack(dist_tarball, tmp_path)
    assert (src / ".tarball-version").read_text().strip() == version
    configure = run_step(["./configure", "--version"], src).stdout.splitlines()[0]
    assert configure == f"{PACKAGE} configure {version}"


def test_git_version_agrees_with_setuptools_scm(tmp_path: Path) -> None:
    """configure's version is pyproject's: with setuptools-scm and with its git fallback."""
    if importlib.util.find_spec("setuptools_scm") is None:
        pytest.skip("setuptools-scm is not installed")
    scm, with_scm, fallback = versions(REPO, tmp_path)
    assert with_scm == scm
    assert same_version(fallback, scm), (fallback, scm)


def versions(src: Path, tmp: Path) -> tuple[str, str, str]:
    """(setuptools-scm, git-version with setuptools-scm, git-version's git fallback) in src."""
    git_version = str(src / "build-aux" / "git-version")
    scm = run_step([sys.executable, "-m", "setuptools_scm"], src).stdout.strip().splitlines()[-1]
    with_scm = run_step([git_version], src, {"PYTHON": sys.executable}).stdout.strip()
    fallback = run_step([git_version], src, {"PYTHON": str(tmp / "no-python")}).stdout.strip()
    return scm, with_scm, fallback


def same_version(a: str, b: str) -> bool:
    """Equal, but for how many digits of the commit hash the local part carries
    (setuptools-scm 10 writes 9, older ones and git describe 7 or more)."""
    public_a, _, local_a = a.partition("+g")
    public_b, _, local_b = b.partition("+g")
    hash_a, _, rest_a = local_a.partition(".")
    hash_b, _, rest_b = local_b.partition(".")
    return (
        public_a == public_b
        and rest_a == rest_b
        and (hash_a.startswith(hash_b) or hash_b.startswith(hash_a))
    )


def test_release_tag_is_the_version_everywhere(tmp_path: Path, release_tarball: Path) -> None:
    """Release procedure: tag vX.Y.Z where ebuild/.../PN-X.Y.Z.ebuild exists, make dist."""
    if importlib.util.find_spec("setuptools_scm") is None:
        pytest.skip("setuptools-scm is not installed")
    version = ebuild_version(release_ebuild())
    src = tagged_source(tmp_path / "src", version)
    assert versions(src, tmp_path) == (version, version, version)
    # make dist at the tag names the tarball as the ebuild's SRC_URI expects (${P}.tar.gz).
    assert release_tarball.name == f"{PACKAGE}-{version}.tar.gz"

    # One commit later every tool agrees on the next development version.
    (src / "NEWS").write_text("after the release\n")
    run_step(["git", "add", "NEWS"], src)
    run_step(["git", "commit", "-q", "--no-gpg-sign", "-m", "after"], src, GIT_IDENTITY)
    scm, with_scm, fallback = versions(src, tmp_path)
    major, minor, patch = version.split(".")
    assert scm.startswith(f"{major}.{minor}.{int(patch) + 1}.dev1+g"), scm
    assert with_scm == scm
    assert same_version(fallback, scm), (fallback, scm)


@pytest.mark.parametrize("flow", FLOWS)
def test_tarball_builds_checks_and_installs(dist_tarball: Path, tmp_path: Path, flow: str) -> None:
    args, layout = FLOWS[flow]
    src = unpack(dist_tarball, tmp_path / "build")
    root = tmp_path / "root"
    install(src, root, *args, check=True)

    check_image(root, layout, shebang=sys.executable)
    assert autoconf_values(root, layout)["VERSION"] == checkout_version()
    status, output = run_installed_script(root, layout, "create")
    assert status != 0 and "ERROR: create: INSTANCE_NAME" in output, output
    assert "Traceback" not in output
    other = "/usr/share/ganeti/os" if layout.os_dir == "/srv/ganeti/os" else "/srv/ganeti/os"
    assert not (root / other.lstrip("/")).exists()


def test_tarball_installs_what_the_checkout_installs(dist_tarball: Path, tmp_path: Path) -> None:
    require("autoreconf")
    from_tarball = tmp_path / "from-tarball"
    install(unpack(dist_tarball, tmp_path / "tarball"), from_tarball)

    checkout = copy_source(tmp_path / "checkout", checkout_version())
    run_step(["./autogen.sh"], checkout)
    from_checkout = tmp_path / "from-checkout"
    install(checkout, from_checkout)

    layout = Layout()
    os_dir = check_image(from_tarball, layout, shebang=sys.executable)
    assert os_dir == check_image(from_checkout, layout, shebang=sys.executable)
    tarball_tree, checkout_tree = tree(from_tarball), tree(from_checkout)
    assert sorted(tarball_tree) == sorted(checkout_tree)
    differ = [path for path in tarball_tree if tarball_tree[path] != checkout_tree[path]]
    assert not differ, f"installed differently: {differ}"


def declared_test_modules() -> set[str]:
    """The Python packages the release ebuild declares for make check (test? BDEPEND and
    configobj), as distribution names."""
    text = release_ebuild().read_text()
    bdepend = re.search(r'^BDEPEND="(.*?)"$', text, re.S | re.M)
    assert bdepend, "no BDEPEND"
    return set(re.findall(r"dev-python/([A-Za-z0-9_-]+)\[", bdepend.group(1)))


def only(distributions: set[str], site: Path) -> Path:
    """A directory holding exactly these distributions and what they require, as links
    into this interpreter's environment."""
    from packaging.requirements import Requirement

    site.mkdir()
    todo, seen = sorted(distributions), set()
    while todo:
        name = todo.pop()
        dist = importlib.metadata.distribution(name)
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for requirement in map(Requirement, dist.requires or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
        top = {Path(f).parts[0] for f in dist.files or []} or set(
            (dist.read_text("top_level.txt") or "").split()
        )
        for name in top:
            source = Path(str(dist.locate_file(name)))
            candidates = [source, source.with_suffix(".py")]
            for found in (c for c in candidates if c.exists() and not c.name.endswith(".pth")):
                link = site / found.name
                if not link.exists() and found.parent.name != "bin":
                    link.symlink_to(found)
    return site


def test_make_check_needs_only_the_declared_test_dependencies(
    release_tarball: Path, tmp_path: Path
) -> None:
    """make check from the release tarball, with a Python that has the packages the ebuild
    declares for it (and their own requirements) and nothing else."""
    declared = declared_test_modules()
    assert {"pytest", "pytest-subprocess", "sh", "configobj"} <= declared
    site = only(declared, tmp_path / "site")
    src = unpack(release_tarball, tmp_path / "build")
    run_step(["./configure", f"PYTHON={sys.executable}"], src)
    run_step(["make"], src)
    # -S: no site-packages, so only the directory above is importable.
    pytest_argv = f"{sys.executable} -S -m pytest"
    run_step(["make", "check", f"PYTEST={pytest_argv}"], src, {"PYTHONPATH": str(site)})
