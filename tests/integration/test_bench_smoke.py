"""The benchmarks still run: each once at its smallest size (their numbers are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    # The release tarball carries the tests but not the benchmarks.
    pytest.mark.skipif(not BENCH.is_dir(), reason=f"no {BENCH} (a release tarball)"),
]


def _run(no_leaks: Path, *argv: str) -> str:
    """Run a bench with its work below the test's directory; its stdout."""
    done = subprocess.run(
        [sys.executable, str(BENCH / argv[0]), *argv[1:]],
        env={"PATH": "/sbin:/bin:/usr/sbin:/usr/bin", "TMPDIR": str(no_leaks)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert list(no_leaks.iterdir()) == [], "the bench left its workdir behind"
    return done.stdout


def test_bench_create_smoke(no_leaks: Path) -> None:
    out = _run(no_leaks, "bench_create.py", "--smoke")
    for line in (
        "naive tar xJpf onto ext4 (whole device)",
        "raw write: dd of",
        "raw copy: dd of",
        "raw write through the page cache: dd of",
        "create msdos, unpacking (PREPARED_IMAGES=no)",
        "create msdos, from the prepared image",
        "create none, from the prepared image",
        "create msdos, image shared (reflink) on xfs file storage",
        "/ naive median",
        "/ raw write median",
        "/ raw copy median",
        "/ cached median",
    ):
        assert line in out, out
    names = [f"{layout}-{method}" for layout in ("msdos", "none")
             for method in ("unpack", "image", "reflink")]  # fmt: skip
    ratios = [line.split() for line in out.splitlines() if line.startswith(("msdos-", "none-"))]
    assert [r[0] for r in ratios] == names, out
    # Its median and best against each of naive, raw write, raw copy and cached raw write.
    assert all(len(r) == 9 for r in ratios), out
    # Each create took the path it measures, as its own log says.
    for name in names:
        method = name.split("-")[1]
        path = {"unpack": "unpacked", "image": "copied the image's used blocks",
                "reflink": "shared the image's blocks (reflink)"}[method]  # fmt: skip
        assert f"  {name:<14} {path}\n" in out, out
    assert "WARNING" not in out, out


@pytest.mark.parametrize("cache", ["warm", "cold"])
def test_bench_export_import_smallest(no_leaks: Path, cache: str) -> None:
    cold = ["--cold"] if cache == "cold" else []
    out = _run(no_leaks, "bench_export_import.py", "--mib", "16", "--runs", "1", *cold)
    for line in (f"{cache}, filesystem ext4", "our export", "our import", "export: ours/tar",
                 "import: ours/tar"):  # fmt: skip
        assert line in out, out
