#!/usr/bin/env python3
"""Export and import throughput against plain GNU tar of the same filesystem, in the same run.

Run as root from the source tree:  python3 bench/bench_export_import.py [--fs ext4] [--mib 600]

It makes a disk image holding a root filesystem (partition style none) filled with many
small files and a few large ones, then times, best of ``--runs``:

- baseline export: ``tar --create`` of the mounted filesystem (same options as ours) piped
  to ``cat >/dev/null`` (a pipe: GNU tar skips reading files when writing to /dev/null);
- our export: the ``export`` OS script (attach read-only, mount, tar, checksum, end block),
  piped the same way;
- baseline import: ``mkfs`` + ``mount`` + ``cat | tar --extract`` + ``umount`` onto a same-size
  image, the stream from a pipe as Ganeti's import gets it, the image on a loop device as
  ours is (mkfs discards the old contents of a block device, not of a file);
- our import: the ``import`` OS script (partition, mkfs, mount, extract, check, fstab), the
  stream piped in by ``cat`` as the baseline's is (and Ganeti's is).

Every run's time ends when its images are free again (no loop device left on them): the
OS scripts return only then, and the baselines' ``mount -o loop`` would otherwise leave the
release of its loop device, and the write-back with it, outside the clock.

With ``--cold``, every run starts with the files it reads (the source image, the streams) and
the images it writes neither in the page cache nor dirty there (fsync, then
``POSIX_FADV_DONTNEED``, for those files only): an instance's disk is read from the
storage, not from the node's memory, and the stream comes from the network at Ganeti's pace.
Warm, the tree goes at memory speed and the scripts' fixed costs (starting Python, probing
the disk) weigh more than they ever do on a real node.

Runs are interleaved, best of ``--runs``.  Throughput is the filesystem's used bytes over wall
time (ours includes starting Python, attaching, partitioning, mkfs and fstab); the ratio
ours/tar should be >= 0.8.
Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
TAR = "--numeric-owner --xattrs --xattrs-include=*.* --acls"

#: Runs an OS script in-process with the library and settings of this tree.
DRIVER = """
import os, sys, tempfile
from pathlib import Path
sys.path.insert(0, {python!r})
from gentoobootstrap import cli, paths
conf = Path({conf!r})
paths.DEFAULTS_FILE, paths.VARIANTS_DIR, paths.OS_PATH = conf / "defaults", conf / "variants", conf
tempfile.tempdir = str(conf / "tmp")
sys.exit(cli.main(sys.argv[1], [], os.environ))
"""


def sh(command: str, **kwargs: object) -> None:
    subprocess.run(command, shell=True, check=True, **kwargs)  # type: ignore[call-overload]


def timed(command: str, env: dict[str, str], images: tuple[Path, ...]) -> float:
    """Wall time of ``command`` until every image is free again.

    A loop device mount's autoclear lets umount return before the kernel has released
    the device (and written back what it held); ours waits for that, so the baselines do too.
    """
    start = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True, env=env)
    for image in images:
        released(image)
    return time.monotonic() - start


def uncached(*files: Path) -> None:
    """Write ``files`` back and drop them from the page cache (they alone: others' are kept)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def attached(image: Path) -> bool:
    """Whether a loop device still has ``image`` as its backing file."""
    name = str(image.resolve())
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().strip() == name:
                return True
        except OSError:  # released while we looked
            pass
    return False


def released(image: Path, seconds: int = 60) -> None:
    """Wait (bounded) until no loop device is attached to ``image`` any more."""
    deadline = time.monotonic() + seconds
    while attached(image):
        if time.monotonic() > deadline:
            raise SystemExit(f"{image} is still attached after {seconds} s")
        time.sleep(0.002)


def fill(root: Path, mib: int) -> None:
    """About ``mib`` MiB: a third in 4-64 KiB files, the rest in 16 MiB files."""
    small = root / "usr/share/small"
    small.mkdir(parents=True)
    budget = mib * MIB // 3
    i = 0
    while budget > 0:
        size = 4096 * (1 + i % 16)
        (small / f"f{i:06d}").write_bytes(os.urandom(size))
        budget -= size
        i += 1
    big = root / "var/lib/big"
    big.mkdir(parents=True)
    for j in range(max(1, (mib * 2 // 3) // 16)):
        (big / f"b{j:03d}").write_bytes(os.urandom(16 * MIB))
    os.makedirs(root / "etc", exist_ok=True)
    (root / "etc/fstab").write_text("# fstab\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fs", default="ext4", choices=["ext2", "ext3", "ext4", "xfs", "btrfs"])
    parser.add_argument("--mib", type=int, default=600, help="data to put on the filesystem")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument(
        "--cold", action="store_true", help="each run reads its files from the storage"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-exim-", dir=os.environ.get("TMPDIR", "/var/tmp")))
    try:
        return bench(work, args.fs, args.mib, args.runs, args.cold)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work: Path, fs: str, mib: int, runs: int, cold: bool) -> int:
    disk_mib = int(mib * 1.5) + 400
    source, target, base = work / "source.img", work / "target.img", work / "base.img"
    for image in (source, target, base):
        with open(image, "wb") as f:
            f.truncate(disk_mib * MIB)
    mnt = work / "mnt"
    mnt.mkdir()
    mkfs = {"xfs": "mkfs.xfs -q -f", "btrfs": "mkfs.btrfs -q -f"}.get(fs, f"mkfs.{fs} -q -F")
    sh(f"{mkfs} {source} >/dev/null")
    sh(f"mount -o loop {source} {mnt}")
    try:
        fill(mnt, mib)
        st = os.statvfs(mnt)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
    finally:
        sh(f"umount {mnt}")
    # mount's autoclear loop device goes away asynchronously: wait, so the data is in the file.
    released(source)
    sh("sync")
    conf = work / "conf"
    (conf / "variants").mkdir(parents=True)
    (conf / "tmp").mkdir()
    (conf / "variants/default.conf").write_text(
        f'PARTITION_STYLE="none"\nFILESYSTEM="{fs}"\nBOOT_SIZE="0"\nSWAP="no"\n'
        f'CACHE_DIR="{conf}/cache"\n'
    )
    driver = work / "driver.py"
    driver.write_text(DRIVER.format(python=str(REPO / "python"), conf=str(conf)))
    env = {
        "PATH": "/sbin:/bin:/usr/sbin:/usr/bin",
        "OS_API_VERSION": "20",
        "OS_VARIANT": "default",
        "INSTANCE_NAME": "bench.example.com",
        "DISK_COUNT": "1",
        "NIC_COUNT": "0",
        "INSTANCE_HV_root_path": "/dev/vda",
        "TMPDIR": str(conf / "tmp"),
    }
    exp_env = {**env, "DISK_0_PATH": str(source), "EXPORT_DEVICE": str(source), "EXPORT_INDEX": "0"}
    imp_env = {**env, "DISK_0_PATH": str(target), "IMPORT_DEVICE": str(target), "IMPORT_INDEX": "0"}
    stream = work / "disk0.stream"
    plain = work / "plain.tar"
    py = sys.executable
    norecovery = ",norecovery" if fs == "xfs" else ""
    tar_create = (
        f"mount -o loop,ro{norecovery} {source} {mnt} && "
        f"{{ tar --create --file=- --format=posix --sparse {TAR} -C {mnt} . | cat >/dev/null; "
        f"s=$?; umount {mnt}; exit $s; }}"
    )
    ours_export = f"{py} {driver} export | cat >/dev/null"
    # mkfs on a loop device, as ours gets: on a block device mkfs also discards the old
    # contents (not on a file), which import must do too.
    tar_extract = (
        f"dev=$(losetup --find --show {base}) && {{ s=1; {mkfs} $dev >/dev/null && "
        f"mount $dev {mnt} && {{ cat {plain} | tar --extract --file=- --same-owner "
        f"--preserve-permissions {TAR} -C {mnt}; s=$?; umount {mnt}; }}; "
        f"losetup --detach $dev; exit $s; }}"
    )
    ours_import = f"cat {stream} | {py} {driver} import"
    # The streams the imports read (and a warm page cache for every run).
    sh(f"{py} {driver} export > {stream}", env=exp_env)
    if os.environ.get("BENCH_SHOW"):  # every command and step with its time, once
        sh(f"{py} {driver} export | cat >/dev/null", env={**exp_env, "DEBUG_LEVEL": "1"})
        sh(f"{py} {driver} import < {stream}", env={**imp_env, "DEBUG_LEVEL": "1"})
    sh(
        f"mount -o loop,ro{norecovery} {source} {mnt} && tar --create --file={plain} "
        f"--format=posix {TAR} -C {mnt} .; umount {mnt}"
    )
    results: dict[str, float] = {}
    # Interleaved, best of ``runs``: a busy machine slows both sides alike.
    pairs = (
        (("tar export", tar_create, env), ("our export", ours_export, exp_env)),
        (("tar import", tar_extract, env), ("our import", ours_import, imp_env)),
    )
    for round_ in range(runs):
        for pair in pairs:
            # Each side goes first every other round: what the run before left to the
            # kernel (write-back, a loop device to free) slows both alike.
            for name, command, e in pair if round_ % 2 == 0 else pair[::-1]:
                if cold:
                    uncached(source, base, target, stream, plain)
                # Waiting for the images to be free also keeps the next run from finding
                # one still attached: XFS refuses to mount a second copy of a filesystem.
                seconds = timed(f"{command} 2>/dev/null", e, (source, base, target))
                results[name] = min(seconds, results.get(name, seconds))
    print(
        f"{'cold' if cold else 'warm'}, filesystem {fs}, {used / MIB:.0f} MiB used, "
        f"stream {stream.stat().st_size / MIB:.0f} MiB"
    )
    for name, seconds in results.items():
        print(f"  {name:11s} {seconds:6.2f} s  {used / MIB / seconds:7.1f} MiB/s")
    for op in ("export", "import"):
        ratio = results[f"tar {op}"] / results[f"our {op}"]
        print(f"  {op}: ours/tar throughput = {ratio:.2f} (target >= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
