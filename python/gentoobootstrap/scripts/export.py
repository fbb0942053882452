"""``export``: one disk of the instance as a stream on stdout.

Disk 0 becomes the instance's tree (root, with /boot's filesystem under
``./boot``) as the stream :mod:`gentoobootstrap.disk.stream` describes, read from
filesystems mounted read-only, each on a directory of our own: tar joins the
two trees itself.  Any other disk is copied raw.  Stdout carries only the data: the
stream goes to a private copy of the real stdout and fd 1 points at stderr
meanwhile, so no stray print (ours, a library's or a child's) can corrupt it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from gentoobootstrap import log, runner
from gentoobootstrap.config.osenv import OSEnv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.disk import stream
from gentoobootstrap.errors import OSEnvError, StreamError
from gentoobootstrap.guest import installed

logger = logging.getLogger(__name__)

#: Per-filesystem entries that belong to the filesystem, not the guest (stream names).
FILESYSTEM_ENTRIES = ("./lost+found", "./boot/lost+found")


@contextlib.contextmanager
def data_stdout() -> Iterator[int]:
    """The real stdout as a private fd for the data; fd 1 is stderr until the block ends."""
    sys.stdout.flush()
    data = os.dup(1)
    os.dup2(2, 1)
    python_stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        yield data
    finally:
        sys.stdout = python_stdout
        os.dup2(data, 1)
        os.close(data)


def report_size(env: OSEnv, size: int) -> None:
    """Tell Ganeti the expected stream size on EXP_SIZE_FD (its progress and ETA use it)."""
    if env.exp_size_fd is None:
        return
    try:
        stream.write_all(env.exp_size_fd, f"{size}\n".encode())
        os.close(env.exp_size_fd)
    except OSError as e:
        logger.warning("cannot write the expected size to EXP_SIZE_FD=%d: %s", env.exp_size_fd, e)


def used_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def export_files(env: OSEnv, source: Path, out: int) -> None:
    """The instance's tree on disk ``source`` as our tar stream on ``out``."""
    with contextlib.ExitStack() as stack:
        with log.complete_step("open the instance disk read-only"):
            opened = installed.open_disk(
                stack, source, readonly=True, root_path=env.hv.get("root_path", "")
            )
        size = used_bytes(opened.target)
        fstypes = f"root:{opened.root_fstype}"
        if opened.boot_target is not None:
            size += used_bytes(opened.boot_target)
            fstypes += f" boot:{opened.boot_fstype}"
        uuids = " ".join(f"{role}:{u}" for role, found in opened.uuids().items() for u in found)
        report_size(env, size)
        header = {
            "format": stream.FORMAT_VERSION,
            "size": str(size),
            "instance": env.instance_name,
            "fstypes": fstypes,
            "uuids": uuids,
        }
        argv: list[str | Path] = [
            "tar",
            "--create",
            "--file=-",
            f"--directory={opened.private}",
            *stream.TAR_CREATE,
            *stream.header_options(header),
            *tree_options(opened),
            "--warning=no-file-ignored",  # sockets: tar cannot store them, nor should it
            *trees(opened),
        ]
        with log.complete_step(f"stream the files ({size / (1 << 20):.1f} MiB in use)"):
            count, digest = _run_tar(argv, out)
            stream.write_all(out, stream.end_block(count, digest))
        logger.info("%d bytes sent, CRC-32 %s", count + stream.BLOCK, digest)


def trees(opened: installed.InstanceDisk) -> list[str]:
    """What tar archives, relative to ``opened.private``: root, then /boot's filesystem if any."""
    return [installed.ROOT_DIR] + ([installed.BOOT_DIR] if opened.boot else [])


def tree_options(opened: installed.InstanceDisk) -> list[str]:
    """tar options that name the members of :func:`trees` as the guest sees them.

    ``root/etc`` is stored as ``./etc`` and ``boot/grub`` as ``./boot/grub``; with a /boot
    filesystem, whatever the root holds at ``/boot`` is left out (its mount point, or
    anything a guest put there).  Symlink targets are never renamed (the S flag).
    """
    root, boot = installed.ROOT_DIR, installed.BOOT_DIR

    def source(name: str) -> str:  # stream name -> name below opened.private
        if opened.boot and (name == "./boot" or name.startswith("./boot/")):
            return boot + name[len("./boot") :]
        return root + name[1:]

    excluded = [source(name) for name in FILESYSTEM_ENTRIES]
    transforms = [f"s,^{root},.,S"]
    if opened.boot:
        excluded.append(f"{root}/boot")
        transforms.append(f"s,^{boot},./boot,S")
    return [
        "--anchored",
        *(f"--exclude={name}" for name in excluded),
        *(f"--transform={expression}" for expression in transforms),
    ]


def _run_tar(argv: list[str | Path], out: int) -> tuple[int, str]:
    stream.enlarge_pipe(out)  # when stdout is a pipe (Ganeti's dd)
    with runner.reading_from(argv) as read_fd:
        stream.enlarge_pipe(read_fd)
        try:
            return stream.copy_out(read_fd, out)
        except BrokenPipeError:
            raise StreamError("the reader of the stream went away (stdout closed)") from None


def export_raw(env: OSEnv, source: Path, out: int) -> None:
    """Disk ``source`` byte for byte on ``out``."""
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        report_size(env, size)
        with log.complete_step(f"stream disk {env.disk_index} raw ({size >> 20} MiB)"):
            offset = 0
            try:
                while offset < size:
                    sent = os.sendfile(out, fd, offset, min(size - offset, 1 << 30))
                    if not sent:
                        raise StreamError(f"{source} ended after {offset} of {size} bytes")
                    offset += sent
            except BrokenPipeError:
                raise StreamError("the reader of the stream went away (stdout closed)") from None
    finally:
        os.close(fd)


def main(env: OSEnv, settings: Settings, argv: list[str]) -> None:
    source: Optional[Path] = env.device
    assert source is not None and env.disk_index is not None
    if not source.exists():
        raise OSEnvError("EXPORT_DEVICE", f"{source} does not exist")
    with data_stdout() as out:
        if env.disk_index == 0:
            export_files(env, source, out)
        else:
            export_raw(env, source, out)
    logger.info("disk %d of %s is exported", env.disk_index, env.instance_name)
