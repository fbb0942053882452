"""An instance disk built by a hostile owner, exported and renamed as Ganeti does.

Its root filesystem has ``/boot`` as an absolute symlink to a node directory (on the
script's PATH, as /usr/sbin is) and its fstab names a second partition as ``/boot``; that
partition carries a ``blkid`` and a ``tar`` that would mark the node if they ever ran.
export and rename mount each guest filesystem on a directory of their own,
``nosuid,nodev,noexec``, and never run a program from the guest: the node's canaries stay
byte-for-byte as they were, and nothing is left attached or mounted.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sh
from test_export_import import OS, SOURCE_NAME, Layout, sparse

from support import canary_state, osdef
from support.install import GANETI_PATH, InstalledOS

pytestmark = pytest.mark.root

LAYOUT = Layout("msdos", "ext4", 400, 32)
#: A shell snippet for tar's wrapper: run the guest's blkid from where export mounted /boot
#: (tar's --directory), recording what the shell says and its exit status.
TRY_GUEST_PROGRAM = """for a in "$@"; do
    case "$a" in --directory=*) top="${{a#--directory=}}" ;; esac
done
"$top/boot/sbin/blkid" > "{seen}/exec" 2>&1; echo "$?" >> "{seen}/exec"
"""
#: What the guest's programs would do if the node ran them.
EVIL = '#!/bin/sh\necho "{name} ran on the node" > {marker}\nexit 0\n'


@contextlib.contextmanager
def filesystem(image: Path, label: str, where: Path, *, writable: bool = True) -> Iterator[Path]:
    """The filesystem labelled ``label`` on ``image`` alone, mounted on ``where``."""
    for p in osdef.partitions(image):
        if osdef.probe(image, p["start"], p["size"]).get("LABEL") == label:
            break
    else:
        raise AssertionError(f"no {label} filesystem on {image}")
    options = f"{'rw' if writable else 'ro'},offset={p['start']},sizelimit={p['size']}"
    with osdef.loop_mounted(image, where, options):
        yield where


@dataclass
class Canaries:
    """What the node must keep: a directory on the scripts' PATH (as /usr/sbin is) with a
    file in it, and no marker left by a guest's program."""

    directory: Path
    marker: Path

    @classmethod
    def make(cls, tmp: Path) -> Canaries:
        directory = tmp / "node-sbin"
        directory.mkdir()
        (directory / "canary").write_text("the node's own file\n")
        return cls(directory, tmp / "node-was-hit")


class Hostile:
    """The hostile disk, the node's canaries and a way to see the scripts' mounts."""

    def __init__(self, os_def: OS, tmp: Path, canaries: Canaries) -> None:
        self.os_def, self.tmp = os_def, tmp
        self.canary_dir, self.marker = canaries.directory, canaries.marker
        self.seen = tmp / "seen"
        self.seen.mkdir()
        self.wrappers = tmp / "wrappers"
        self.image = tmp / "disk.img"

    def build(self) -> None:
        self.os_def.create(sparse(self.image, LAYOUT.size_mib), LAYOUT)
        with filesystem(self.image, "boot", self.tmp / "edit-boot") as boot:
            for name in ("blkid", "tar", "mount", "umount"):
                for where in (boot, boot / "sbin", boot / "bin"):
                    where.mkdir(exist_ok=True)
                    (where / name).write_text(EVIL.format(name=name, marker=self.marker))
                    (where / name).chmod(0o4755)  # setuid root, too
        with filesystem(self.image, "root", self.tmp / "edit-root") as root:
            (root / "boot").rmdir()
            (root / "boot").symlink_to(self.canary_dir)  # absolute, out of the guest
            assert any(" /boot " in line for line in (root / "etc/fstab").read_text().splitlines())
            (root / "etc/hostname").unlink()
            (root / "etc/hostname").symlink_to(self.canary_dir / "canary")

    def wrap(self, tool: str, then: str = "") -> None:
        """A node-side ``tool`` on PATH that records the mount table it sees, runs ``then``
        and then the real tool (the node's own, trusted)."""
        self.wrappers.mkdir(exist_ok=True)
        real = shutil.which(tool, path=GANETI_PATH)
        script = self.wrappers / tool
        script.write_text(
            f'#!/bin/sh\ncat /proc/self/mountinfo > "{self.seen}/{tool}"\n{then}\n'
            f'exec {real} "$@"\n'
        )
        script.chmod(0o755)

    def environ(self, name: str, **extra: str) -> dict[str, str]:
        env = self.os_def.environ(self.image, LAYOUT, name, **extra)
        env["PATH"] = f"{self.wrappers}:{self.canary_dir}:{GANETI_PATH}"
        return env

    def guest_mounts(self, tool: str) -> dict[str, set[str]]:
        """Mount point -> per-mount options of the guest filesystems ``tool`` saw."""
        found = {}
        for line in (self.seen / tool).read_text().splitlines():
            fields = line.split()
            if "/gentoobootstrap-" in fields[4] and fields[4].startswith(str(self.tmp)):
                found[fields[4]] = set(fields[5].split(","))
        return found


