"""Benchmark: how long create spends putting a full-size stage on the disk.

Run as root:  python bench/bench_create.py [--workdir /var/tmp/gb-bench] [--size-mib 1200]

It builds a realistic stage (about 1.2 GB unpacked, tens of thousands of files
with a real size mix, content that xz compresses about as well as a real
stage3), packs it as the mirror does (.tar.xz), publishes it on a signed
``file://`` mirror and fills the cache with ``gentoobootstrap-fetch``'s code.
Then, on the same kind of disk each time (a loop device on a fresh sparse
file, page cache dropped before each run), it measures:

  naive   ``tar xJpf`` of the mirror's .tar.xz onto a fresh ext4 (what the
          original did), until unmounted (data on the disk)
  create  the real ``create`` (cli.main as Ganeti runs it) with the cache warm:
          partition, mkfs, mount, check, unpack, fstab, unmount — end to end
  raw     ``dd`` of as many bytes as the stage holds unpacked onto the device

and prints the three times (median and best of the interleaved rounds) and
the ratios (targets: create <= 0.5 x naive, create <= 1.5 x raw).  The
generated stage is kept in the workdir and reused by the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "python"), str(REPO / "tests")]

from gentoobootstrap import cli, paths, stages, tryit  # noqa: E402


def _test_mirror() -> Any:
    """tests/support/mirror.py (standard library only), without the test package around it,
    whose other helpers need the test tools."""
    path = REPO / "tests" / "support" / "mirror.py"
    spec = importlib.util.spec_from_file_location("bench_mirror", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_mirror = _test_mirror()
build_mirror, settings, signing_key = _mirror.build_mirror, _mirror.settings, _mirror.signing_key

SEED = 20261122
#: (share of files, smallest, largest) — log-uniform within each class; the largest
#: class (compilers, libLLVM-like) is grown until the stage reaches its size.
SIZE_CLASSES = ((0.55, 64, 4096), (0.35, 4096, 65536), (0.095, 65536, 1 << 20))
LARGE = (1 << 20, 40 << 20)
DISK_GIB = 4


def sh(*argv: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
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

    def __init__(self, rng: random.Random, corpus_roots: tuple[str, ...] = ("/usr",)) -> None:
        self.rng = rng
        self.files = sorted(
            str(p)
            for root in corpus_roots
            for p in Path(root).rglob("*")
            # big files only: reading thousands of small ones is slow, and binaries are big
            if p.is_file() and not p.is_symlink() and p.stat().st_size >= 256 << 10
        )
        self.index = 0
        self.buffer = b""
        self.offset = 0
        self.passes = 0

    def _refill(self, need: int) -> None:
        chunks = [self.buffer[self.offset :]]
        have = len(chunks[0])
        while have < need:
            if self.index == len(self.files):
                self.index, self.passes = 0, self.passes + 1
            path = self.files[self.index]
            self.index += 1
            with contextlib.suppress(OSError):
                data = Path(path).read_bytes()
                if self.passes:
                    key = (self.passes * 0x9D) & 0xFF or 1
                    data = data.translate(bytes(b ^ key for b in range(256)))
                chunks.append(data)
                have += len(data)
        self.buffer, self.offset = b"".join(chunks), 0

    def make(self, size: int) -> bytes:
        if len(self.buffer) - self.offset < size:
            self._refill(max(size, 64 << 20))
        data = self.buffer[self.offset : self.offset + size]
        self.offset += size
        return data


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(low * (high / low) ** rng.random())


def build_tree(root: Path, total: int) -> tuple[int, int]:
    """A stage-shaped tree of about ``total`` bytes; returns (files, bytes)."""
    rng = random.Random(SEED)
    content = Content(rng)
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
    budget = total
    # Small and medium files first (about 45k), then large ones up to the total.
    counts = [int(45000 * share) for share, _, _ in SIZE_CLASSES]
    plan = [
        _log_uniform(rng, low, high)
        for count, (_, low, high) in zip(counts, SIZE_CLASSES)
        for _ in range(count)
    ]
    while sum(plan) < budget:
        plan.append(_log_uniform(rng, *LARGE))
    rng.shuffle(plan)
    for size in plan:
        if written >= budget:
            break
        size = min(size, budget - written)
        path = rng.choice(dirs) / f"f{files:05d}"
        path.write_bytes(content.make(size))
        if files % 50 == 0:
            os.chown(path, 250, 250)  # portage-owned, like /var/db/repos
        if files % 200 == 0:
            (path.parent / f"l{files:05d}").symlink_to(path.name)
        files += 1
        written += size
    return files, written


def stage_tarball(work: Path, size: int) -> Path:
    tarball = work / f"stage-{size >> 20}M.tar.xz"
    if tarball.exists():
        return tarball
    tree = work / "tree"
    sh("rm", "-rf", tree)
    tree.mkdir(parents=True)
    start = time.monotonic()
    files, written = build_tree(tree, size)
    print(f"generated {files} files, {written / 1e9:.2f} GB in {time.monotonic() - start:.0f}s")
    start = time.monotonic()
    part = tarball.with_suffix(".part")
    with open(part, "wb") as out:
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(tree), "-cf", "-", "."],
            stdout=subprocess.PIPE,
        )
        # -3, not catalyst's slower level: decoding speed hardly depends on it, and
        # compressing 1.2 GB at -6 takes most of an hour on a small CI machine.
        sh("xz", "-T0", "-3", "-c", stdin=tar.stdout, stdout=out)
        assert tar.wait() == 0
    part.rename(tarball)
    sh("rm", "-rf", tree)
    seconds = time.monotonic() - start
    print(f"packed {tarball.name}: {tarball.stat().st_size / 1e6:.0f} MB in {seconds:.0f}s")
    return tarball


def unpacked_size(tarball: Path) -> int:
    for line in sh("xz", "--robot", "--list", tarball, stdout=subprocess.PIPE).stdout.splitlines():
        fields = line.split("\t")
        if fields[0] == "totals":
            return int(fields[4])
    raise RuntimeError("xz --list gave no totals")


# --- the disk ------------------------------------------------------------------------


def drop_caches() -> None:
    """Every run starts from the disk, not from memory."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


