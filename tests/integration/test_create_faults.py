"""create when things go wrong: a step fails, SIGTERM or SIGKILL arrives mid-unpack.
Afterwards nothing of ours is attached or mounted, the last log line says what happened,
and a reinstall over the half-finished disk works."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_create import BOOT_SWAP_400, MIB, check_installed, create_case, run_create, sparse

from gentoobootstrap.stages import cache
from support import REPO, ganeti_environ, leaks, loop_devices_of, osdef, stage
from support.install import InstalledOS

pytestmark = pytest.mark.root


def evil_stage(path: Path, kind: str) -> Path:
    """A stage with one member that would land outside the target."""
    with tarfile.open(path, "w:xz") as tar:
        for name in ("./etc", "./etc/gentoo-release"):
            info = tarfile.TarInfo(name)
            if name == "./etc":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                data = b"Gentoo Base System release 2.17\n"
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(
            {"dotdot": "./etc/../../escaped", "absolute": "/escaped"}.get(kind, "./etc/hardlink")
        )
        if kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "../../../etc/shadow"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "hardlink"])
def test_escaping_member_fails_before_the_disk_is_touched(
    kind: str, no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    image = sparse(no_leaks / "disk.img", 320)
    bad = evil_stage(no_leaks / "evil.tar.xz", kind)
    status, log = run_create(no_leaks, monkeypatch, image, bad, capfd, boot_size=32)
    assert status == 1
    lines = log.strip().splitlines()
    # A local stage's members are checked once, as it is copied into the cache.
    assert "obtain stage failed" in lines[-2], log
    assert (
        "ERROR: create:" in lines[-1]
        and "refusing" in lines[-1]
        and "outside the target" in lines[-1]
    )
    assert not (no_leaks / "escaped").exists() and not (no_leaks.parent / "escaped").exists()
    # The disk was never touched: the sparse image holds no data at all.
    assert os.stat(image).st_blocks == 0


def write_slow_xz(bindir: Path, markers: Path) -> None:
    """An ``xz`` that works for tar's listing but, under tar's extraction (its second
    run), hands over 64 KiB and then hangs."""
    bindir.mkdir()
    script = bindir / "xz"
    script.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" --list "*) exec /usr/bin/xz "$@" ;; esac\n'
        f'if [ ! -e "{markers}/listed" ]; then\n'
        f'    touch "{markers}/listed"; exec /usr/bin/xz "$@"\n'
        "fi\n"
        "cd /\n"
        f'echo $$ > "{markers}/xz.pid"\n'
        '/usr/bin/xz "$@" | head -c 65536\n'
        f'touch "{markers}/started"\n'
        "exec sleep 600\n"
    )
    script.chmod(0o755)


def wait_for(path: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "create ended before the unpack started"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@contextlib.contextmanager
def create_stuck_in_unpack(
    tmp: Path, disk: Path, confdir: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """create on ``disk`` as Ganeti runs it, in a child whose unpack hangs (write_slow_xz);
    (the child, its log file) once the unpack is under way.  Afterwards neither the child
    nor the hanging decompressor, which outlives tar by design, is left running."""
    markers = tmp / "markers"
    markers.mkdir()
    write_slow_xz(tmp / "bin", markers)
    env = ganeti_environ(disk, DEBUG_LEVEL="1")
    env.update(
        PATH=f"{tmp / 'bin'}:{env['PATH']}",
        PYTHONPATH=f"{REPO / 'python'}:{REPO / 'tests'}",
        TMPDIR=str(confdir / "tmp"),
    )
    logfile = tmp / "create.log"
    with open(logfile, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "support.osdef", str(confdir)],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(markers / "started", process)
        yield process, logfile
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        pid_file = markers / "xz.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_sigterm_mid_unpack_releases_everything_and_reinstall_works(
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], stages: dict
) -> None:
    built: stage.Stage = stages["openrc", "xz"]
    image = sparse(no_leaks / "disk.img", 400)
    confdir = osdef.configure(
        no_leaks / "conf", stage4_file=built.tarball, boot_size=64, swap="yes", swap_size=32
    )
    with create_stuck_in_unpack(no_leaks, image, confdir) as (process, logfile):
        assert leaks(no_leaks), "nothing attached or mounted mid-unpack?"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    log = logfile.read_text()
    assert "+ " in log and "tar --extract" in log, log  # it was killed while tar ran
    assert (
        log.strip()
        .splitlines()[-1]
        .endswith("create: interrupted by SIGTERM; everything it made was released")
    ), log
    assert leaks(no_leaks) == []
    # The disk now holds a half-finished install; a reinstall must work over it.
    status, log = create_case(
        no_leaks, monkeypatch, image, built.tarball, capfd, BOOT_SWAP_400, reinstall=True
    )
    assert status == 0, log
    check_installed(no_leaks, image, BOOT_SWAP_400, built)


def test_missing_stage_touches_nothing(
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    image = sparse(no_leaks / "disk.img", 320)
    status, log = run_create(no_leaks, monkeypatch, image, no_leaks / "nope.tar.xz", capfd)
    assert status == 1
    assert "STAGE4_FILE" in log.strip().splitlines()[-1]
    assert "attach disk" not in log
    assert image.stat().st_blocks == 0 and image.stat().st_size == 320 * MIB


@pytest.mark.parametrize("size_recorded", [True, False])
def test_a_stage_too_big_for_the_disk_says_so(
    no_leaks: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    size_recorded: bool,
) -> None:
    """gzip does not tell the unpacked size: the cache counts it once, and the disk is refused
    before it is written; without it (an entry cached before sizes were recorded) the disk
    fills up mid-unpack, and that says so too."""
    work = no_leaks / "big-stage"
    work.mkdir()
    big = stage.build(work, compression="gzip", filler_mib=264)
    image = sparse(no_leaks / "disk.img", 256)
    if not size_recorded:
        monkeypatch.setattr(cache, "recorded_unpacked_size", lambda file, cache_dir: None)
    status, log = run_create(no_leaks, monkeypatch, image, big.tarball, capfd)
    assert status == 1
    last = log.strip().splitlines()[-1]
    if size_recorded:
        assert "the disk has 256 MiB but this layout needs at least" in last, log
    else:
        assert "the stage does not fit: msdos: 1 root ext4 255 MiB is full" in last, log
    assert "bigger disk" in last


def test_sigkill_mid_unpack_leaves_nothing_attached(
    installed_os: InstalledOS, no_leaks: Path, stages: dict
) -> None:
    """A job killed after its timeout: no handler runs, yet the kernel frees everything once
    the script and its children are gone (its loop devices are set to clear themselves on
    their last close, its mounts live in its own mount namespace)."""
    image = sparse(no_leaks / "disk.img", 400)
    (no_leaks / "tmp").mkdir()
    installed_os.add_variant(
        "sigkill",
        {
            "STAGE4_FILE": str(stages["openrc", "xz"].tarball),
            "CUSTOMIZE_DIR": str(no_leaks / "no-hooks"),
            "BOOT_SIZE": "64",
            "SWAP": "yes",
            "SWAP_SIZE": "32",
        },
    )
    env = ganeti_environ(image, OS_VARIANT="sigkill", TMPDIR=str(no_leaks / "tmp"))
    logfile = no_leaks / "create.log"
    with open(logfile, "wb") as out:
        process = subprocess.Popen(
            [str(installed_os.script("create"))],
            env=env,
            cwd=installed_os.os_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "unpack stage ..." not in logfile.read_text():
            assert process.poll() is None, logfile.read_text()
            assert time.monotonic() < deadline, "the unpack did not start"
            time.sleep(0.02)
        assert loop_devices_of(no_leaks), "nothing attached mid-unpack?"
        process.kill()
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # The kernel releases asynchronously, once the last user (tar finishing) is gone.
    deadline = time.monotonic() + 120
    while leaks(no_leaks):
        assert time.monotonic() < deadline, f"still attached or mounted: {leaks(no_leaks)}"
        time.sleep(0.05)


def test_a_stage_cannot_write_through_its_own_symlink(
    no_leaks: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The classic: a member ``evil -> /node/dir`` and then ``evil/pwned``.  Every name is
    clean, so the member check passes; tar itself must not write through the link."""
    canary = no_leaks / "canary"
    canary.mkdir()
    (canary / "keep").write_text("node file\n")
    before = sorted(os.listdir(canary)), (canary / "keep").read_bytes(), canary.stat().st_mtime_ns
    path = no_leaks / "evil.tar.xz"
    with tarfile.open(path, "w:xz") as tar:
        info = tarfile.TarInfo("./etc")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        info = tarfile.TarInfo("./evil")
        info.type, info.linkname = tarfile.SYMTYPE, str(canary)
        tar.addfile(info)
        info = tarfile.TarInfo("./evil/pwned")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    image = sparse(no_leaks / "disk.img", 320)
    status, log = run_create(no_leaks, monkeypatch, image, path, capfd)
    assert status == 1, log
    assert "Traceback" not in log
    assert "ERROR: create:" in log.strip().splitlines()[-1], log
    after = sorted(os.listdir(canary)), (canary / "keep").read_bytes(), canary.stat().st_mtime_ns
    assert after == before
