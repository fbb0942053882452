"""``import``: one disk of the instance from the stream on stdin.

Disk 0: the stream's format is told from its first bytes before the disk is
touched; then the disk is partitioned and its filesystems made per the
*current* settings and ``filesystem`` parameter (the disk steps of :mod:`install`,
as create's: the new disk may be larger or smaller, the filesystem may differ), the
files restored faithfully, and /etc/fstab rewritten for the new UUIDs.  The rest of
the guest stays as it was: no guest configuration and no hooks run (the imported
system is already configured; Ganeti's rename after the import updates its name).
Other disks are restored raw.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import IO

from gentoobootstrap import confinement, runner
from gentoobootstrap.config.osenv import OSEnv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.disk import devices, filesystems, fstab, layout, mounts, stream
from gentoobootstrap.errors import CommandError, OSEnvError, StreamError
from gentoobootstrap.log import printable
from gentoobootstrap.scripts import install
from gentoobootstrap.scripts.install import (
    Attached,
    Install,
    Mounted,
    Partitioned,
    Planned,
    step,
)

logger = logging.getLogger(__name__)

STDIN = 0


def read_stream_head(ctx: Install[None]) -> Install[stream.Head]:
    head = stream.read_head(STDIN)
    size = head.size
    what = {"gentoobootstrap": "an export of this OS", "tar": "a tar archive (not ours: no "
            "size check, no checksum)", "dump": "a dump(8) stream (restore -r)"}  # fmt: skip
    source = printable(head.header.get("instance", "?"))
    files = f", {size >> 20} MiB of files from {source}" if size else ""
    logger.info("stream: %s%s", what[head.format], files)
    if head.format == "dump":
        runner.find_tool("restore")
    return Install(ctx.env, ctx.settings, ctx.stack, ctx.source, head)


def check_disk(ctx: Attached[stream.Head]) -> Planned[stream.Head]:
    return install.check_disk(ctx, ctx.job.size)


#: The only things restore says that are no error (after its "/sbin/restore: "): the new
#: filesystem already holds lost+found and the mount points of the other partitions
#: (/boot, /efi), and a node script has no terminal to ask on (-y answers).
_MADE = "|".join(re.escape(m.lstrip("/")) for m in layout.MOUNTPOINTS.values() if m != "/")
RESTORE_HARMLESS = re.compile(rf"\./(lost\+found|{_MADE}): File exists|cannot open /dev/tty: .*")


def mount_filesystems(ctx: Partitioned[stream.Head]) -> Mounted[stream.Head]:
    """As create mounts them, and noexec too: no hook runs in an import, and nothing the
    stream brings may run from there."""
    return install.mount_filesystems(ctx, mounts.FOREIGN)


def restore_files(ctx: Mounted[stream.Head]) -> None:
    """The stream's files onto the new filesystems, by an extractor that sees nothing else
    of the node (:mod:`confinement`): the stream is as untrusted as the exported disk.

    restore runs with only the capabilities that restoring files needs; tar keeps root's
    (it restores every attribute the export kept, ``trusted.*`` ones included).
    """
    head = ctx.job
    if head.format == "dump":
        argv: list[str | Path] = ["restore", "-r", "-y", "-f", "-"]
        keep: frozenset[int] | None = confinement.RESTORING
    else:
        argv = ["tar", "--extract", "--file=-", *stream.TAR_EXTRACT]
        keep = None
    name = "restore" if head.format == "dump" else "tar"
    hold_back = stream.BLOCK if head.format == "gentoobootstrap" else 0
    stream.enlarge_pipe(STDIN)  # when stdin is a pipe
    received = None
    # restore keeps its work files in TMPDIR under names from the dump's date: a private
    # directory, so neither another import of the same dump nor a local user can collide.
    with tempfile.TemporaryFile() as errors, tempfile.TemporaryDirectory() as private:
        jail = confinement.Jail.below(Path(private), ctx.target, keep)
        try:
            with runner.writing_to(
                argv, stderr=errors, env={"TMPDIR": confinement.SCRATCH}, jail=jail
            ) as write_fd:
                stream.enlarge_pipe(write_fd)
                received = stream.copy_in(head.block, STDIN, write_fd, hold_back=hold_back)
            if hold_back:
                stream.check_end(received.end, received.count, received.digest)
        except CommandError as e:
            said = _complaints(errors)
            if received is not None and hold_back:
                # A damaged stream is the clearer error; an intact one leaves tar's (disk
                # full...).
                stream.check_end(received.end, received.count, received.digest)
                raise CommandError(e.argv, e.returncode, "\n".join(said)) from None
            tail = " | ".join(said[-3:])
            raise StreamError(
                f"{name} cannot restore the stream (truncated or corrupt?): {tail}"
            ) from None
        # restore goes on after errors (-y) and still exits 0: its messages tell.
        complaints = _complaints(errors) if head.format == "dump" else []
        if complaints:
            raise StreamError(f"restore failed on the stream: {' | '.join(complaints[:3])}")
    assert received is not None
    if head.format == "dump":
        ctx.root.unlink("/restoresymtable")
    logger.info("%d bytes restored", received.count)


def _complaints(errors: IO[bytes]) -> list[str]:
    """The lines the extractor wrote to ``errors`` (harmless ones left out), made printable:
    they name the stream's files."""
    errors.seek(0)
    lines = [line.strip() for line in errors.read().decode(errors="replace").splitlines()]
    return [
        printable(line)
        for line in lines
        if line and not RESTORE_HARMLESS.fullmatch(re.sub(r"^\S*restore: ", "", line))
    ]


