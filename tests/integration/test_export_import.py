"""export, import and rename of the installed OS, run as Ganeti runs them (cleared environment,
OS directory as cwd, the stream on stdout / stdin): create → export → import onto another
disk (larger, smaller, another filesystem and layout), then the guest's files compared
entry by entry; raw streams of other disks; damaged streams; dump streams; rename; SIGTERM
mid-export.  Every test checks that nothing of ours is left attached or mounted."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sh

from gentoobootstrap.guest.configure import set_hostname
from gentoobootstrap.guest.tree import GuestRoot
from support import ganeti_environ, leaks, osdef, stage
from support.install import InstalledOS
from support.loopdisk import detach

pytestmark = pytest.mark.root

MIB = 1 << 20
SOURCE_NAME = "source.example.com"


def sparse(path: Path, mib: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(mib * MIB)
    return path


@dataclass(frozen=True)
class Layout:
    style: str
    fs: str
    size_mib: int
    boot: int = 0
    swap: int = 0
    swap_file: bool = False  # SWAP="file": the swap is /swapfile on root

    def settings(self) -> dict[str, str]:
        return {
            "PARTITION_STYLE": self.style,
            "FILESYSTEM": self.fs,
            "BOOT_SIZE": str(self.boot),
            "SWAP": ("file" if self.swap_file else "yes") if self.swap else "no",
            "SWAP_SIZE": str(self.swap or ""),
        }


class OS:
    """The installed OS definition, one variant per layout, run as Ganeti runs it."""

    def __init__(self, installed: InstalledOS, tmp: Path, stage_file: Path) -> None:
        self.installed, self.tmp, self.stage_file = installed, tmp, stage_file
        (tmp / "tmp").mkdir(exist_ok=True)

    def variant(self, layout: Layout) -> str:
        name = f"exim-{layout.style}-{layout.fs}-b{layout.boot}-s{layout.swap}"
        name += "-file" if layout.swap_file else ""
        self.installed.add_variant(
            name,
            {
                "STAGE4_FILE": str(self.stage_file),
                "CUSTOMIZE_DIR": str(self.tmp / "no-hooks"),
                **layout.settings(),
            },
        )
        return name

    def environ(self, image: Path, layout: Layout, name: str, **extra: str) -> dict[str, str]:
        env = ganeti_environ(image, name, OS_VARIANT=self.variant(layout), **extra)
        env["INSTANCE_OS"] = f"gentoobootstrap+{env['OS_VARIANT']}"
        env["TMPDIR"] = str(self.tmp / "tmp")  # mount points below the test's directory
        return env

    def run(
        self, script: str, env: dict[str, str], **kwargs: object
    ) -> subprocess.CompletedProcess:
        result = self.installed.run(script, env, **kwargs)  # type: ignore[arg-type]
        assert leaks(self.tmp) == [], f"{script} left: {leaks(self.tmp)}"
        return result

    def create(self, image: Path, layout: Layout, name: str = SOURCE_NAME) -> None:
        result = self.run("create", self.environ(image, layout, name))
        assert result.returncode == 0, result.stderr

    def export(
        self,
        image: Path,
        out: Path,
        layout: Layout,
        index: int = 0,
        name: str = SOURCE_NAME,
        *,
        piped: bool = False,
    ) -> tuple[subprocess.CompletedProcess, int]:
        """Run export of disk ``index`` into ``out``; (result, the size it reported).

        ``piped``: its stdout a pipe, as Ganeti gives it (the stream then passes by tee(2)).
        """
        read_size, write_size = os.pipe()
        env = self.environ(
            image,
            layout,
            name,
            EXPORT_DEVICE=str(image),
            EXPORT_INDEX=str(index),
            EXPORT_DISK_PATH=str(image),
            EXP_SIZE_FD=str(write_size),
        )
        try:
            with open(out, "wb") as f, contextlib.ExitStack() as stack:
                stdout: object = f
                if piped:
                    cat = stack.enter_context(
                        subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=f)
                    )
                    stdout = cat.stdin
                result = self.run(
                    "export", env, stdout=stdout, stderr=subprocess.PIPE, pass_fds=(write_size,)
                )
            os.close(write_size)
            write_size = -1
            with os.fdopen(read_size) as r:
                read_size = -1
                reported = r.read()
        finally:
            for fd in (read_size, write_size):
                if fd >= 0:
                    os.close(fd)
        return result, int(reported) if reported.strip() else -1

    def import_(
        self,
        image: Path,
        stream: Path,
        layout: Layout,
        index: int = 0,
        name: str = "new.example.com",
        *,
        piped: bool = False,
    ) -> subprocess.CompletedProcess:
        """Run import of ``stream``; ``piped``: its stdin a pipe, as Ganeti gives it."""
        env = self.environ(
            image,
            layout,
            name,
            IMPORT_DEVICE=str(image),
            IMPORT_INDEX=str(index),
            IMPORT_DISK_PATH=str(image),
        )
        if piped:
            with subprocess.Popen(["cat", str(stream)], stdout=subprocess.PIPE) as cat:
                return self.run("import", env, stdin=cat.stdout)
        with open(stream, "rb") as f:
            return self.run("import", env, stdin=f)

    def rename(
        self, image: Path, layout: Layout, old: str, new: str
    ) -> subprocess.CompletedProcess:
        return self.run("rename", self.environ(image, layout, new, OLD_INSTANCE_NAME=old))


@pytest.fixture
def os_def(installed_os: InstalledOS, no_leaks: Path, stages: dict) -> OS:
    return OS(installed_os, no_leaks, stages["openrc", "zstd"].tarball)


@contextlib.contextmanager
def tree(image: Path, where: Path, *, writable: bool = False) -> Iterator[Path]:
    """The guest's tree on ``image``: root (label root) with /boot (label boot) mounted in it."""
    parts = osdef.partitions(image) or [{"start": 0, "size": image.stat().st_size}]
    found = {}
    for p in parts:
        info = osdef.probe(image, p["start"], p["size"])
        found[info.get("LABEL")] = (p, info.get("TYPE", ""))
    where.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for role, point in (("root", where), ("boot", where / "boot")):
            if role not in found:
                continue
            p, fs = found[role]
            args = ["--show", "--find", "--offset", str(p["start"]), "--sizelimit", str(p["size"])]
            loop = str(sh.losetup(*args, *([] if writable else ["--read-only"]), str(image)))
            stack.callback(detach, Path(loop.strip()))
            opts = "rw" if writable else "ro,norecovery" if fs == "xfs" else "ro"
            sh.mount("-o", opts, loop.strip(), str(point))
            stack.callback(sh.umount, str(point))
        yield where


