"""Every package we name exists, and the packages depend on exactly what the code runs.

The tools are every literal program the library runs (the first word of its argv
lists, and the names it gives ``runner.find_tool/have_tool``);
``gentoobootstrap.runner.PACKAGES`` must name each of them, and only them, with its
package.  From that one map the tests derive what the ebuilds and ``debian/control``
must declare.  Gentoo atoms are checked against the shared Gentoo tree, Debian names
against ``apt-cache`` (the package lists of the machine's apt sources).
"""

from __future__ import annotations

import ast
import functools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pkgbuild import EBUILD_DIR, REPO, gentoo_package_exists, gentoo_tree, missing, release_ebuild

from gentoobootstrap import runner
from gentoobootstrap.disk import filesystems
from gentoobootstrap.stages import unpack
from support import LIBRARY

#: Where Ganeti's node daemon finds programs (the tools are installed in CI).
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
LIVE_EBUILD = EBUILD_DIR / f"{EBUILD_DIR.name}-9999.ebuild"
#: Tried first when installed (parallel decompressors), never required.
PREFERRED_ALTERNATIVES = {"lbzip2", "pbzip2", "pigz"}
#: Needed only for some settings: optfeature (Gentoo), Suggests (Debian).
OPTIONAL_TOOLS = {
    "mkfs.xfs",
    "xfs_admin",
    "xfs_db",
    "xfs_growfs",
    "mkfs.btrfs",
    "mkfs.vfat",
    "restore",
    "catalyst",
}
#: Runtime dependencies that are no program: the interpreter, its module, the keys.
GENTOO_NON_TOOLS = {
    "dev-lang/python",
    "dev-python/configobj",
    "sec-keys/openpgp-keys-gentoo-release",
}
DEBIAN_NON_TOOLS = {"python3-configobj"}
#: Build-Depends that are virtual: name -> the package that provides it.
DEBHELPER_VIRTUAL = {"debhelper-compat": "debhelper", "dh-sequence-python3": "dh-python"}
#: What the README's set-up command installs besides: the build and the interpreter.
README_BUILD_TOOLS = {"autoconf", "automake", "make", "python3"}


def tools_run_by_the_library() -> set[str]:
    """Programs the library runs: the first word of every argv list literal that is a
    program on the node (``["tar", ...]``), every command of the filesystems' and the
    compressions' tables, and every name given to find_tool/have_tool."""
    tools: set[str] = set()
    for module in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if isinstance(node, ast.List) and node.elts:
                first = node.elts[0]
                if (
                    isinstance(first, ast.Constant)
                    and isinstance(first.value, str)
                    and shutil.which(first.value, path=SYSTEM_PATH)
                ):
                    tools.add(first.value)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("find_tool", "have_tool")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                tools.add(node.args[0].value)
    for fs in filesystems.FILESYSTEMS.values():
        space_map = fs.space_map.argv if fs.space_map else ()
        commands = (fs.mkfs, space_map, fs.grow, fs.new_uuid, fs.seal)
        tools.update(command[0] for command in commands if command)
    for compression in unpack.COMPRESSIONS.values():
        tools.update(argv[0] for argv in compression.decompressors)
    return tools - PREFERRED_ALTERNATIVES


def alternatives(package: str) -> list[str]:
    return package.split(" or ")


def debian_package(tool: str) -> str | None:
    """The tool's Debian package per runner.PACKAGES (None: Gentoo only)."""
    first = alternatives(runner.PACKAGES[tool])[0]
    return None if "/" in first else first


def gentoo_atom(tool: str) -> str:
    """The tool's Gentoo package: the atom runner.PACKAGES gives, else the one package
    of the tree with the Debian name."""
    names = alternatives(runner.PACKAGES[tool])
    atoms = [name for name in names if "/" in name]
    if atoms:
        return atoms[0]
    found = [
        p
        for p in gentoo_tree().glob(f"*/{names[0]}")
        if p.is_dir() and p.parent.name not in ("app-alternatives", "virtual")
    ]
    assert len(found) == 1, f"{tool}: {names[0]} is {found} in the Gentoo tree; name the atom"
    return f"{found[0].parent.name}/{names[0]}"


def ebuild_dependencies(ebuild: Path) -> dict[str, set[str]]:
    """The atoms of RDEPEND, BDEPEND and those named by optfeature (no versions or USE)."""
    text = ebuild.read_text()
    atom = r"(?<![\w/$-])[a-z0-9-]+/[A-Za-z0-9_+-]+?(?=-\d|\[|:|\s|$)"
    deps = {}
    for var in ("RDEPEND", "BDEPEND"):
        match = re.search(rf'^{var}="(.*?)"$', text, re.S | re.M)
        assert match, f"{ebuild.name}: no {var}"
        deps[var] = set(re.findall(atom, match.group(1)))
    deps["optfeature"] = set(re.findall(rf"^\toptfeature \"[^\"]+\" ({atom})", text, re.M))
    return deps


def debian_relations() -> dict[str, set[str]]:
    """The relation fields of debian/control, package names only."""
    fields: dict[str, set[str]] = {}
    control = (REPO / "debian" / "control").read_text()
    for name in ("Build-Depends", "Depends", "Recommends", "Suggests", "Enhances"):
        match = re.search(rf"^{name}:(.*?)(?=^\S|\Z)", control, re.S | re.M)
        values = match.group(1) if match else ""
        values = "\n".join(line for line in values.splitlines() if not line.startswith("#"))
        fields[name] = {
            alt.split()[0].split(":")[0]
            for rel in values.split(",")
            for alt in rel.split("|")
            if alt.strip() and not alt.strip().startswith("$")
        }
    return fields


