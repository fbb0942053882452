"""The installed guest's grow script on real disks: create, enlarge the disk file, run it.

The script is the guest's (read from the installed root), run on the node against
the enlarged disk's loop device with root mounted where it says — as it runs at
boot, with the mount point as its argument instead of ``/``.  Running a program
from a guest disk on the node is for tests only.  Checked without the library:
the partition table (root ends at the disk's end, the table verifies) and the
mounted filesystem's size (statvfs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sh
from test_create import Case, create_case, sparse

from gentoobootstrap.disk import devices
from gentoobootstrap.guest import grow
from support import osdef

pytestmark = pytest.mark.root

MIB = 1 << 20
#: The disk create installs onto, and what is then added to it.
DISK_MIB, ADDED_MIB = 520, 256


def grown(style: str, fs: str, **fields: object) -> Case:
    """A create Case on the disk these tests enlarge; swap, where there is one, 32 MiB."""
    return dataclasses.replace(Case(style, fs, DISK_MIB, swap_size="32"), **fields)


CASES = {
    "msdos-ext4": grown("msdos", "ext4"),
    "msdos-xfs-boot-swap": grown("msdos", "xfs", boot=48, swap="yes"),
    "msdos-btrfs-swap-root2": grown("msdos", "btrfs", swap="yes", root_path="/dev/vda2"),
    "gpt-ext4-boot-swap-root3": grown("gpt", "ext4", boot=48, swap="yes", root_path="/dev/vda3"),
    "gpt-xfs-swap": grown("gpt", "xfs", swap="yes"),
    "gpt-btrfs-boot-systemd": grown("gpt", "btrfs", boot=48, flavour="systemd", compression="zstd"),
    "none-xfs": grown("none", "xfs", root_path="/dev/vda"),
    # SWAP="file": root, holding the swap file, is the only partition.
    "msdos-btrfs-swapfile": grown("msdos", "btrfs", swap="file"),
    "none-xfs-swapfile": grown("none", "xfs", swap="file", root_path="/dev/vda"),
}


def can_resize_ext_online() -> bool:
    """The kernel lets only CAP_SYS_RESOURCE grow a mounted ext2/3/4 (some sandboxes drop it)."""
    status = Path("/proc/self/status").read_text()
    effective = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff"))
    return bool(int(effective, 16) & (1 << 24))


def fs_bytes(mountpoint: Path) -> int:
    st = os.statvfs(mountpoint)
    return st.f_blocks * st.f_frsize


def root_entry(image: Path, number: int) -> dict[str, int]:
    return next(p for p in osdef.partitions(image) if p["number"] == number)


def install(
    case: Case,
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    stages: dict,
) -> Path:
    """create ``case`` on a new disk file, then enlarge the file by ADDED_MIB."""
    image = sparse(tmp / "disk.img", case.size_mib)
    status, log = create_case(
        tmp, monkeypatch, image, stages[case.flavour, case.compression].tarball, capfd, case
    )
    assert status == 0, log
    with open(image, "r+b") as f:
        f.truncate((DISK_MIB + ADDED_MIB) * MIB)
    return image


@contextlib.contextmanager
def root_mounted(image: Path, number: int, mountpoint: Path) -> Iterator[tuple[Path, Path]]:
    """The disk attached as it is now, root partition ``number`` (0: the disk) mounted;
    (disk, root device).  Mounted through a node of another name, as a kernel's /dev/root
    is: the script must find the partition by its device number."""
    mountpoint.mkdir()
    with contextlib.ExitStack() as stack:
        loop = stack.enter_context(devices.attach(image))
        _, found = devices.read_table(loop)
        nodes = stack.enter_context(devices.partitions(loop, found)) if found else {0: loop}
        root = mountpoint.parent / "root-device"
        os.mknod(root, stat.S_IFBLK | 0o600, os.stat(nodes[number]).st_rdev)
        stack.callback(root.unlink)
        sh.mount("-o", "nosuid,nodev", str(root), str(mountpoint))
        stack.callback(sh.umount, str(mountpoint))
        yield loop, root


def run_script(mountpoint: Path, *hide: str) -> subprocess.CompletedProcess[str]:
    """The guest's installed script on ``mountpoint``; ``hide``: node tools it must not find
    (covered, in a mount namespace of its own, by a file that is no program)."""
    script = mountpoint / grow.SCRIPT.lstrip("/")
    assert script.read_text() == grow.SCRIPT_TEXT
    argv = ["sh", str(script), str(mountpoint)]
    if hide:
        covers = " && ".join(f"mount --bind /dev/null {shlex.quote(tool)}" for tool in hide)
        argv = ["unshare", "--mount", "sh", "-c", f'{covers} && exec "$@"', "-", *argv]
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def root_number(case: Case) -> int:
    return 0 if case.style == "none" else int(case.root_path[len("/dev/vda") :])


@pytest.mark.parametrize("name", sorted(CASES))
def test_grow_script_grows_root_to_the_end_of_the_enlarged_disk(
    name: str,
    no_leaks: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    stages: dict,
) -> None:
    case = CASES[name]
    image = install(case, no_leaks, monkeypatch, capfd, stages)
    number = root_number(case)
    old = root_entry(image, number) if number else {}
    mountpoint = no_leaks / "root"
    with root_mounted(image, number, mountpoint) as (loop, root):
        before = fs_bytes(mountpoint)
        run = run_script(mountpoint)
        out = run.stdout
        partition_grown = f"grew {root} to the end of {loop}" in out
        assert partition_grown == (case.style != "none"), out
        if case.fs.startswith("ext") and not can_resize_ext_online():
            assert run.returncode == 1 and "resize2fs failed" in out, out
            grown_fs = False
        else:
            assert run.returncode == 0, out
            assert f"grew the {case.fs} filesystem on {mountpoint}" in out, out
            grown_fs = True
            after = fs_bytes(mountpoint)
            assert after - before > 0.8 * ADDED_MIB * MIB, (before, after)
            # Nothing left to grow: the next boot leaves the table alone and says nothing.
            again = run_script(mountpoint)
            assert (again.returncode, again.stdout) == (0, "")

    size = image.stat().st_size
    if number:
        new = root_entry(image, number)
        assert new["start"] == old["start"]
        end = new["start"] + new["size"]
        # msdos: to the last sector; gpt: to the last sector before its backup table.
        assert end == size - (33 * 512 if case.style == "gpt" else 0), (end, size)
        assert max(p["start"] + p["size"] for p in osdef.partitions(image)) == end
        assert "No errors detected" in str(sh.sfdisk("--verify", str(image)))
    if not grown_fs:
        pytest.skip(
            "the partition grew; the filesystem cannot here: the kernel grows a mounted ext "
            "filesystem only for CAP_SYS_RESOURCE, which this process lacks"
        )


def test_a_missing_tool_is_one_line_and_no_failure(
    no_leaks: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    stages: dict,
) -> None:
    """Without xfs_growfs the partition still grows; the filesystem waits for the tool."""
    case = CASES["gpt-xfs-swap"]
    image = install(case, no_leaks, monkeypatch, capfd, stages)
    mountpoint = no_leaks / "root"
    with root_mounted(image, root_number(case), mountpoint) as (loop, root):
        before = fs_bytes(mountpoint)
        xfs_growfs = shutil.which("xfs_growfs")
        assert xfs_growfs
        run = run_script(mountpoint, xfs_growfs)
        assert (run.returncode, run.stdout) == (
            0,
            f"ganeti-growroot: grew {root} to the end of {loop}\n"
            "ganeti-growroot: xfs_growfs not found (install sys-fs/xfsprogs): "
            f"{mountpoint} is not grown\n",
        )
        assert fs_bytes(mountpoint) == before
        # Once the tool is there, the next run grows the filesystem.
        assert "grew the xfs filesystem" in run_script(mountpoint).stdout


def test_a_root_partition_that_is_not_last_is_left_alone(no_leaks: Path) -> None:
    """Disks made before root came last (root 1, then swap): one line, nothing changed."""
    image = no_leaks / "old.img"
    with open(image, "wb") as f:
        f.truncate(400 * MIB)
    sh.sfdisk(
        "--quiet",
        str(image),
        _in="label: dos\n1: start=2048, size=614400, type=L\n2: size=65536, type=S\n",
    )
    with open(image, "r+b") as f:
        f.truncate(600 * MIB)
    table = osdef.partitions(image)
    script = no_leaks / "growroot"
    script.write_text(grow.SCRIPT_TEXT)
    mountpoint = no_leaks / "root"
    mountpoint.mkdir()
    with contextlib.ExitStack() as stack:
        loop = stack.enter_context(devices.attach(image))
        nodes = stack.enter_context(devices.partitions(loop, devices.read_table(loop)[1]))
        sh.Command("mkfs.btrfs")("--quiet", str(nodes[1]))
        sh.mount(str(nodes[1]), str(mountpoint))
        stack.callback(sh.umount, str(mountpoint))
        run = subprocess.run(["sh", script, mountpoint], capture_output=True, text=True, check=True)
    assert run.stdout == (
        f"ganeti-growroot: {nodes[1]} is not the last partition on {loop} "
        f"({nodes[2].name} follows it): not grown\n"
    )
    assert osdef.partitions(image) == table
