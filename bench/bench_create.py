#!/usr/bin/env python3
"""Benchmark: how long create spends putting a full-size stage on the disk.

Run as root from the source tree:

    python3 bench/bench_create.py [--workdir /var/tmp/gb-bench] [--size-mib 1200]
        [--rounds 3] [--layouts msdos,none] [--fs ext4] [--no-reflink]
    python3 bench/bench_create.py --smoke     # 32 MiB, one round, in a throw-away workdir
                                              # below $TMPDIR (default /var/tmp)

It builds a realistic stage (about 1.2 GB unpacked, tens of thousands of files
with a real size mix, content that xz compresses about as well as a real
stage3) with Gentoo's skeleton (OpenRC, inittab, passwd/shadow, fstab,
os-release), packs it as the mirror does (.tar.xz) and publishes it on a
``file://`` mirror with its DIGESTS (VERIFY=checksum: no gpg needed).  First,
unmeasured ``create`` runs fill the cache as a cold node would (the stage, then
its prepared image).  Then, on the same kind of disk each time (a fresh sparse
file, page cache dropped before each run), it measures, interleaved:

  naive      ``tar xJpf`` of the mirror's .tar.xz onto a fresh filesystem on the
             whole device (what the original did), until unmounted (data on the disk)
  raw write  ``dd`` of as many bytes as the stage holds unpacked, from /dev/zero onto
             the whole device, direct I/O, synced: writing the stage's bytes once and
             reading nothing (the headline baseline)
  raw copy   ``dd`` of the same number of bytes from a file in the cache's directory
             onto the whole device, direct I/O on both sides, synced: the physical
             limit when the bytes must first be read from the node's disk, as create's
             image is (here from the very disk that is written)

  cached     raw write through the page cache (the headline baseline before create
             copied the image with direct I/O): a loop device's writes are cached
             twice, its own and its backing file's, which made dd here about four
             times slower than the disk, so that a create avoiding it looks faster
             than writing the stage's bytes once; kept to compare with earlier runs
  unpack     the real ``create`` script as Ganeti runs it (its own process, a Ganeti
             environment), cache warm, PREPARED_IMAGES=no: partition, mkfs, mount,
             check, unpack, fstab, guest configuration, unmount
  image      the same with the default PREPARED_IMAGES=yes: the root written from
             the cached image (only its used blocks), grown, given a new UUID
  reflink    the same with the disk a file on a reflink-capable filesystem that
             also holds CACHE_DIR (xfs, reflink=1, on a loop device of its own):
             the image's blocks are shared into the disk file, not copied

each once per layout (msdos: root on partition 1, the default; none: the whole
device).  Create's log says which way the root got there; the bench prints it
for each run and flags a run that fell back to unpacking.  It prints the times
(median and best of the rounds), each create's ratios to naive and to both raw
baselines measured in the same run, and the durations of create's steps.  Only the
standard library and the tools of the README's set-up are used; the generated
stage is kept in the workdir and reused by the next run of the same size.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
SEED = 20261122
#: (share of files, smallest, largest) — log-uniform within each class; the largest
#: class (compilers, libLLVM-like) is grown until the stage reaches its size.
SIZE_CLASSES = ((0.55, 64, 4096), (0.35, 4096, 65536), (0.095, 65536, 1 << 20))
LARGE = (1 << 20, 40 << 20)
MIB = 1 << 20
STAMP = "20261122T170359Z"
ARCH, FLAVOR = "amd64", "openrc"
#: create's PARTITION_STYLE → the root_path Ganeti would give it.
LAYOUTS = {
    "msdos": ("/dev/vda1", "root on partition 1"),
    "gpt": ("/dev/vda1", "root on partition 1"),
    "none": ("/dev/vda", "whole device"),
}
#: Runs ``create`` exactly as the OS script does, with the library and settings of this tree.
DRIVER = """
import sys, tempfile
from pathlib import Path
sys.path.insert(0, {python!r})
from gentoobootstrap import cli, paths
conf = Path({conf!r})
paths.DEFAULTS_FILE, paths.VARIANTS_DIR, paths.OS_PATH = conf / "defaults", conf / "variants", conf
tempfile.tempdir = str(conf / "tmp")
sys.exit(cli.main("create", sys.argv[1:]))
"""


def run(*argv: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


# --- the stage -----------------------------------------------------------------------


class Content:
    """Bytes that compress and decompress like a stage's: the node's own binaries, re-cut.

    Synthetic data gets either the ratio or xz's decoding speed badly wrong (literal-
    heavy data decodes several times slower than code), so the content is the
    node's ``/usr`` read in a fixed order and cut to the stage's file sizes.  Each
    further pass over the corpus is XORed with a new byte, so xz finds no matches
    between passes that a real stage would not have.
    """

    def __init__(self, corpus_roots: tuple[str, ...] = ("/usr",), chunk: int = 64 << 20) -> None:
        self.roots = corpus_roots
        self.chunk = chunk
        self.files = _corpus(corpus_roots)
        self.buffer = b""
        self.offset = 0
        self.passes = 0

    def _refill(self, need: int) -> None:
        chunks = [self.buffer[self.offset :]]
        have = len(chunks[0])
        read = True
        while have < need:
            path = next(self.files, None)
            if path is None:
                if not read:
                    raise RuntimeError(f"no file of 256 KiB or more below {self.roots}")
                self.files, self.passes, read = _corpus(self.roots), self.passes + 1, False
                continue
            with contextlib.suppress(OSError):
                data = Path(path).read_bytes()
                if self.passes:
                    key = (self.passes * 0x9D) & 0xFF or 1
                    data = data.translate(bytes(b ^ key for b in range(256)))
                chunks.append(data)
                have += len(data)
                read = True
        self.buffer, self.offset = b"".join(chunks), 0

    def make(self, size: int) -> bytes:
        if len(self.buffer) - self.offset < size:
            self._refill(max(size, self.chunk))
        data = self.buffer[self.offset : self.offset + size]
        self.offset += size
        return data


def _corpus(roots: tuple[str, ...]) -> Iterator[str]:
    """The big regular files below ``roots`` in a fixed order, walked only as far as needed."""
    for root in roots:
        for top, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                path = os.path.join(top, name)
                with contextlib.suppress(OSError):
                    st = os.lstat(path)
                    # big files only: reading thousands of small ones is slow; binaries are big
                    if stat.S_ISREG(st.st_mode) and st.st_size >= 256 << 10:
                        yield path


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(low * (high / low) ** rng.random())


def build_bulk(root: Path, total: int) -> tuple[int, int]:
    """A stage-shaped mass of about ``total`` bytes of files; returns (files, bytes)."""
    rng = random.Random(SEED)
    content = Content(chunk=min(total, 64 << 20))
    top = ["bin", "etc", "lib64", "sbin", "usr/bin", "usr/lib64", "usr/include", "usr/share/doc",
           "usr/share/man/man1", "usr/share/locale", "usr/lib/python3.12", "usr/libexec/gcc",
           "var/db/pkg", "usr/share/zoneinfo"]  # fmt: skip
    dirs = []
    for base in top:
        for i in range(rng.randint(20, 200)):
            d = root / base / f"d{i:03d}" / (f"sub{i % 7}" if i % 3 else "")
            dirs.append(d)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    files = written = 0
    # Small and medium files first (about 45k), then large ones up to the total.
    counts = [int(45000 * share) for share, _, _ in SIZE_CLASSES]
    plan = [
        _log_uniform(rng, low, high)
        for count, (_, low, high) in zip(counts, SIZE_CLASSES)
        for _ in range(count)
    ]
    while sum(plan) < total:
        plan.append(_log_uniform(rng, *LARGE))
    rng.shuffle(plan)
    for size in plan:
        if written >= total:
            break
        size = min(size, total - written)
        path = rng.choice(dirs) / f"f{files:05d}"
        path.write_bytes(content.make(size))
        if files % 50 == 0:
            os.chown(path, 250, 250)  # portage-owned, like /var/db/repos
        if files % 200 == 0:
            (path.parent / f"l{files:05d}").symlink_to(path.name)
        files += 1
        written += size
    return files, written


INITTAB = """\
id:3:initdefault:
si::sysinit:/sbin/openrc sysinit
rc::bootwait:/sbin/openrc boot
l0:0:wait:/sbin/openrc shutdown
l1:S1:wait:/sbin/openrc single
l3:3:wait:/sbin/openrc default
l6:6:wait:/sbin/openrc reboot
c1:12345:respawn:/sbin/agetty 38400 tty1 linux
#s0:12345:respawn:/sbin/agetty -L 9600 ttyS0 vt100
ca:12345:ctrlaltdel:/sbin/shutdown -r now
"""

#: Gentoo's skeleton as far as create's guest configuration reads it: path → (mode, content).
SKELETON = {
    "etc/gentoo-release": (0o644, "Gentoo Base System release 2.17\n"),
    "usr/lib/os-release": (0o644, 'NAME=Gentoo\nID=gentoo\nPRETTY_NAME="Gentoo Linux"\n'),
    "etc/inittab": (0o644, INITTAB),
    "etc/fstab": (0o644, "# /etc/fstab: static file system information.\n"),
    "etc/hosts": (0o644, "127.0.0.1\tlocalhost\n::1\t\tlocalhost\n"),
    "etc/conf.d/hostname": (0o644, 'hostname="localhost"\n'),
    "etc/machine-id": (0o444, "0123456789abcdef0123456789abcdef\n"),
    "etc/passwd": (0o644, "root:x:0:0:root:/root:/bin/bash\n"
                          "portage:x:250:250:portage:/var/lib/portage/home:/sbin/nologin\n"),
    "etc/group": (0o644, "root::0:root\ntty::5:\nportage::250:portage\n"),
    "etc/shadow": (0o640, "root:*:10770:0:::::\nportage:!:19000::::::\n"),
    "etc/securetty": (0o644, "console\ntty1\n"),
    "usr/share/zoneinfo/UTC": (0o644, "TZif2" + "\0" * 40),
    "sbin/openrc": (0o755, "\x7fELF openrc\n"),
    "sbin/init": (0o755, "\x7fELF sysvinit\n"),
    "sbin/agetty": (0o755, "\x7fELF agetty\n"),
    **{
        f"etc/init.d/{service}": (0o755, f"#!/sbin/openrc-run\n# {service}\n")
        for service in ("hostname", "net.lo", "netmount", "sshd", "local", "agetty")
    },
}  # fmt: skip
SKELETON_LINKS = {
    "etc/os-release": "../usr/lib/os-release",
    "etc/localtime": "../usr/share/zoneinfo/UTC",
    "etc/mtab": "/proc/self/mounts",
    "etc/runlevels/boot/hostname": "/etc/init.d/hostname",
    "etc/runlevels/default/netmount": "/etc/init.d/netmount",
    "etc/runlevels/default/local": "/etc/init.d/local",
}
SKELETON_DIRS = {
    "root": 0o700, "tmp": 0o1777, "var/tmp": 0o1777, "dev": 0o755, "proc": 0o755,
    "sys": 0o755, "run": 0o755, "home": 0o755, "boot": 0o755, "etc/runlevels/sysinit": 0o755,
    "etc/runlevels/shutdown": 0o755,
}  # fmt: skip


def build_skeleton(root: Path) -> None:
    """What makes the tree a Gentoo stage to create: OpenRC, inittab, shadow, fstab, ..."""
    for rel, mode in SKELETON_DIRS.items():
        (root / rel).mkdir(parents=True, exist_ok=True)
        os.chmod(root / rel, mode)
    for rel, (mode, text) in SKELETON.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, mode)
    for rel, target in SKELETON_LINKS.items():
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target)


def stage_tarball(work: Path, size: int, preset: str = "-3") -> Path:
    tarball = work / f"stage-gentoo-{size >> 20}M.tar.xz"
    if tarball.exists():
        return tarball
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    start = time.monotonic()
    files, written = build_bulk(tree, size)
    build_skeleton(tree)
    print(f"generated {files} files, {written / 1e9:.2f} GB in {time.monotonic() - start:.0f}s")
    start = time.monotonic()
    part = tarball.with_suffix(".part")
    with open(part, "wb") as out:
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*.*", "--acls",
             "-C", str(tree), "-cf", "-", "."],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        # -3, not catalyst's slower level: decoding speed hardly depends on it, and
        # compressing 1.2 GB at -6 takes most of an hour on a small CI machine.
        run("xz", "-T0", preset, "-c", stdin=tar.stdout, stdout=out)
        if tar.wait() != 0:
            raise RuntimeError("tar of the generated tree failed")
    part.rename(tarball)
    shutil.rmtree(tree)
    seconds = time.monotonic() - start
    print(f"packed {tarball.name}: {tarball.stat().st_size / 1e6:.0f} MB in {seconds:.0f}s")
    return tarball


def unpacked_size(tarball: Path) -> int:
    for line in run("xz", "--robot", "--list", tarball, stdout=subprocess.PIPE).stdout.splitlines():
        fields = line.split("\t")
        if fields[0] == "totals":
            return int(fields[4])
    raise RuntimeError("xz --list gave no totals")


def publish(mirror: Path, tarball: Path) -> None:
    """Gentoo's mirror layout: the latest file naming the dated stage, and its DIGESTS."""
    autobuilds = mirror / "releases" / ARCH / "autobuilds"
    relative = f"{STAMP}/stage3-{ARCH}-{FLAVOR}-{STAMP}.tar.xz"
    stage = autobuilds / relative
    stage.parent.mkdir(parents=True)
    os.link(tarball, stage)
    digests = []
    for title, algorithm in (("BLAKE2B", hashlib.blake2b), ("SHA512", hashlib.sha512)):
        h = algorithm()
        with open(stage, "rb") as f:
            while chunk := f.read(MIB):
                h.update(chunk)
        digests += [f"# {title} HASH", f"{h.hexdigest()}  {stage.name}"]
    stage.with_name(stage.name + ".DIGESTS").write_text("\n".join(digests) + "\n")
    (autobuilds / f"latest-stage3-{ARCH}-{FLAVOR}.txt").write_text(
        f"# Latest as of {STAMP}\n{relative} {stage.stat().st_size}\n"
    )


