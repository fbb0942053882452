"""Mounts as context managers: mounted on entry, unmounted on leaving, whatever happens.

A mount that fails raises before anything needs undoing (the mount is never
inside the ``try``); an unmount that fails while an error is already unwinding
is logged and does not hide that error.  A busy unmount is retried briefly,
then done lazily (detached now, freed when the last user goes) as a last resort,
with a warning.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Optional, Union

from gentoobootstrap import confinement, runner
from gentoobootstrap.errors import CommandError, Interrupted
from gentoobootstrap.resources import releasing

log = logging.getLogger(__name__)

#: Attempts before a busy unmount becomes lazy, and the growing pause between them.
UMOUNT_ATTEMPTS = 5

#: Options for a guest filesystem this script did not just make: nothing on it runs on the
#: node, gains privileges or reaches a device.
FOREIGN = ("nosuid", "nodev", "noexec")
#: Options for the filesystems create makes: hooks chroot into them and run their
#: programs there.
FRESH = ("nosuid", "nodev")


def private_namespace() -> bool:
    """Move this process (and the children it starts) into a mount namespace of its own.

    Our mounts then never appear in the node's namespace, so no other process
    (a daemon, another namespace copied from the node's) can pin them, and the
    kernel drops them even if we are killed with SIGKILL.  Loop devices are not
    namespaced: they are still released by their context managers.  Returns
    whether it worked; without the capability the script runs as before.
    """
    if confinement.LIBC.unshare(confinement.CLONE_NEWNS) != 0:
        log.debug("no private mount namespace: %s", os.strerror(ctypes.get_errno()))
        return False
    # Mounts made here must not propagate back to the node's namespace.
    runner.run(["mount", "--make-rprivate", "/"])
    return True


def is_mountpoint(path: Path) -> bool:
    """Whether ``path`` is a mount point (from /proc/self/mountinfo, octal escapes decoded)."""
    return _mounts_on(path) > 0


def _mounts_on(path: Path) -> int:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if _unescape(line.split()[4]) == target)


def _run_mount(argv: Sequence[Union[str, Path]], target: Path) -> None:
    """Run a mount command; a signal that stops it after it mounted must not leak that mount."""
    before = _mounts_on(target)
    try:
        runner.run(argv)
    except Interrupted:
        if _mounts_on(target) > before:  # signals are ignored from here on
            umount(target, recursive="--rbind" in argv)
        raise


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def umount(target: Path, *, recursive: bool = False) -> None:
    """Unmount ``target``; retry while busy, then unmount lazily as a last resort (logged)."""
    flags = ["--recursive"] if recursive else []
    argv: list[Union[str, Path]] = ["umount", *flags, target]
    delay = 0.05
    for attempt in range(1, UMOUNT_ATTEMPTS + 1):
        try:
            runner.run(argv)
            return
        except CommandError as e:
            if not is_mountpoint(target):
                return
            if attempt == UMOUNT_ATTEMPTS:
                log.warning("%s stays busy (%s); unmounting it lazily", target, e)
                runner.run(["umount", "--lazy", *flags, target])
                return
            time.sleep(delay)  # a process that used it may still be exiting
            delay *= 2


@contextlib.contextmanager
def mount(
    source: Union[Path, str],
    target: Path,
    *,
    fstype: Optional[str] = None,
    options: Sequence[str] = (),
) -> Iterator[Path]:
    """Mount ``source`` on ``target`` (an existing directory) until the block is left."""
    argv: list[Union[str, Path]] = ["mount"]
    if fstype:
        argv += ["--types", fstype]
    if options:
        argv += ["--options", ",".join(options)]
    _run_mount([*argv, source, target], target)
    with _unmounting(target, recursive=False):
        yield target


@contextlib.contextmanager
def bind(
    source: Path, target: Path, *, recursive: bool = False, readonly: bool = False
) -> Iterator[Path]:
    """Bind-mount ``source`` on ``target`` (``--rbind`` with ``recursive``, e.g. /dev, /sys)."""
    _run_mount(["mount", "--rbind" if recursive else "--bind", source, target], target)
    with _unmounting(target, recursive=recursive):
        if recursive:
            # Keep unmounts inside the target from propagating back to the node's /dev, /sys.
            runner.run(["mount", "--make-rslave", target])
        if readonly:
            runner.run(["mount", "-o", "remount,bind,ro", target])
        yield target


def _unmounting(target: Path, *, recursive: bool) -> contextlib.AbstractContextManager[None]:
    return releasing(f"the mount on {target}", lambda: umount(target, recursive=recursive))


@contextlib.contextmanager
def temporary_directory(prefix: str = "gentoobootstrap-") -> Iterator[Path]:
    """An empty directory of our own for guest mounts, removed on leaving (only if nothing is
    mounted).

    Every node tool is resolved before it is handed out (runner.pin): from then on no tool
    is looked up below it.  The mount points made in it are removed with it.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    with releasing(f"the directory {path}", lambda: _remove_directory(path)):
        runner.pin(path)
        yield path


def _remove_directory(path: Path) -> None:
    # rmdir, never rm -rf: should a mount remain, what is in it must stay untouched.
    if not is_mountpoint(path):
        for entry in path.iterdir():  # the mount points made in it
            entry.rmdir()
    path.rmdir()


#: What is mounted in a guest tree for programs that chroot into it (guest path, node
#: source): proc, then binds.
CHROOT_MOUNTS = (("/proc", "proc"), ("/sys", "/sys"), ("/dev", "/dev"), ("/dev/pts", "/dev/pts"))


@contextlib.contextmanager
def chroot_mounts(mkdir: Callable[[str], Path]) -> Iterator[None]:
    """/proc, /sys, /dev and /dev/pts in a guest tree, unmounted in reverse order on leaving.

    ``mkdir`` (a GuestRoot's) makes a guest directory, resolved inside the guest, and
    returns the name the kernel gives the directory found: mounted on that, a stage's
    /dev symlink cannot aim a mount at the node.
    """
    with contextlib.ExitStack() as stack:
        for guest_path, source in CHROOT_MOUNTS:
            where = mkdir(guest_path)
            if source == "proc":
                stack.enter_context(mount("proc", where, fstype="proc"))
            else:
                stack.enter_context(bind(Path(source), where))
        yield