def fstab_lines(root: Path) -> list[str]:
    return [
        re.sub(r"\s+", " ", line.strip())
        for line in (root / "etc/fstab").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def add_extras(image: Path, where: Path) -> None:
    """What a running guest adds: a sparse file, an fstab line of its own, a long xattr."""
    with tree(image, where, writable=True) as root:
        with open(root / "var/lib/sparse.img", "wb") as f:
            f.truncate(64 * MIB)
            f.seek(32 * MIB)
            f.write(b"data in the middle")
        os.setxattr(root / "usr/bin/gawk", "user.comment", b"x" * 700)
        with open(root / "etc/fstab", "a") as f:
            f.write("tmpfs\t/var/tmp/portage\ttmpfs\tsize=1G,uid=250\t0 0\n")
            f.write("/dev/vdb1\t/srv\text4\tnoatime\t0 2\n")


CASES = {
    # source → target: every filesystem on both sides, larger and smaller, /boot split and merged.
    "ext4-to-ext4-larger":
        (Layout("msdos", "ext4", 400, 64, 32), Layout("msdos", "ext4", 600, 64, 32)),
    "xfs-to-btrfs-smaller-boot-merged":
        (Layout("gpt", "xfs", 500, 64), Layout("msdos", "btrfs", 320, 0, 32)),
    "btrfs-to-xfs-boot-split": (Layout("none", "btrfs", 320), Layout("gpt", "xfs", 520, 48)),
    "ext2-to-ext3": (Layout("msdos", "ext2", 320, 32), Layout("none", "ext3", 300)),
}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "piped"),
    [*((name, False) for name in sorted(CASES)), ("xfs-to-btrfs-smaller-boot-merged", True)],
)
def test_export_then_import(name: str, piped: bool, os_def: OS, no_leaks: Path) -> None:
    source_layout, target_layout = CASES[name]
    source = sparse(no_leaks / "source.img", source_layout.size_mib)
    os_def.create(source, source_layout)
    add_extras(source, no_leaks / "edit")
    exported = no_leaks / "disk0.stream"
    result, reported = os_def.export(source, exported, source_layout, piped=piped)
    assert result.returncode == 0, result.stderr
    size = exported.stat().st_size
    assert 0.5 * size < reported < 2 * size + 32 * MIB, (reported, size)
    # The stream is a tar archive any GNU tar lists; the sparse file stays sparse in it.
    listing = sh.tar("--list", "--file", str(exported))
    assert "./var/lib/sparse.img" in listing and "./boot/vmlinuz-6.6.0-gentoo" in listing
    assert size < 16 * MIB
    target = sparse(no_leaks / "target.img", target_layout.size_mib)
    result = os_def.import_(target, exported, target_layout, piped=piped)
    assert result.returncode == 0, result.stderr
    assert "ERROR" not in result.stderr
    with tree(source, no_leaks / "a") as a, tree(target, no_leaks / "b") as b:
        # The ESP's mount point is made by the import when the new layout has an ESP.
        made = {"efi"} if target_layout.style == "gpt" and source_layout.style != "gpt" else set()
        assert stage.compare(a, b, ignore={"etc/fstab", *made}) == []
        st = os.stat(b / "var/lib/sparse.img")
        assert st.st_size == 64 * MIB and st.st_blocks * 512 < 4 * MIB, "not sparse"
        old, new = fstab_lines(a), fstab_lines(b)
    info = {
        (osdef.probe(target, p["start"], p["size"]) or {}).get("LABEL"): osdef.probe(
            target, p["start"], p["size"]
        )
        for p in osdef.partitions(target) or [{"start": 0, "size": target.stat().st_size}]
    }
    assert info["root"]["TYPE"] == target_layout.fs
    mine = [line for line in new if line.startswith("UUID=")]
    want_root = f"UUID={info['root']['UUID']} / {target_layout.fs}"
    assert mine[0].startswith(want_root)
    if target_layout.fs == source_layout.fs:  # the guest's own options are kept
        assert mine[0] == old[0].replace(old[0].split()[0], f"UUID={info['root']['UUID']}")
    if target_layout.boot:
        assert f"UUID={info['boot']['UUID']} /boot ext4 noatime 0 2" in new
    else:
        assert not any(line.split()[1] == "/boot" for line in new)
    if target_layout.style == "gpt":  # a new, empty ESP per the current settings
        assert info["ESP"]["TYPE"] == "vfat"
        assert f"UUID={info['ESP']['UUID']} /efi vfat umask=0077,nofail 0 0" in new
    else:
        assert not any(line.split()[1] == "/efi" for line in new)
    if target_layout.swap:
        assert f"UUID={info['swap']['UUID']} none swap sw 0 0" in new
    else:
        assert not any(line.split()[2] == "swap" for line in new)
    # The guest's own lines stay, in order.
    assert new[-2:] == old[-2:] or [line for line in new if "tmpfs" in line or "vdb1" in line] == [
        "tmpfs /var/tmp/portage tmpfs size=1G,uid=250 0 0",
        "/dev/vdb1 /srv ext4 noatime 0 2",
    ]