def readme_requirements() -> tuple[set[str], set[str]]:
    """The Debian packages the README's apt-get lines install and its Gentoo atoms."""
    readme = (REPO / "README.md").read_text()
    debian: set[str] = set()
    for line in re.findall(r"apt-get install ([^&\n]*)", readme):
        debian.update(word for word in line.split() if not word.startswith("-"))
    section = readme.split("## Requirements", 1)[1].split("\n## ", 1)[0]
    gentoo = set(re.findall(r"`([a-z0-9-]+/[A-Za-z0-9_+-]+)`", section))
    return debian, gentoo


@functools.cache
def debian_packages(names: frozenset[str]) -> dict[str, str]:
    """``apt-cache show`` of each package Debian has, by name (one apt-cache run)."""
    apt_cache = shutil.which("apt-cache")
    if apt_cache is None:
        missing("apt-cache is not installed (not a Debian machine)")
    if not list(Path("/var/lib/apt/lists").glob("*_Packages*")):
        missing("no apt package lists: run apt-get update")
    result = subprocess.run(
        [apt_cache, "show", "--no-all-versions", *sorted(names)],
        capture_output=True,
        text=True,
        check=False,
    )
    stanzas = (s for s in result.stdout.split("\n\n") if s.startswith("Package: "))
    return {stanza.split("\n", 1)[0].removeprefix("Package: "): stanza for stanza in stanzas}


def essential(name: str) -> bool:
    info = debian_packages(frozenset([name])).get(name, "")
    return bool(re.search(r"^Essential: yes$", info, re.M))


def test_runner_names_every_tool_the_library_runs_and_no_other() -> None:
    run = tools_run_by_the_library()
    assert run == set(runner.PACKAGES), (
        f"not in runner.PACKAGES: {sorted(run - set(runner.PACKAGES))}; "
        f"never run: {sorted(set(runner.PACKAGES) - run)}"
    )


def test_every_gentoo_atom_exists() -> None:
    atoms = {atom for t in runner.PACKAGES for atom in alternatives(runner.PACKAGES[t])}
    atoms = {atom for atom in atoms if "/" in atom}
    for ebuild in EBUILD_DIR.glob("*.ebuild"):
        for deps in ebuild_dependencies(ebuild).values():
            atoms |= deps
    atoms |= readme_requirements()[1]
    unknown = sorted(atom for atom in atoms if not gentoo_package_exists(atom))
    assert not unknown, f"not packages of ::gentoo: {unknown}"


def test_every_debian_package_exists() -> None:
    names = {n for t in runner.PACKAGES for n in alternatives(runner.PACKAGES[t]) if "/" not in n}
    for field in debian_relations().values():
        names |= field
    names |= readme_requirements()[0]
    known = debian_packages(frozenset(names | set(DEBHELPER_VIRTUAL.values())))
    for virtual, provider in DEBHELPER_VIRTUAL.items():
        assert re.search(rf"^Provides:.*\b{virtual}\b", known[provider], re.M), virtual
    unknown = sorted(names - set(known) - set(DEBHELPER_VIRTUAL))
    assert not unknown, f"apt-cache knows no such package: {unknown}"


@pytest.mark.parametrize(
    "ebuild", [release_ebuild(), EBUILD_DIR / f"{EBUILD_DIR.name}-9999.ebuild"]
)
def test_ebuild_declares_what_the_library_runs_and_only_that(ebuild: Path) -> None:
    deps = ebuild_dependencies(ebuild)
    required = {gentoo_atom(t) for t in runner.PACKAGES if t not in OPTIONAL_TOOLS}
    optional = {gentoo_atom(t) for t in OPTIONAL_TOOLS} - required
    assert deps["RDEPEND"] - GENTOO_NON_TOOLS == required
    assert deps["optfeature"] == optional
    assert GENTOO_NON_TOOLS - {"dev-lang/python"} <= deps["RDEPEND"]


def test_ebuild_test_dependencies_are_what_make_check_imports() -> None:
    """make check runs tests/unit, whose support code uses sh and pytest-subprocess."""
    bdepend = ebuild_dependencies(release_ebuild())["BDEPEND"]
    assert {"dev-python/pytest", "dev-python/pytest-subprocess", "dev-python/sh"} <= bdepend


def test_debian_package_declares_what_the_library_runs_and_only_that() -> None:
    fields = debian_relations()
    packages = {t: debian_package(t) for t in runner.PACKAGES}
    required = {p for t, p in packages.items() if p and t not in OPTIONAL_TOOLS}
    optional = {p for t, p in packages.items() if p and t in OPTIONAL_TOOLS} - required
    assert fields["Depends"] - DEBIAN_NON_TOOLS == {p for p in required if not essential(p)}
    assert not {p for p in fields["Depends"] if essential(p)}, "policy: never on Essential"
    assert fields["Suggests"] == optional
    assert fields["Depends"] >= DEBIAN_NON_TOOLS
    assert "ganeti" in fields["Recommends"]


def test_readme_lists_what_the_packages_declare() -> None:
    """The README's requirement lists: what the packages declare, and nothing unused."""
    debian, gentoo = readme_requirements()
    deps = ebuild_dependencies(release_ebuild())
    assert gentoo == deps["RDEPEND"] | deps["optfeature"] | {"dev-lang/python"}
    runtime = {p for t in runner.PACKAGES if (p := debian_package(t))}
    required = {p for t in runner.PACKAGES if (p := debian_package(t)) and t not in OPTIONAL_TOOLS}
    assert required | DEBIAN_NON_TOOLS <= debian, f"README lacks {required - debian}"
    unused = debian - runtime - DEBIAN_NON_TOOLS - README_BUILD_TOOLS
    assert not unused, f"the README installs packages nothing uses: {sorted(unused)}"
