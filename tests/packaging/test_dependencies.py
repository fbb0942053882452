"""The packages depend on every tool the OS scripts run.

The tools are those ``gentoobootstrap.runner.PACKAGES`` names plus every
literal ``runner.run/output/spawn(["tool", ...])`` in the library.  A new tool
fails this test until it is added to ``TOOLS`` below and to the ebuilds'
RDEPEND (or optfeature) and debian/control.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pkgbuild import REPO, release_ebuild

from gentoobootstrap import runner

#: tool -> (Gentoo package, Debian package or None when Debian has none).
TOOLS: dict[str, tuple[str, str | None]] = {
    "blkid": ("sys-apps/util-linux", "util-linux"),
    "blockdev": ("sys-apps/util-linux", "util-linux"),
    "btrfs": ("sys-fs/btrfs-progs", "btrfs-progs"),
    "catalyst": ("dev-util/catalyst", None),
    "e2fsck": ("sys-fs/e2fsprogs", "e2fsprogs"),
    "e2image": ("sys-fs/e2fsprogs", "e2fsprogs"),
    "findmnt": ("sys-apps/util-linux", "util-linux"),
    "fuser": ("sys-apps/psmisc", "psmisc"),
    "getfattr": ("sys-apps/attr", "attr"),
    "gpg": ("app-crypt/gnupg", "gnupg"),
    "gpgv": ("app-crypt/gnupg", "gpgv"),
    "losetup": ("sys-apps/util-linux", "mount"),
    "mkfs.btrfs": ("sys-fs/btrfs-progs", "btrfs-progs"),
    "mkfs.ext2": ("sys-fs/e2fsprogs", "e2fsprogs"),
    "mkfs.ext3": ("sys-fs/e2fsprogs", "e2fsprogs"),
    "mkfs.ext4": ("sys-fs/e2fsprogs", "e2fsprogs"),
    "mkfs.xfs": ("sys-fs/xfsprogs", "xfsprogs"),
    "mkswap": ("sys-apps/util-linux", "util-linux"),
    "mount": ("sys-apps/util-linux", "mount"),
    "partx": ("sys-apps/util-linux", "util-linux"),
    "resize2fs": ("sys-fs/e2fsprogs", "e2fsprogs"),
    "restore": ("app-backup/dump", "dump"),
    "sfdisk": ("sys-apps/util-linux", "fdisk"),
    "tar": ("app-arch/tar", "tar"),
    "tune2fs": ("sys-fs/e2fsprogs", "e2fsprogs"),
    "umount": ("sys-apps/util-linux", "mount"),
    "wipefs": ("sys-apps/util-linux", "util-linux"),
    "xfs_admin": ("sys-fs/xfsprogs", "xfsprogs"),
    "xfs_copy": ("sys-fs/xfsprogs", "xfsprogs"),
    "xfs_growfs": ("sys-fs/xfsprogs", "xfsprogs"),
    "xz": ("app-arch/xz-utils", "xz-utils"),
    "zstd": ("app-arch/zstd", "zstd"),
}
#: Needed only for some settings: optfeature (Gentoo), Suggests (Debian).
OPTIONAL = {
    "sys-fs/btrfs-progs",
    "sys-fs/xfsprogs",
    "dev-util/catalyst",
    "app-backup/dump",
    "btrfs-progs",
    "xfsprogs",
    "dump",
}
#: Debian's Essential packages are always installed; policy forbids depending on them.
ESSENTIAL = {"tar", "util-linux"}


def tools_run_by_the_library() -> set[str]:
    tools = set(runner.PACKAGES)
    for module in (REPO / "python" / "gentoobootstrap").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "runner"
                and node.func.attr in ("run", "output", "spawn")
                and node.args
                and isinstance(node.args[0], ast.List)
                and node.args[0].elts
                and isinstance(node.args[0].elts[0], ast.Constant)
                and isinstance(node.args[0].elts[0].value, str)
            ):
                tools.add(node.args[0].elts[0].value)
    return tools


def ebuild_dependencies(ebuild: Path) -> tuple[set[str], set[str]]:
    """The atoms in RDEPEND and those named by optfeature."""
    text = ebuild.read_text()
    rdepend = re.search(r'^RDEPEND="(.*?)"$', text, re.S | re.M)
    assert rdepend, "no RDEPEND"
    required = set(re.findall(r"\b[a-z0-9-]+/[A-Za-z0-9_+-]+", rdepend.group(1)))
    optional = set(re.findall(r"^\toptfeature \"[^\"]+\" ([a-z0-9-]+/[A-Za-z0-9_+-]+)", text, re.M))
    return required, optional


def debian_relations() -> dict[str, set[str]]:
    """Depends, Recommends and Suggests of the binary package, without versions."""
    control = (REPO / "debian" / "control").read_text()
    binary = control.split("\n\n", 1)[1]
    fields: dict[str, set[str]] = {}
    for name in ("Depends", "Recommends", "Suggests"):
        match = re.search(rf"^{name}:(.*?)(?=^\S|\Z)", binary, re.S | re.M)
        values = match.group(1) if match else ""
        values = "\n".join(line for line in values.splitlines() if not line.startswith("#"))
        fields[name] = {
            alt.split()[0].split(":")[0]
            for rel in values.split(",")
            for alt in rel.split("|")
            if alt.strip() and not alt.strip().startswith("$")
        }
    return fields


def test_every_tool_the_library_runs_is_known_here() -> None:
    unknown = tools_run_by_the_library() - set(TOOLS)
    assert not unknown, f"add to TOOLS and to the packages' dependencies: {sorted(unknown)}"


def test_ebuild_depends_on_every_tool() -> None:
    required, optional = ebuild_dependencies(release_ebuild())
    for tool, (atom, _) in sorted(TOOLS.items()):
        if atom in OPTIONAL:
            assert atom in optional, f"{tool}: optfeature for {atom} missing"
            assert atom not in required, f"{tool}: {atom} is optional, not RDEPEND"
        else:
            assert atom in required, f"{tool}: RDEPEND lacks {atom}"
    assert "sec-keys/openpgp-keys-gentoo-release" in required
    assert "dev-python/configobj" in required


def test_debian_package_depends_on_every_tool() -> None:
    fields = debian_relations()
    for tool, (_, package) in sorted(TOOLS.items()):
        if package is None or package in ESSENTIAL:
            continue
        if package in OPTIONAL:
            assert package in fields["Suggests"] | fields["Recommends"], f"{tool}: {package}"
            assert package not in fields["Depends"], f"{tool}: {package} is optional"
        else:
            assert package in fields["Depends"], f"{tool}: Depends lacks {package}"
    assert {"python3-configobj"} <= fields["Depends"]
    assert "ganeti" in fields["Recommends"] | fields["Suggests"]
    assert not ESSENTIAL & fields["Depends"], "Debian policy: no dependency on Essential packages"