@pytest.mark.parametrize(
    ("source_fs", "target_fs"), [("ext4", "btrfs"), ("btrfs", "xfs"), ("xfs", "ext4")]
)
def test_a_swap_file_comes_back_usable(
    source_fs: str, target_fs: str, os_def: OS, no_leaks: Path
) -> None:
    """The stream keeps files sparse, and the kernel refuses a swap file with holes:
    import allocates the fstab's /swapfile again, fully (NOCOW on btrfs), and makes it swap."""
    source_layout = Layout("msdos", source_fs, 400, swap=40, swap_file=True)
    target_layout = Layout("msdos", target_fs, 400)  # the target's own SWAP does not matter
    source = sparse(no_leaks / "source.img", source_layout.size_mib)
    os_def.create(source, source_layout)
    exported = no_leaks / "disk0.stream"
    assert os_def.export(source, exported, source_layout)[0].returncode == 0
    target = sparse(no_leaks / "target.img", target_layout.size_mib)
    result = os_def.import_(target, exported, target_layout)
    assert result.returncode == 0, result.stderr
    assert len(osdef.partitions(target)) == 1
    with tree(target, no_leaks / "b") as b:
        made = os.stat(b / "swapfile", follow_symlinks=False)
        assert (made.st_size, made.st_mode & 0o7777, made.st_uid) == (40 * MIB, 0o600, 0)
        assert made.st_blocks * 512 >= made.st_size, "the swap file has holes"
        assert str(sh.blkid("--probe", "-s", "TYPE", "-o", "value", b / "swapfile")).strip() == (
            "swap"
        )
        if target_fs == "btrfs":
            assert "C" in str(sh.lsattr(b / "swapfile")).split()[0]
        assert "/swapfile none swap sw 0 0" in fstab_lines(b)


