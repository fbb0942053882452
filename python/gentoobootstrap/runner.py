"""Run external tools: the one place that talks to :mod:`subprocess`.

Every command is an argv list (never a shell string), runs with stdin closed
unless input is given, in a clean ``LC_ALL=C`` environment, is logged as
``+ cmd args`` (secrets redacted) and raises :class:`CommandError` carrying its
exit status and the tail of its stderr.  A child still running when an
exception (or :class:`~gentoobootstrap.errors.Interrupted`) unwinds the stack
is terminated and waited for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Optional, Union

from gentoobootstrap import confinement
from gentoobootstrap.confinement import Jail
from gentoobootstrap.errors import CommandError, ToolNotFoundError

log = logging.getLogger(__name__)

#: Where each tool the library runs comes from: its Debian package, then Gentoo's
#: package where the name differs ("NAME or CATEGORY/NAME"); a CATEGORY/NAME alone
#: is Gentoo-only.  tests/packaging checks each name against both distributions.
PACKAGES = {
    "blkid": "util-linux",
    "blockdev": "util-linux",
    "bzip2": "bzip2",
    "catalyst": "dev-util/catalyst",
    "dumpe2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "gpg": "gnupg",
    "gzip": "gzip",
    "mkfs.btrfs": "btrfs-progs",
    "mkfs.ext2": "e2fsprogs",
    "mkfs.ext3": "e2fsprogs",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mkfs.xfs": "xfsprogs",
    "mkswap": "util-linux",
    "mount": "mount or sys-apps/util-linux",
    "partx": "util-linux",
    "resize2fs": "e2fsprogs",
    "restore": "dump or app-arch/dump",
    "sfdisk": "fdisk or sys-apps/util-linux",
    "tar": "tar",
    "tune2fs": "e2fsprogs",
    "umount": "mount or sys-apps/util-linux",
    "wipefs": "util-linux",
    "xfs_admin": "xfsprogs",
    "xfs_db": "xfsprogs",
    "xfs_growfs": "xfsprogs",
    "xz": "xz-utils",
    "zstd": "zstd",
}

#: Directories searched for tools even when the caller's PATH lacks them.
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: For ``run(..., stderr=STDOUT)``: the child's stderr goes where its stdout goes.
STDOUT = subprocess.STDOUT

Input = Union[str, bytes, None]
Redirect = Union[int, IO[Any], None]


#: Tools found so far, by (search path, name): each is looked up once per search path.
_found: dict[tuple[str, str], str] = {}
#: Directories guest filesystems are mounted below (real paths): never searched for tools.
_guest_dirs: list[str] = []


def pin(guest_dir: Path) -> None:
    """Resolve every tool of :data:`PACKAGES` now, before a guest filesystem is mounted below
    ``guest_dir``; from now on no tool is looked up there.

    So a program on a guest's disk never runs on the node, whatever a guest mount covers.
    """
    _guest_dirs.append(os.path.realpath(guest_dir))
    for name in PACKAGES:
        _lookup(name)


def _in_guest(path: str) -> bool:
    return any(path == top or path.startswith(top + "/") for top in _guest_dirs)


def tool_path() -> str:
    """The PATH tools are looked up in: the caller's, then the system directories; never a
    relative directory (the working directory may be a guest's tree) nor one below a guest
    mount."""
    path = os.environ.get("PATH", "")
    entries = f"{path}:{_SYSTEM_PATH}" if path else _SYSTEM_PATH
    return ":".join(
        entry
        for entry in entries.split(":")
        if os.path.isabs(entry) and not _in_guest(os.path.normpath(entry))
    )


def environment(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """A clean environment for a child: PATH and ``LC_ALL=C``, plus ``extra``."""
    env = {"PATH": tool_path(), "LC_ALL": "C"}
    if extra:
        env.update(extra)
    return env


def _lookup(name: str) -> Optional[str]:
    path = tool_path()
    found = _found.get((path, name))
    if found is None:
        found = shutil.which(name, path=path)
        if found is None or _in_guest(os.path.realpath(found)):
            return None
        _found[path, name] = found
    return found


def find_tool(name: str) -> str:
    """The absolute path of ``name``, or :class:`ToolNotFoundError` naming its package."""
    found = _lookup(name)
    if found is None:
        raise ToolNotFoundError(name, PACKAGES.get(name))
    return found


def have_tool(name: str) -> bool:
    return _lookup(name) is not None


def _render(argv: Sequence[str], redact: Sequence[str]) -> str:
    words = []
    for word in argv:
        for secret in redact:
            if secret:
                word = word.replace(secret, "***")
        words.append(shlex.quote(word))
    return "+ " + " ".join(words)


def _resolve(argv: Sequence[Union[str, Path]]) -> list[str]:
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("empty command")
    if "/" not in args[0]:
        args[0] = find_tool(args[0])
    return args


_PR_SET_PDEATHSIG = 1
#: The exit status of a child that could not be confined to its jail (as a shell's for a
#: command it cannot run).
CONFINEMENT_FAILED = 126


def _dies_with(parent: int) -> None:
    """In the child, before it runs the tool: be killed when the script dies, even by SIGKILL,
    so no child outlives it holding its mount namespace (and so its loop devices) alive."""
    confinement.LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the script died before the line above took effect
        os._exit(1)


def _child_setup(tool: str, jail: Optional[Jail]) -> Callable[[], None]:
    parent = os.getpid()
    if jail is None:
        return lambda: _dies_with(parent)
    tops, last_cap = confinement.programs(tool), confinement.last_capability()

    def setup() -> None:
        _dies_with(parent)
        try:
            confinement.enter(jail, tops, last_cap)
        except OSError as e:  # told on stderr, which the caller's error carries
            os.write(2, f"cannot confine {tool}: {e.strerror}\n".encode())
            os._exit(CONFINEMENT_FAILED)

    return setup


def _start(args: list[str], jail: Optional[Jail], **kwargs: Any) -> subprocess.Popen[Any]:
    """Popen ``args``; in a ``jail`` that lacks what the tool needs (its interpreter, a
    library), the failed exec is the command's error, like a jail that cannot be made."""
    try:
        return subprocess.Popen(args, preexec_fn=_child_setup(args[0], jail), **kwargs)
    except OSError as e:
        if jail is None:
            raise
        raise CommandError(
            args, CONFINEMENT_FAILED, f"cannot run {args[0]} confined: {e.strerror}"
        ) from None


def _stop(proc: subprocess.Popen[Any]) -> None:
    """Terminate a child that is still running and reap it (kill after 10 s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(
    argv: Sequence[Union[str, Path]],
    *,
    input: Input = None,
    stdin: Redirect = None,
    stdout: Redirect = subprocess.PIPE,
    stderr: Redirect = subprocess.PIPE,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[Path] = None,
    check: bool = True,
    redact: Sequence[str] = (),
    text: bool = True,
    jail: Optional[Jail] = None,
) -> subprocess.CompletedProcess[Any]:
    """Run ``argv`` to completion and return its result (stdout captured by default).

    stderr is captured for the error (unless redirected); on success it is logged at debug level.
    Raises :class:`CommandError` on a non-zero exit unless ``check`` is false.  With a
    ``jail``, the child runs confined to it (:mod:`confinement`; ``cwd`` is its work tree).
    """
    args = _resolve(argv)
    log.debug("%s", _render(args, redact))
    if input is not None:
        stdin = subprocess.PIPE
        if text and isinstance(input, bytes):
            input = input.decode()
        elif not text and isinstance(input, str):
            input = input.encode()
    elif stdin is None:
        stdin = subprocess.DEVNULL
    proc = _start(
        args,
        jail,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=environment(env),
        cwd=cwd,
        text=text,
        errors="replace" if text else None,
    )
    try:
        out, err = proc.communicate(input)
    except BaseException:
        _stop(proc)
        raise
    err_text = err if isinstance(err, str) else (err or b"").decode(errors="replace")
    if err_text.strip():
        log.debug("%s", err_text.rstrip())
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, err_text)
    return subprocess.CompletedProcess(args, proc.returncode, out, err_text)


def output(argv: Sequence[Union[str, Path]], **kwargs: Any) -> str:
    """Run ``argv`` and return its stdout, stripped."""
    return str(run(argv, **kwargs).stdout).strip()


@contextlib.contextmanager
def spawn(
    argv: Sequence[Union[str, Path]],
    *,
    stdin: Redirect = None,
    stdout: Redirect = None,
    stderr: Redirect = None,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[Path] = None,
    redact: Sequence[str] = (),
    jail: Optional[Jail] = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` for streaming (binary pipes); on leaving, wait for it and check it.

    If the body raises, the child is terminated and reaped.  stderr goes to a
    temporary file so a chatty child can never block on a full pipe (or to
    ``stderr`` when given: then the caller keeps it, and the error carries none).
    With a ``jail``, the child runs confined to it, as for :func:`run`.
    """
    args = _resolve(argv)
    log.debug("%s", _render(args, redact))
    with tempfile.TemporaryFile() as errfile:
        proc = _start(
            args,
            jail,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=stdout,
            stderr=errfile if stderr is None else stderr,
            env=environment(env),
            cwd=cwd,
        )
        try:
            try:
                yield proc
            except BaseException:
                _stop(proc)
                raise
            try:
                returncode = proc.wait()
            except BaseException:
                _stop(proc)
                raise
        finally:
            # The pipes we made are ours to close (as Popen's own context manager does).
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        if returncode != 0:
            errfile.seek(0)
            raise CommandError(args, returncode, errfile.read().decode(errors="replace"))


def reading_from(
    argv: Sequence[Union[str, Path]], **kwargs: Any
) -> contextlib.AbstractContextManager[int]:
    """:func:`spawn` ``argv`` with its stdout on a pipe; yield the pipe's end to read.

    Only the child holds the other end: when it dies, the reader sees the end of the data.
    """
    return _piped(argv, feed=False, **kwargs)


def writing_to(
    argv: Sequence[Union[str, Path]], **kwargs: Any
) -> contextlib.AbstractContextManager[int]:
    """:func:`spawn` ``argv`` with its stdin on a pipe; yield the pipe's end to write.

    That end is closed when the body ends, so the child sees the end of its input before it
    is waited for; when the child dies, writing fails with BrokenPipeError.
    """
    return _piped(argv, feed=True, **kwargs)


@contextlib.contextmanager
def _piped(argv: Sequence[Union[str, Path]], *, feed: bool, **kwargs: Any) -> Iterator[int]:
    read_fd, write_fd = os.pipe()
    ours, theirs = (write_fd, read_fd) if feed else (read_fd, write_fd)
    try:
        with spawn(argv, stdin=theirs if feed else None, stdout=None if feed else theirs, **kwargs):
            os.close(theirs)
            theirs = -1
            yield ours
            if feed:
                os.close(ours)
                ours = -1
    finally:
        for fd in (ours, theirs):
            if fd >= 0:
                os.close(fd)