@contextlib.contextmanager
def sparse_disk(work: Path) -> Iterator[Path]:
    image = work / "disk.img"
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(DISK_GIB << 30)
    try:
        yield image
    finally:
        image.unlink(missing_ok=True)


@contextlib.contextmanager
def loop(image: Path) -> Iterator[Path]:
    device = Path(sh("losetup", "--find", "--show", image, stdout=subprocess.PIPE).stdout.strip())
    try:
        yield device
    finally:
        sh("losetup", "--detach", device)


def timed(action: object) -> float:
    drop_caches()
    start = time.monotonic()
    action()  # type: ignore[operator]
    return time.monotonic() - start


def naive(work: Path, tarball: Path) -> float:
    with sparse_disk(work) as image, loop(image) as device:
        sh("mkfs.ext4", "-q", device)
        mnt = Path(tempfile.mkdtemp(dir=work))
        sh("mount", device, mnt)
        try:

            def run() -> None:
                sh("tar", "xJpf", tarball, "-C", mnt)
                sh("umount", mnt)

            return timed(run)
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)
            mnt.rmdir()


def raw(work: Path, size: int) -> float:
    with sparse_disk(work) as image, loop(image) as device:
        count = -(-size // (4 << 20))
        return timed(
            lambda: sh(
                "dd",
                "if=/dev/zero",
                f"of={device}",
                "bs=4M",
                f"count={count}",
                "conv=fsync",
                stderr=subprocess.DEVNULL,
            )
        )


def create(work: Path) -> float:
    with sparse_disk(work) as image:
        # What Ganeti gives create for a one-disk instance (gentoobootstrap-try's own
        # environment; only the OS directory's name, OS_NAME, is taken from --os-dir).
        args = tryit.parser().parse_args([str(image), "--os-dir", f"/{paths.OS_NAME}"])
        environ = {**tryit.environment(args, image.stat().st_size), "PATH": os.environ["PATH"]}

        def run() -> None:
            status = cli.main("create", [], environ)
            if status != 0:
                raise SystemExit(f"create failed with status {status}")

        return timed(run)


# --- main ----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/gb-bench"))
    parser.add_argument("--size-mib", type=int, default=1200, help="unpacked stage size")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each (interleaved)")
    parser.add_argument(
        "--partition-style",
        default="none",
        choices=("none", "msdos", "gpt"),
        help="create's PARTITION_STYLE; none puts the filesystem on the whole device, as the "
        "naive and raw runs do (on kernels that do not scan partition tables a partition is "
        "a second loop device stacked on the first, which costs a flush of its own)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_create.py needs root (loop devices, mkfs, mount)", file=sys.stderr)
        return 2
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    tarball = stage_tarball(work, args.size_mib << 20)
    size = unpacked_size(tarball)
    ratio = tarball.stat().st_size / size
    print(f"stage: {tarball.stat().st_size / 1e6:.0f} MB xz, {size / 1e9:.2f} GB unpacked")
    print(f"xz ratio {ratio:.2f} (a real amd64 stage3: about 0.22)")

    start = time.monotonic()
    sh("xz", "-dc", tarball, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    print(f"xz -dc alone: {seconds:.1f}s ({size / seconds / 1e6:.0f} MB/s unpacked)")

    # A signed file:// mirror and a variant pointing at it; fill the cache as cron would.
    conf = work / "conf"
    (conf / "variants").mkdir(parents=True, exist_ok=True)
    (conf / "variants.list").write_text("default\n")
    with signing_key() as key:
        mirror = work / "mirror"
        sh("rm", "-rf", mirror)
        build_mirror(mirror, tarball, key)
        keyring = key.export(work / "keys.asc")
    cache_dir = work / "cache"
    sh("rm", "-rf", cache_dir)
    (conf / "variants" / "default.conf").write_text(
        f'MIRROR="{mirror.as_uri()}"\nKEYRING="{keyring}"\nCACHE_DIR="{cache_dir}"\nARCH="amd64"\n'
        f'PARTITION_STYLE="{args.partition_style}"\n'
    )
    paths.DEFAULTS_FILE = conf / "defaults"
    paths.VARIANTS_DIR = conf / "variants"
    paths.OS_PATH = conf
    start = time.monotonic()
    cached = stages.obtain(settings(mirror.as_uri(), cache_dir, keyring))
    print(f"cache fill (copy, verify, recompress): {time.monotonic() - start:.1f}s -> "
          f"{cached.name}, {cached.stat().st_size / 1e6:.0f} MB")  # fmt: skip

    results: dict[str, list[float]] = {"naive": [], "create": [], "raw": []}
    for _ in range(args.rounds):
        results["naive"].append(naive(work, tarball))
        results["create"].append(create(work))
        results["raw"].append(raw(work, size))
    # The median is what a node sees; the best run is what the hardware can do.
    median = {name: statistics.median(times) for name, times in results.items()}
    best = {name: min(times) for name, times in results.items()}
    print()
    print(f"{'':<34} {'median':>7} {'best':>7}   runs")
    for name, label in (
        ("naive", "naive tar xJpf of the .tar.xz"),
        ("create", "warm-cache create, end to end"),
        ("raw", f"dd of {size / 1e9:.2f} GB to the device"),
    ):
        runs = ", ".join(f"{t:.1f}" for t in results[name])
        print(f"{label:<34} {median[name]:6.1f}s {best[name]:6.1f}s   {runs}")
    print()
    for kind, values in (("median", median), ("best", best)):
        print(
            f"{kind:<6}  create / naive = {values['create'] / values['naive']:.2f} (target <= 0.5)"
            f"   create / raw = {values['create'] / values['raw']:.2f} (target <= 1.5)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
