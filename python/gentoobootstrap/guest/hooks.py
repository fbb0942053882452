"""Customization hooks: the executables in CUSTOMIZE_DIR, run with run-parts(8) rules.

The rules are implemented here so that they hold whether or not
``run-parts`` is installed: a hook's name consists entirely of ASCII letters,
digits, underscores and hyphens (so ``grub.sh`` or ``hosts~`` are skipped),
hooks run in lexical (C locale, byte) order, and only executable regular
files (or links to them) run.  Each hook gets Ganeti's environment plus
``TARGET``, ``BLOCKDEV``, ``ROOT_DEV``, ``BOOT_DEV``, ``SWAP_DEV``, ``ESP_DEV`` and every
resolved setting, its stdin closed, with ``/proc``, ``/sys``, ``/dev`` and
``/dev/pts`` mounted in ``TARGET`` for hooks that chroot.

A hook that fails stops create, naming the hook and its last output lines.
A hook that leaves a process behind in ``TARGET`` (a daemon started in a
chroot, a shell left in a directory) would keep the filesystem busy and the
disk attached: such processes are found through ``/proc`` and killed, with a
warning, before anything is unmounted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

from gentoobootstrap import processes, runner
from gentoobootstrap.config import settings
from gentoobootstrap.config.osenv import OSEnv
from gentoobootstrap.config.settings import Settings
from gentoobootstrap.disk import mounts
from gentoobootstrap.errors import CommandError, HookError
from gentoobootstrap.guest.tree import GuestRoot
from gentoobootstrap.log import complete_step
from gentoobootstrap.resources import releasing

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_-]+")
#: Output lines of a failed hook shown in the error message.
ERROR_LINES = 3


def find(directory: Path) -> list[Path]:
    """The hooks in ``directory`` to run, in order (none when it does not exist).

    Hooks run as root, so like sudo and sshd's StrictModes this refuses a
    directory or hook (a symlinked one: the file it resolves to) that is owned
    by anyone but root or writable by group or others, and any directory above
    them through which others could swap it (not root's, or writable by group
    or others without the sticky bit).  The user running the script counts as
    root: tests run as themselves.
    """
    owners = {0, os.geteuid()}

    def check(path: Path) -> None:
        resolved = path.resolve()
        for p in (resolved, *resolved.parents):
            st = p.stat()
            above = p != resolved
            if st.st_uid not in owners:
                problem = f"is owned by uid {st.st_uid}, not root"
            elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (
                above and st.st_mode & stat.S_ISVTX
            ):
                problem = "is writable by group or others"
            else:
                continue
            where = str(p) if p == path else f"{p} ({'above' if above else 'target of'} {path})"
            raise HookError(
                f"refusing to run hooks: {where} {problem}; hooks run as root, so "
                "CUSTOMIZE_DIR, its hooks and the directories above them must be root's "
                "and writable by root only"
            )

    if not directory.is_dir():
        return []
    check(directory)
    hooks, misnamed, not_executable = [], [], []
    for name in sorted(os.listdir(directory), key=os.fsencode):
        path = directory / name
        if not _NAME.fullmatch(name):
            if path.is_file():
                misnamed.append(name)
        elif path.is_file() and os.access(path, os.X_OK):
            check(path)
            hooks.append(path)
        elif path.is_file():
            not_executable.append(name)
    if misnamed:
        log.info(
            "hooks: skipped (names may hold only letters, digits, _ and -): %s", " ".join(misnamed)
        )
    if not_executable:
        log.info("hooks: not executable, not run: %s", " ".join(not_executable))
    return hooks


def _value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


#: What a hook gets besides Ganeti's variables and the settings: name -> what it is.
HOOK_VARIABLES = {
    "TARGET": "the guest's root filesystem, mounted",
    "BLOCKDEV": "the instance's disk",
    "ROOT_DEV": "the root filesystem's device",
    "BOOT_DEV": "the /boot filesystem's device (empty without one)",
    "SWAP_DEV": "the swap partition's device (empty without one)",
    "ESP_DEV": "the EFI system partition's device (empty without one)",
}


def environment(
    env: OSEnv, resolved: Settings, places: Mapping[str, Optional[Path]]
) -> dict[str, str]:
    """Ganeti's variables, every setting (upper-case, as in the files), and ``places``: a
    path (None: there is none) for each of HOOK_VARIABLES."""
    if set(places) != set(HOOK_VARIABLES):
        raise ValueError(f"hook variables {sorted(places)}, not {sorted(HOOK_VARIABLES)}")
    out = env.hook_environment()
    for d in settings.declarations():
        out[d.key] = _value(getattr(resolved, d.field))
    out.update({name: _value(path) for name, path in places.items()})
    return out


def run(directory: Path, root: GuestRoot, env: Mapping[str, str]) -> None:
    """Run ``directory``'s hooks in ``env`` with the chroot mounts in place in ``root``."""
    hooks = find(directory)
    if not hooks:
        log.info("hooks: none to run in %s", directory)
        return
    with mounts.chroot_mounts(root.mkdir):
        run_parts(hooks, env, root.top)


def run_parts(hooks: Sequence[Path], env: Mapping[str, str], target: Path) -> None:
    """Run ``hooks`` in order; stop at the first that fails.  Leaves no process in ``target``."""
    with contextlib.ExitStack() as stack:
        # Also on a failure or a signal: nothing a hook started may keep TARGET busy.
        stack.enter_context(
            releasing(f"what the hooks left in {target}", lambda: _kill_left(target, "a hook"))
        )
        for hook in hooks:
            run_hook(hook, env)
            _kill_left(target, f"hook {hook.name}")


def _kill_left(target: Path, who: str) -> None:
    survivors = processes.kill_holders(target, who)
    if survivors:
        raise HookError(
            f"{who} left processes in {target} that do not die: "
            + ", ".join(f"{h.pid} ({h.command})" for h in survivors)
        )


def run_hook(hook: Path, env: Mapping[str, str]) -> None:
    """Run one hook; its output (stdout and stderr, interleaved) goes to the log."""
    with complete_step(f"hook {hook.name}"):
        _run_hook(hook, env)


def _run_hook(hook: Path, env: Mapping[str, str]) -> None:
    failure: Optional[CommandError] = None
    with tempfile.TemporaryFile() as out:
        try:
            # A file, not a pipe: a process the hook leaves behind may keep it open.
            with runner.spawn([hook], stdout=out, stderr=out, env=env):
                pass
        except CommandError as e:
            failure = e
        except OSError as e:  # not a script with #! nor a binary for this machine
            raise HookError(f"hook {hook} cannot be run: {e.strerror}") from None
        out.seek(0)
        lines = out.read().decode(errors="replace").splitlines()
    for line in lines:
        log.info("%s: %s", hook.name, line)
    if failure is not None:
        shown = [line.strip() for line in lines if line.strip()][-ERROR_LINES:]
        message = f"hook {hook} failed with exit status {failure.returncode}"
        if shown:
            message += ": " + " | ".join(shown)
        raise HookError(message)