def test_import_onto_the_disk_it_came_from(os_def: OS, no_leaks: Path) -> None:
    """Restore a backup over the instance's own (changed) disk: wiped, then as it was."""
    layout = Layout("msdos", "ext4", 320, 32)
    image = sparse(no_leaks / "disk.img", layout.size_mib)
    os_def.create(image, layout)
    exported = no_leaks / "disk0.stream"
    assert os_def.export(image, exported, layout)[0].returncode == 0
    saved = no_leaks / "before.img"
    shutil.copyfile(image, saved)
    with tree(image, no_leaks / "edit", writable=True) as root:
        (root / "etc/gentoo-release").write_text("changed after the backup\n")
        (root / "boot/vmlinuz-6.6.0-gentoo").unlink()
    result = os_def.import_(image, exported, layout)
    assert result.returncode == 0, result.stderr
    with tree(saved, no_leaks / "a") as a, tree(image, no_leaks / "b") as b:
        assert stage.compare(a, b, ignore={"etc/fstab"}) == []


def test_other_disks_are_raw(os_def: OS, no_leaks: Path) -> None:
    layout = Layout("msdos", "ext4", 320)
    disk1 = no_leaks / "disk1.img"
    content = os.urandom(3 * MIB) + b"\0" * (5 * MIB)
    disk1.write_bytes(content)
    exported = no_leaks / "disk1.stream"
    result, reported = os_def.export(disk1, exported, layout, index=1)
    assert result.returncode == 0, result.stderr
    assert exported.read_bytes() == content and reported == len(content)
    same = sparse(no_leaks / "same.img", 8)
    assert os_def.import_(same, exported, layout, index=1).returncode == 0
    assert same.read_bytes() == content
    bigger = sparse(no_leaks / "bigger.img", 16)
    assert os_def.import_(bigger, exported, layout, index=1).returncode == 0
    assert bigger.read_bytes()[: len(content)] == content
    smaller = sparse(no_leaks / "smaller.img", 4)
    result = os_def.import_(smaller, exported, layout, index=1)
    assert result.returncode == 1
    assert "the stream is larger than disk 1" in result.stderr.strip().splitlines()[-1]


@pytest.fixture
def exported(os_def: OS, no_leaks: Path) -> Path:
    layout = Layout("msdos", "ext4", 320)
    image = sparse(no_leaks / "source.img", layout.size_mib)
    os_def.create(image, layout)
    out = no_leaks / "disk0.stream"
    assert os_def.export(image, out, layout)[0].returncode == 0
    return out