# --- the disk ------------------------------------------------------------------------


def drop_caches() -> None:
    """Every run starts from the disk, not from memory."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


@contextlib.contextmanager
def sparse_disk(work: Path, mib: int, image: Optional[Path] = None) -> Iterator[Path]:
    image = image or work / "disk.img"
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(mib * MIB)
    try:
        yield image
    finally:
        image.unlink(missing_ok=True)


@contextlib.contextmanager
def loop(image: Path) -> Iterator[Path]:
    device = Path(run("losetup", "--find", "--show", image, stdout=subprocess.PIPE).stdout.strip())
    try:
        yield device
    finally:
        run("losetup", "--detach", device)


def timed(action: Callable[[], object]) -> float:
    drop_caches()
    start = time.monotonic()
    action()
    return time.monotonic() - start


def mkfs(fs: str, device: Path) -> None:
    force = {"xfs": "-f", "btrfs": "-f"}.get(fs, "-F")
    run(f"mkfs.{fs}", "-q", force, device, stdout=subprocess.DEVNULL)  # btrfs notes on stdout


def naive(work: Path, disk_mib: int, fs: str, tarball: Path) -> float:
    with sparse_disk(work, disk_mib) as image, loop(image) as device:
        mkfs(fs, device)
        mnt = Path(tempfile.mkdtemp(dir=work))
        run("mount", device, mnt)
        try:

            def unpack() -> None:
                run("tar", "xJpf", tarball, "-C", mnt)
                run("umount", mnt)

            return timed(unpack)
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)
            mnt.rmdir()


def raw(
    work: Path, disk_mib: int, size: int, source: Path = Path("/dev/zero"), direct: bool = True
) -> float:
    """``dd`` of ``size`` bytes of ``source`` onto a fresh device, synced; ``direct``: with
    direct I/O (on both sides when ``source`` is a file)."""
    with sparse_disk(work, disk_mib) as image, loop(image) as device:
        count = -(-size // (4 * MIB))
        flags = ["oflag=direct"] if direct else []
        if direct and source != Path("/dev/zero"):
            flags.append("iflag=direct")
        return timed(
            lambda: run(
                "dd",
                f"if={source}",
                f"of={device}",
                "bs=4M",
                f"count={count}",
                *flags,
                "conv=fsync",
                stderr=subprocess.DEVNULL,
            )
        )


def copy_source(directory: Path, size: int) -> Path:
    """What raw copy reads: ``size`` bytes on the disk in ``directory``, none of them zero
    blocks that a thin virtual disk might keep as holes."""
    source = directory / "raw-copy-source"
    block = random.Random(SEED).randbytes(4 * MIB)
    with open(source, "wb") as out:
        for offset in range(0, size, len(block)):
            out.write(block[: size - offset])
        os.fsync(out.fileno())
    return source


def ganeti_environ(disk: Path, root_path: str) -> dict[str, str]:
    """What Ganeti's node daemon gives create for a one-disk, one-NIC KVM instance."""
    return {
        "PATH": "/sbin:/bin:/usr/sbin:/usr/bin",
        "OS_API_VERSION": "20",
        "OS_NAME": "gentoobootstrap",
        "OS_VARIANT": "default",
        "DEBUG_LEVEL": "0",
        "INSTANCE_NAME": "bench.example.com",
        "INSTANCE_OS": "gentoobootstrap+default",
        "HYPERVISOR": "kvm",
        "INSTANCE_BE_maxmem": "512",
        "INSTANCE_BE_minmem": "512",
        "INSTANCE_BE_vcpus": "1",
        "INSTANCE_HV_root_path": root_path,
        "INSTANCE_HV_serial_console": "True",
        "DISK_COUNT": "1",
        "DISK_0_PATH": str(disk),
        "DISK_0_ACCESS": "rw",
        "DISK_0_BACKEND_TYPE": "file:loop",
        "DISK_0_SIZE": str(disk.stat().st_size // MIB),
        "NIC_COUNT": "1",
        "NIC_0_MAC": "aa:00:00:12:34:56",
        "NIC_0_MODE": "bridged",
        "NIC_0_LINK": "br0",
        "NIC_0_BRIDGE": "br0",
    }


#: What each measured create is: its label, and the way create's log must say the root got
#: onto the disk ("unpacked" when it made the filesystem and unpacked the stage).
METHODS = {
    "unpack": ("unpacking (PREPARED_IMAGES=no)", "unpacked"),
    "image": ("from the prepared image", "copied the image's used blocks"),
    "reflink": (
        "image shared (reflink) on xfs file storage",
        "shared the image's blocks (reflink)",
    ),
}
IMAGE_LINE = re.compile(r"root: \S+ on \S+ from \S+ \((.+?)\), UUID")
FALLBACK_LINE = re.compile(r"root: unpacking the stage \((.+)\)$")
STEP_LINE = re.compile(r"INFO: (.+) done \((\d+\.\d)s\)$")


def root_path(log: str) -> str:
    """How create's ``log`` says the root got onto the disk."""
    for line in log.splitlines():
        if found := IMAGE_LINE.search(line):
            return found.group(1)
        if found := FALLBACK_LINE.search(line):
            return f"unpacked ({found.group(1)})"
    return "unpacked"


def step_times(log: str) -> list[tuple[str, float]]:
    """The durations create logged for its steps, in order."""
    return [
        (found.group(1), float(found.group(2)))
        for line in log.splitlines()
        if (found := STEP_LINE.search(line))
    ]


def configure(conf: Path, mirror: Path, fs: str, layout: str, method: str, cache: Path) -> None:
    """The variant create reads (the mirror, the cache, the layout) and the driver script."""
    (conf / "variants").mkdir(parents=True, exist_ok=True)
    (conf / "tmp").mkdir(exist_ok=True)
    (conf / "variants.list").write_text("default\n")
    (conf / "variants" / "default.conf").write_text(
        f'MIRROR="{mirror.as_uri()}"\nVERIFY="checksum"\nCACHE_DIR="{cache}"\n'
        f'ARCH="{ARCH}"\nFILESYSTEM="{fs}"\nPARTITION_STYLE="{layout}"\n'
        f'CUSTOMIZE_DIR="{conf / "hooks"}"\nCOPY_RESOLV_CONF="no"\n'
        f'PREPARED_IMAGES="{"no" if method == "unpack" else "yes"}"\n'
    )
    (conf / "driver.py").write_text(DRIVER.format(python=str(REPO / "python"), conf=str(conf)))


def run_create(argv: list[str], environ: dict[str, str]) -> tuple[int, str]:
    """Run create; interrupted, it is told to stop (it releases the disk) and waited for."""
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen(argv, env=environ, stdout=subprocess.DEVNULL, stderr=log)
        try:
            status = child.wait()
        except BaseException:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
            child.wait()
            raise
        log.seek(0)
        return status, log.read()


def create(
    disk_dir: Path,
    disk_mib: int,
    conf: Path,
    fs: str,
    layout: str,
    method: str,
    mirror: Path,
    cache: Path,
) -> tuple[float, str]:
    """One create onto a fresh sparse file in ``disk_dir``: its seconds and its log."""
    configure(conf, mirror, fs, layout, method, cache)
    with sparse_disk(disk_dir, disk_mib) as image:
        environ = ganeti_environ(image, LAYOUTS[layout][0])
        if os.environ.get("BENCH_SHOW"):
            environ["DEBUG_LEVEL"] = "1"
        argv = [sys.executable, str(conf / "driver.py")]
        log = ""

        def install() -> None:
            nonlocal log
            status, log = run_create(argv, environ)
            if os.environ.get("BENCH_SHOW"):
                sys.stderr.write(log)
            if status != 0:
                sys.stderr.write(log[-4000:])
                raise SystemExit(f"create ({layout}, {method}) failed with status {status}")

        return timed(install), log


@contextlib.contextmanager
def reflink_storage(work: Path, mib: int) -> Iterator[Path]:
    """A reflink-capable file storage: xfs (reflink=1) on a loop device, mounted."""
    mnt = work / "reflink-storage"
    mnt.mkdir(exist_ok=True)
    backing = work / "reflink-storage.img"
    with sparse_disk(work, mib, backing) as image, loop(image) as device:
        run("mkfs.xfs", "-q", "-f", "-m", "reflink=1", device, stdout=subprocess.DEVNULL)
        run("mount", device, mnt)
        try:
            yield mnt
        finally:
            run("umount", mnt)
            mnt.rmdir()


def reflink_possible() -> str:
    """Why no reflink storage can be made here ("" when it can)."""
    if shutil.which("mkfs.xfs") is None:
        return "mkfs.xfs is not installed (xfsprogs)"
    if "xfs" not in Path("/proc/filesystems").read_text().split():
        with contextlib.suppress(subprocess.CalledProcessError):
            run("modprobe", "xfs", stderr=subprocess.DEVNULL)
        if "xfs" not in Path("/proc/filesystems").read_text().split():
            return "this kernel has no xfs"
    return ""


# --- main ----------------------------------------------------------------------------


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/gb-bench"))
    parser.add_argument("--size-mib", type=int, default=1200, help="unpacked stage size")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each (interleaved)")
    parser.add_argument(
        "--layouts",
        default="msdos,none",
        help="create's PARTITION_STYLEs to measure, comma-separated: msdos (the default: root "
        "on partition 1), gpt, none (the filesystem on the whole device, as naive and raw)",
    )
    parser.add_argument("--fs", default="ext4", choices=("ext2", "ext3", "ext4", "xfs", "btrfs"))
    parser.add_argument(
        "--no-reflink",
        action="store_true",
        help="do not measure create onto a file on reflink-capable storage (xfs, reflink=1)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a 32 MiB stage (xz -0), one round, in a throw-away workdir: checks the bench runs",
    )
    args = parser.parse_args()
    layouts = args.layouts.split(",")
    if not set(layouts) <= set(LAYOUTS) or len(set(layouts)) != len(layouts):
        parser.error(f"--layouts: allowed values: {', '.join(LAYOUTS)}, each once")
    if args.rounds < 1 or args.size_mib < 1:
        parser.error("--rounds and --size-mib: allowed values: 1 or more")
    if os.geteuid() != 0:
        print("bench_create.py needs root (loop devices, mkfs, mount)", file=sys.stderr)
        return 2
    # Stopped, the bench still unmounts and detaches what it made (and create does too).
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    methods = ["unpack", "image"]
    if args.no_reflink:
        print("reflink: not measured (--no-reflink)")
    elif why := reflink_possible():
        print(f"reflink: not measured ({why})")
    else:
        methods.append("reflink")
    if args.smoke:
        work = Path(
            tempfile.mkdtemp(prefix="gb-bench-smoke-", dir=os.environ.get("TMPDIR", "/var/tmp"))
        )
        try:
            return bench(work, 32, 1, layouts, methods, args.fs, preset="-0")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    return bench(args.workdir, args.size_mib, args.rounds, layouts, methods, args.fs)


def bench(
    work: Path,
    size_mib: int,
    rounds: int,
    layouts: list[str],
    methods: list[str],
    fs: str,
    preset: str = "-3",
) -> int:
    tarball = stage_tarball(work, size_mib * MIB, preset)
    size = unpacked_size(tarball)
    disk_mib = max(1024, size * 3 // MIB)
    xz = tarball.stat().st_size
    print(f"stage: {xz / 1e6:.0f} MB xz, {size / 1e9:.2f} GB unpacked, xz ratio {xz / size:.2f} "
          f"(a real amd64 stage3: about 0.22)")  # fmt: skip
    start = time.monotonic()
    run("xz", "-dc", tarball, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    print(f"xz -dc alone: {seconds:.1f}s ({size / seconds / 1e6:.0f} MB/s unpacked)")

    mirror, conf = work / "mirror", work / "conf"
    shutil.rmtree(mirror, ignore_errors=True)
    shutil.rmtree(conf, ignore_errors=True)
    publish(mirror, tarball)
    with contextlib.ExitStack() as stack:
        # Where each method's disk file and cache are: reflink needs both on its storage.
        places = {method: (work, conf / "cache") for method in methods}
        if "reflink" in methods:
            # The cache (stage, image) and one disk file, all sparse where they can be.
            storage = stack.enter_context(reflink_storage(work, disk_mib * 2 + 2 * size // MIB))
            places["reflink"] = (storage, storage / "cache")
        # Unmeasured creates fill each cache as a cold node would (copy, verify, recompress,
        # check, then make the image), so that every measured one finds it warm.
        for method in methods:
            if method == "unpack":
                continue
            disk_dir, cache = places[method]
            seconds, log = create(disk_dir, disk_mib, conf, fs, layouts[0], method, mirror, cache)
            print(f"cold create ({layouts[0]}, {method}), filling the cache: {seconds:.1f}s "
                  f"({root_path(log)})")  # fmt: skip

        # Beside the image create reads, on the same filesystem (a top-level file of the
        # cache is no entry of it).
        source = copy_source(places["image"][1], size)
        stack.callback(source.unlink)
        runs = [(layout, method) for layout in layouts for method in methods]
        results: dict[str, list[float]] = {"naive": [], "raw": [], "copy": [], "cached": []}
        paths: dict[str, list[str]] = {}
        steps: dict[str, list[tuple[str, float]]] = {}
        for _ in range(rounds):
            results["naive"].append(naive(work, disk_mib, fs, tarball))
            for layout, method in runs:
                name = f"{layout}-{method}"
                disk_dir, cache = places[method]
                seconds, log = create(disk_dir, disk_mib, conf, fs, layout, method, mirror, cache)
                results.setdefault(name, []).append(seconds)
                paths.setdefault(name, []).append(root_path(log))
                steps[name] = step_times(log)
            results["raw"].append(raw(work, disk_mib, size))
            results["copy"].append(raw(work, disk_mib, size, source))
            results["cached"].append(raw(work, disk_mib, size, direct=False))
    report(fs, disk_mib, size, rounds, runs, results, paths, steps)
    return 0


def report(
    fs: str,
    disk_mib: int,
    size: int,
    rounds: int,
    runs: list[tuple[str, str]],
    results: dict[str, list[float]],
    paths: dict[str, list[str]],
    steps: dict[str, list[tuple[str, float]]],
) -> None:
    # The median is what a node sees; the best run is what the hardware can do.
    median = {name: statistics.median(times) for name, times in results.items()}
    best = {name: min(times) for name, times in results.items()}
    labels = {
        "naive": f"naive tar xJpf onto {fs} (whole device)",
        "raw": f"raw write: dd of {size / 1e9:.2f} GB from /dev/zero (whole device, direct)",
        "copy": f"raw copy: dd of {size / 1e9:.2f} GB from the cache's disk (whole dev., direct)",
        "cached": f"raw write through the page cache: dd of {size / 1e9:.2f} GB (whole device)",
        **{
            f"{layout}-{method}": f"create {layout}, {METHODS[method][0]}"
            for layout, method in runs
        },
    }
    width = max(len(label) for label in labels.values())
    print()
    print(f"{fs} root, {disk_mib} MiB sparse disk files, {rounds} round(s), page cache dropped "
          "each run")  # fmt: skip
    print(f"{'':<{width}} {'median':>7} {'best':>7}   runs")
    for name, label in labels.items():
        times = ", ".join(f"{t:.1f}" for t in results[name])
        print(f"{label:<{width}} {median[name]:6.1f}s {best[name]:6.1f}s   {times}")
    print()
    baselines = {"naive": "naive", "raw": "raw write", "copy": "raw copy", "cached": "cached"}
    print(f"{'create':<14}", *(f"{'/ ' + title + ' median':>19} {'best':>5}"
                               for title in baselines.values()))  # fmt: skip
    for layout, method in runs:
        name = f"{layout}-{method}"
        print(f"{name:<14}", *(f"{median[name] / median[b]:19.2f} {best[name] / best[b]:5.2f}"
                               for b in baselines))  # fmt: skip
    print()
    print("how the root got onto the disk, from create's log:")
    fell_back = []
    for layout, method in runs:
        name = f"{layout}-{method}"
        seen = sorted(set(paths[name]))
        if seen != [METHODS[method][1]]:
            fell_back.append(name)
        print(f"  {name:<14} {'; '.join(seen)}")
    for name in fell_back:
        print(f"WARNING: {name} did not take the path it measures: its time is not that path's")
    print()
    print("create's steps (s, last round):")
    for layout, method in runs:
        name = f"{layout}-{method}"
        shown = ", ".join(
            f"{step} {seconds:.1f}" for step, seconds in steps[name] if seconds >= 0.1
        )
        print(f"  {name:<14} {shown}")


if __name__ == "__main__":
    sys.exit(main())