@pytest.fixture(scope="module")
def built(
    installed_os: InstalledOS, stages: dict, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Canaries]:
    """The hostile disk, made once (create, then the owner's changes), and its canaries."""
    tmp = tmp_path_factory.mktemp("hostile-build")
    canaries = Canaries.make(tmp)
    hostile = Hostile(OS(installed_os, tmp, stages["openrc", "zstd"].tarball), tmp, canaries)
    hostile.build()
    return hostile.image, canaries


@pytest.fixture
def hostile(
    installed_os: InstalledOS, stages: dict, built: tuple[Path, Canaries], no_leaks: Path
) -> Hostile:
    """A copy of the hostile disk for one test."""
    image, canaries = built
    os_def = OS(installed_os, no_leaks, stages["openrc", "zstd"].tarball)
    found = Hostile(os_def, no_leaks, canaries)
    subprocess.run(["cp", "--sparse=always", str(image), str(found.image)], check=True)
    return found


def test_export_of_a_boot_symlink_to_the_node(hostile: Hostile) -> None:
    before = canary_state(hostile.canary_dir)
    # While tar runs, try the guest's setuid blkid through export's own mount of /boot.
    hostile.wrap("tar", TRY_GUEST_PROGRAM.format(seen=hostile.seen))
    out = hostile.tmp / "disk0.stream"
    env = hostile.environ(SOURCE_NAME, EXPORT_DEVICE=str(hostile.image), EXPORT_INDEX="0")
    with open(out, "wb") as f:
        result = hostile.os_def.run("export", env, stdout=f, stderr=subprocess.PIPE)
    assert result.returncode == 0, result.stderr
    assert not hostile.marker.exists(), hostile.marker.read_text()
    assert canary_state(hostile.canary_dir) == before
    # The stream holds /boot's filesystem as ./boot, a directory, with the guest's files.
    listing = str(sh.tar("--list", "--verbose", "--file", str(out)))
    boot = [line for line in listing.splitlines() if " ./boot" in line and "./boot/" not in line]
    boot += [line for line in listing.splitlines() if line.endswith(" ./boot/")]
    assert len(boot) == 1 and boot[0].startswith("d"), boot
    assert "./boot/sbin/blkid" in listing and "./boot/vmlinuz-6.6.0-gentoo" in listing
    # tar ran while both were mounted, read-only, nosuid, nodev, noexec, on our own directories.
    mounted = hostile.guest_mounts("tar")
    assert sorted(Path(m).name for m in mounted) == ["boot", "root"], mounted
    for point, options in mounted.items():
        assert {"ro", "nosuid", "nodev", "noexec"} <= options, (point, options)
    tried = (hostile.seen / "exec").read_text()
    assert "Permission denied" in tried and tried.split()[-1] == "126", tried  # noexec


def test_rename_of_a_boot_symlink_to_the_node(hostile: Hostile) -> None:
    before = canary_state(hostile.canary_dir)
    hostile.wrap("umount")
    env = hostile.environ("renamed.example.org", OLD_INSTANCE_NAME=SOURCE_NAME)
    result = hostile.os_def.run("rename", env)
    assert result.returncode == 0, result.stderr
    assert not hostile.marker.exists(), hostile.marker.read_text()
    assert canary_state(hostile.canary_dir) == before
    # Renamed inside the guest; its /etc/hostname, a link out of it, replaced, not followed.
    with filesystem(hostile.image, "root", hostile.tmp / "look", writable=False) as root:
        assert 'hostname="renamed"' in (root / "etc/conf.d/hostname").read_text()
        assert (root / "etc/hostname").read_text() == "renamed\n"
    # Mounted read-write for the change, but nosuid, nodev, noexec, on our own directory.
    mounted = hostile.guest_mounts("umount")
    assert [Path(m).name for m in mounted] == ["root"], mounted
    assert {"rw", "nosuid", "nodev", "noexec"} <= next(iter(mounted.values()))