def damaged(stream: Path, kind: str) -> Path:
    data = bytearray(stream.read_bytes())
    if kind == "cut-in-a-member":
        data = data[: len(data) // 2 + 100]
    elif kind == "cut-between-records":  # tar alone accepts this one silently
        data = data[: (len(data) // 2) // 10240 * 10240]
    elif kind == "end-block-missing":
        data = data[:-512]
    elif kind == "flipped-byte":
        data[len(data) // 2] ^= 0x55
    elif kind == "garbage":
        data = bytearray(os.urandom(4096))
    out = stream.with_name(f"{kind}.stream")
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("piped", [False, True], ids=["file", "pipe"])
@pytest.mark.parametrize(
    "kind,message",
    [
        ("cut-in-a-member", "truncated"),
        ("cut-between-records", "truncated"),
        ("end-block-missing", "truncated"),
        ("flipped-byte", "corrupt"),
        ("garbage", "neither an export of this OS"),
    ],
)
def test_damaged_streams_fail_clearly(
    kind: str, message: str, piped: bool, os_def: OS, exported: Path, no_leaks: Path
) -> None:
    layout = Layout("msdos", "ext4", 320)
    target = sparse(no_leaks / "target.img", 320)
    result = os_def.import_(target, damaged(exported, kind), layout, piped=piped)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "ERROR: import:" in last and message in last, result.stderr
    if kind == "garbage":  # told before the disk is touched
        assert target.stat().st_blocks == 0


#: ganeti-instance-debootstrap's export streams need dump(8) to make and restore(8) to read.
needs_dump = pytest.mark.skipif(
    shutil.which("restore") is None or shutil.which("dump") is None,
    reason="needs dump and restore (Debian: dump)",
)


def dump_of(tree: Path, tmp: Path, mib: int = 16) -> bytes:
    """``dump -0`` of an ext4 filesystem of ``mib`` MiB holding ``tree``, as
    ganeti-instance-debootstrap's export makes it."""
    image = sparse(tmp / "dumped.img", mib)
    sh.Command("mkfs.ext4")("-q", "-F", "-d", str(tree), str(image))
    loop = str(sh.losetup("--show", "--find", "--read-only", str(image))).strip()
    try:
        dumped = subprocess.run(["dump", "-0", "-q", "-f", "-", loop], capture_output=True)
        assert dumped.returncode == 0, dumped.stderr
    finally:
        detach(Path(loop))
    image.unlink()
    return dumped.stdout


@needs_dump
def test_a_dump_stream_of_instance_debootstrap(os_def: OS, no_leaks: Path, stages: dict) -> None:
    """ganeti-instance-debootstrap's export: ``dump -0 -q -f -`` of the root filesystem."""
    built: stage.Stage = stages["openrc", "zstd"]
    (no_leaks / "disk0.dump").write_bytes(dump_of(built.tree, no_leaks, 128))
    layout = Layout("msdos", "xfs", 400, 32)
    target = sparse(no_leaks / "target.img", layout.size_mib)
    result = os_def.import_(target, no_leaks / "disk0.dump", layout)
    assert result.returncode == 0, result.stderr
    assert "a dump(8) stream" in result.stderr
    with tree(target, no_leaks / "b") as b:
        assert not (b / "restoresymtable").exists()
        problems = stage.compare(built.tree, b, ignore={"etc/fstab"})
        # dump keeps owners, modes, links and times; xattrs depend on the dump version.
        assert [p for p in problems if ": xattrs" not in p] == []
        assert fstab_lines(b)[0].split()[1:3] == ["/", "xfs"]


@needs_dump
def test_restore_errors_fail_the_import(os_def: OS, no_leaks: Path) -> None:
    """A dump stream whose directory entry for etc is damaged: restore -y says "bad name to
    addentry", goes on and exits 0 with /etc missing; import fails with one ERROR line."""
    tree_dir = no_leaks / "tree"
    (tree_dir / "etc").mkdir(parents=True)
    (tree_dir / "etc/hostname").write_text("source\n")
    dumped = dump_of(tree_dir, no_leaks)
    at = dumped.index(b"etc\0")
    damaged = no_leaks / "damaged.dump"
    damaged.write_bytes(dumped[:at] + b"e/c\0" + dumped[at + 4 :])
    layout = Layout("msdos", "ext4", 320)
    result = os_def.import_(sparse(no_leaks / "target.img", layout.size_mib), damaged, layout)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "ERROR: import: restore failed on the stream: bad name to addentry ./e/c" in last
    assert len(last) < 1000, last  # restore's endless paths are cut


@needs_dump
def test_a_dump_s_trusted_attributes_fail_the_import(os_def: OS, no_leaks: Path) -> None:
    """restore runs without CAP_SYS_ADMIN (see confinement): the one attribute namespace it
    cannot restore, ``trusted.*``, is one ERROR line naming the file; ``user.*`` is none."""
    tree_dir = no_leaks / "tree"
    (tree_dir / "etc").mkdir(parents=True)
    for name, attribute in (("plain", "user.origin"), ("layer", "trusted.overlay.opaque")):
        (tree_dir / "etc" / name).write_text("x\n")
        os.setxattr(tree_dir / "etc" / name, attribute, b"y")
    dumped = dump_of(tree_dir, no_leaks)
    (no_leaks / "xattrs.dump").write_bytes(dumped)
    layout = Layout("msdos", "ext4", 320)
    target = sparse(no_leaks / "target.img", layout.size_mib)
    result = os_def.import_(target, no_leaks / "xattrs.dump", layout)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "ERROR: import: restore failed on the stream:" in last
    assert "./etc/layer: EA set trusted.overlay.opaque:y failed: Operation not permitted" in last
    assert "plain" not in last


# --- rename -----------------------------------------------------------------------------------


@pytest.fixture(params=["ext4", "xfs"])
def named(os_def: OS, no_leaks: Path, request: pytest.FixtureRequest) -> tuple[Path, Layout]:
    """A created instance whose guest is named SOURCE_NAME (as configure_guest names it)."""
    layout = Layout("msdos", request.param, 400, 32)
    image = sparse(no_leaks / "disk.img", layout.size_mib)
    os_def.create(image, layout)
    with tree(image, no_leaks / "edit", writable=True) as root:
        set_hostname(GuestRoot(root), SOURCE_NAME)
        with open(root / "etc/hosts", "a") as f:
            f.write(f"10.0.0.7\t{SOURCE_NAME} source\t# its own address\n")
    return image, layout


def names_in(image: Path, where: Path) -> tuple[str, str, str]:
    with tree(image, where) as root:
        return (
            (root / "etc/hostname").read_text(),
            (root / "etc/conf.d/hostname").read_text(),
            (root / "etc/hosts").read_text(),
        )


def test_rename(os_def: OS, named: tuple[Path, Layout], no_leaks: Path) -> None:
    image, layout = named
    result = os_def.rename(image, layout, SOURCE_NAME, "renamed.example.org")
    assert result.returncode == 0, result.stderr
    hostname, conf, hosts = names_in(image, no_leaks / "look")
    assert hostname == "renamed\n"
    assert 'hostname="renamed"' in conf and "source" not in conf
    assert "127.0.1.1\trenamed.example.org renamed" in hosts
    assert "10.0.0.7\trenamed.example.org renamed\t# its own address" in hosts
    assert "source" not in hosts


def test_rename_to_the_same_name_does_not_open_the_disk(
    os_def: OS, named: tuple[Path, Layout], no_leaks: Path
) -> None:
    image, layout = named
    before = names_in(image, no_leaks / "look")
    result = os_def.rename(image, layout, SOURCE_NAME, SOURCE_NAME)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stderr and "open the instance disk" not in result.stderr
    assert names_in(image, no_leaks / "look") == before


def test_rename_leaves_a_foreign_hostname(
    os_def: OS, named: tuple[Path, Layout], no_leaks: Path
) -> None:
    image, layout = named
    with tree(image, no_leaks / "edit", writable=True) as root:
        (root / "etc/hostname").write_text("chosen-by-admin\n")
    before = names_in(image, no_leaks / "look")
    result = os_def.rename(image, layout, SOURCE_NAME, "renamed.example.org")
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"WARNING: the guest's host name is chosen-by-admin, neither the old name "
        r"source.example.com nor the new name renamed.example.org: left as it is",
        result.stderr,
    ), result.stderr
    assert names_in(image, no_leaks / "look") == before


# --- signals ----------------------------------------------------------------------------------


def slow_tar(bindir: Path, markers: Path) -> None:
    """A ``tar`` that sends 64 KiB of the real stream, then hangs (as ``exec sleep``)."""
    bindir.mkdir()
    script = bindir / "tar"
    script.write_text(
        "#!/bin/sh\n"
        f'echo $$ > "{markers}/tar.pid"\n'
        '/usr/bin/tar "$@" | head -c 65536\n'
        f'touch "{markers}/started"\n'
        "exec sleep 600\n"
    )
    script.chmod(0o755)


def sigterm_midway(
    process: subprocess.Popen[bytes],
    script: str,
    logfile: Path,
    tmp: Path,
    started: Callable[[], bool],
) -> None:
    """Once ``started()``, with something of ours attached or mounted, SIGTERM ``script``'s
    ``process``: it must exit by that signal, say so last, and leave nothing behind."""
    try:
        deadline = time.monotonic() + 60
        while not started():
            assert process.poll() is None, logfile.read_text()
            assert time.monotonic() < deadline, f"the {script} did not get under way"
            time.sleep(0.02)
        assert leaks(tmp), f"nothing attached or mounted mid-{script}?"
        process.send_signal(signal.SIGTERM)
        try:
            # Generous: releasing waits for the kernel to free each loop device, which a
            # loaded machine does slowly.
            status = process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{script} did not end after SIGTERM:\n" + logfile.read_text())
        assert status == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = logfile.read_text()
    assert (
        text.strip()
        .splitlines()[-1]
        .endswith(f"{script}: interrupted by SIGTERM; everything it made was released")
    ), text
    assert leaks(tmp) == []


def test_sigterm_mid_export_releases_everything(os_def: OS, no_leaks: Path) -> None:
    layout = Layout("gpt", "ext4", 400, 64, 32)
    image = sparse(no_leaks / "disk.img", layout.size_mib)
    os_def.create(image, layout)
    markers = no_leaks / "markers"
    markers.mkdir()
    slow_tar(no_leaks / "bin", markers)
    env = os_def.environ(image, layout, SOURCE_NAME, EXPORT_DEVICE=str(image), EXPORT_INDEX="0")
    env["PATH"] = f"{no_leaks / 'bin'}:{env['PATH']}"
    with open(no_leaks / "out.stream", "wb") as out, open(no_leaks / "export.log", "wb") as log:
        process = os_def.installed.start("export", env, stdout=out, stderr=log)
    sigterm_midway(
        process, "export", no_leaks / "export.log", no_leaks, (markers / "started").exists
    )
    tar_pid = int((markers / "tar.pid").read_text())
    assert not Path(f"/proc/{tar_pid}").exists(), "the tar child outlived the export"


def test_sigterm_mid_import_releases_everything(os_def: OS, exported: Path, no_leaks: Path) -> None:
    """The stream stops half-way (the sender stalls); SIGTERM then releases the new disk."""
    layout = Layout("gpt", "xfs", 520, 48, 32)
    image = sparse(no_leaks / "target.img", layout.size_mib)
    env = os_def.environ(
        image, layout, "new.example.com", IMPORT_DEVICE=str(image), IMPORT_INDEX="0"
    )
    data = exported.read_bytes()
    logfile = no_leaks / "import.log"
    with open(logfile, "wb") as log:
        process = os_def.installed.start(
            "import", env, stdin=subprocess.PIPE, stdout=log, stderr=log
        )
    assert process.stdin is not None
    try:
        process.stdin.write(data[: len(data) // 2])
        process.stdin.flush()
        sigterm_midway(
            process, "import", logfile, no_leaks, lambda: "restore files ..." in logfile.read_text()
        )
    finally:
        if process.poll() is None:  # the write failed: sigterm_midway never ran
            process.kill()
            process.wait()
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()


def test_a_snapshot_whose_journal_needs_recovery_is_read_without_writing(
    os_def: OS, no_leaks: Path
) -> None:
    """A snapshot of a running ext4 instance: its journal needs recovery, the loop device is
    read-only, so the export falls back to ``ro,noload`` (and never writes to the snapshot)."""
    layout = Layout("none", "ext4", 300)
    image = sparse(no_leaks / "snapshot.img", layout.size_mib)
    os_def.create(image, layout)
    sh.debugfs("-w", "-R", "feature needs_recovery", str(image))
    before = image.read_bytes()
    exported = no_leaks / "disk0.stream"
    result, _ = os_def.export(image, exported, layout)
    assert result.returncode == 0, result.stderr
    assert "needs journal recovery; mounted with ro,noload" in result.stderr
    assert image.read_bytes() == before, "the export wrote to the snapshot"
    target = sparse(no_leaks / "target.img", 320)
    assert os_def.import_(target, exported, Layout("msdos", "ext4", 320)).returncode == 0
    with tree(target, no_leaks / "b") as b:
        assert (b / "etc/gentoo-release").read_text().startswith("Gentoo")