def rewrite_fstab(ctx: Mounted[stream.Head]) -> None:
    """The imported fstab with the new disk's root, /boot and swap; every other line kept."""
    new = install.fstab_entries(ctx)
    old = {
        "UUID=" + item.split(":", 1)[1]
        for item in ctx.job.header.get("uuids", "").split()
        if item.startswith("swap:")
    }
    root = ctx.root
    original = root.read_text("/etc/fstab")
    times = root.stat("/etc") if root.is_dir("/etc") else None
    if original is None:
        logger.warning("the imported system has no /etc/fstab; writing a new one")
        root.write_text("/etc/fstab", fstab.render(list(new.values())))
    else:
        root.write_text("/etc/fstab", fstab.rewrite(original, new, old))
    if times is not None:  # the new fstab is the only change: /etc keeps its times
        root.set_times("/etc", ns=(times.st_atime_ns, times.st_mtime_ns))


def remake_swap_file(ctx: Mounted[stream.Head]) -> None:
    """The guest's swap file (``SWAP_FILE``, when its fstab swaps on it) allocated afresh.

    The kernel swaps only to a file without holes, and on btrfs only to a NOCOW one: a
    file restored from a stream may be neither.  Its size stays; root's times too.
    """
    root = ctx.root
    found = root.stat(filesystems.SWAP_FILE, follow=False)
    swaps = {
        fstab.normal_source(line.source)
        for line in map(fstab.parse_line, (root.read_text("/etc/fstab") or "").splitlines())
        if line is not None and line.fstype == "swap"
    }
    if found is None or not stat.S_ISREG(found.st_mode) or filesystems.SWAP_FILE not in swaps:
        return
    times = root.stat("/")
    assert times is not None
    root.unlink(filesystems.SWAP_FILE)
    uuid = install.add_swap_file(root, ctx.layout.root.fstype, found.st_size)
    root.set_times("/", ns=(times.st_atime_ns, times.st_mtime_ns))
    logger.info("swap: %s allocated again, %d bytes, UUID %s", filesystems.SWAP_FILE,
                found.st_size, uuid)  # fmt: skip


def import_raw(env: OSEnv, target: Path) -> None:
    """Stdin byte for byte onto disk ``target``; more than the disk holds is an error."""
    fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
        count = 0
        buffer = bytearray(stream.CHUNK)
        while True:
            n = os.readv(STDIN, [buffer])
            if not n:
                break
            if count + n > size:
                raise StreamError(
                    f"the stream is larger than disk {env.disk_index} ({size} bytes): "
                    "give the instance a disk at least as big as the exported one"
                )
            stream.write_all(fd, memoryview(buffer)[:n])
            count += n
        os.fsync(fd)
    finally:
        os.close(fd)
    logger.info("%d bytes written to disk %d", count, env.disk_index)


def import_files(env: OSEnv, settings: Settings, device: Path) -> None:
    """Disk 0: the stream's files on a disk partitioned anew, their fstab rewritten."""
    with install.session(env, settings, device) as start:
        prepared = step(read_stream_head, start)
        attached = step(install.attach_disk, prepared)
        planned = step(check_disk, attached)
        partitioned = step(install.partition_disk, planned)
        step(install.make_filesystems, partitioned)
        mounted = step(mount_filesystems, partitioned)
        step(restore_files, mounted)
        step(remake_swap_file, mounted)
        step(rewrite_fstab, mounted)


def main(env: OSEnv, settings: Settings, argv: list[str]) -> None:
    assert env.device is not None and env.disk_index is not None
    if not env.device.exists():
        raise OSEnvError("IMPORT_DEVICE", f"{env.device} does not exist")
    if env.disk_index != 0:
        if devices.is_block_device(env.device):
            devices.check_unused(env.device)
        import_raw(env, env.device)
    else:
        import_files(env, settings, env.device)
    logger.info("disk %d of %s is imported", env.disk_index, env.instance_name)
