"""Boot an instance disk under qemu (software emulation) and log in on its serial console.

The serial port is qemu's stdio (pipes to us), so the test reads everything the
guest prints, types ``root`` at ``HOSTNAME login:`` and runs commands.  Every
wait is bounded and watches the output (no fixed sleeps); the messages of an
early failure — maintenance shell, kernel panic, unmountable root — fail at
once.  qemu always runs with ``-snapshot`` (the disk is never written) and is
always killed by PID when the boot ends, however it ends.

A guest may get a NIC on qemu's user networking with ``restrict=on``: it reaches
nothing beyond qemu's own DHCP server (10.0.2.x), and the node reaches its SSH
port through a forward from ``127.0.0.1``.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Optional, Union

from boot.kit import NodeKernel

#: What an early failure prints, and what it means.
FAILURES = {
    "Give root password for maintenance": "the guest stopped in a maintenance shell (fsck/fstab)",
    "Press Enter for maintenance": "the guest stopped in a maintenance shell (fsck/fstab)",
    "Kernel panic": "the kernel panicked",
    "VFS: Unable to mount root": "the kernel could not mount the root filesystem",
    "initrd failed:": "the initrd could not mount the root filesystem",
    "grub rescue>": "GRUB found neither its modules nor its configuration",
    "Login incorrect": "the guest refused the root login",
    "Password:": "the guest asks for a root password (ROOT_PASSWORD empty, the default, sets none)",
}
_FAILURE = re.compile("|".join(re.escape(f) for f in FAILURES).encode())

#: Default bound of a boot to the login prompt: about 30 s (node kernel) or 45 s
#: (GRUB) under TCG alone, up to twice that with two boots sharing two cores.
LOGIN_TIMEOUT = float(os.environ.get("BOOT_LOGIN_TIMEOUT", "180"))
COMMAND_TIMEOUT = 60.0
#: The default runlevel's services run before the getty: under TCG with two boots at once,
#: an OpenRC guest's grow service and sshd's first host keys take more than 30 s.
RUNLEVEL_TO_LOGIN = 60.0
#: How long after the login prompt sshd may take to answer (host keys made under TCG).
SSH_TIMEOUT = 120.0
#: UEFI firmware for ``boot(..., firmware="uefi")`` (Debian: ovmf): its code, read-only,
#: and the template of its variable store, copied for each boot (empty NVRAM, as Ganeti's
#: fresh firmware disk).
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")


def qemu_binary() -> Optional[str]:
    return shutil.which("qemu-system-x86_64")


class BootFailed(AssertionError):
    """The guest did not get to (or through) the expected point; carries the log's tail."""

    def __init__(self, reason: str, log: bytes, logfile: Path) -> None:
        tail = log[-3000:].decode(errors="replace").replace("\r", "")
        super().__init__(f"{reason}\n--- serial console ({logfile}), last lines ---\n{tail}")
        self.reason = reason


class Guest:
    """A running qemu: read its serial console, log in, run commands."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        logfile: Path,
        log: IO[bytes],
        ssh_port: Optional[int] = None,
        qmp_socket: Optional[Path] = None,
    ) -> None:
        self.proc = proc
        self.ssh_port = ssh_port
        self.qmp_socket = qmp_socket
        self.logfile = logfile
        self._log = log
        self._buf = bytearray()
        self._pos = 0  # everything before this was consumed by a match
        self.started = time.monotonic()
        self.login_seconds: Optional[float] = None
        self._login_at = 0

    # -- the serial line ---------------------------------------------------------------

    def _fail(self, reason: str) -> BootFailed:
        return BootFailed(reason, bytes(self._buf), self.logfile)

    def _read(self, deadline: float) -> None:
        """Read what the guest printed (waiting at most until ``deadline``)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            status = self.proc.wait()
            raise self._fail(f"qemu exited (status {status}) before the expected output")
        self._buf += chunk
        self._log.write(chunk)
        self._log.flush()

    def expect(
        self, pattern: Union[str, re.Pattern[bytes]], timeout: float, what: str = ""
    ) -> re.Match[bytes]:
        """Wait for ``pattern`` (text or bytes regex) after the last match; fail fast on errors."""
        regex = (
            pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern.encode()))
        )
        deadline = time.monotonic() + timeout
        while True:
            failure = _FAILURE.search(self._buf, self._pos)
            match = regex.search(self._buf, self._pos)
            if failure and (not match or failure.start() < match.start()):
                message = failure.group().decode()
                self._finish_line(failure.start())
                raise self._fail(f"{FAILURES[message]}: {message!r} on the serial console")
            if match:
                self._pos = match.end()
                return match
            if time.monotonic() >= deadline:
                want = what or repr(regex.pattern.decode(errors="replace"))
                raise self._fail(f"no {want} on the serial console within {timeout:.0f} s")
            self._read(deadline)

    def _finish_line(self, start: int) -> None:
        """Read on (briefly) until the line at ``start`` is complete, for the error message."""
        deadline = time.monotonic() + 2
        try:
            while b"\n" not in self._buf[start:] and time.monotonic() < deadline:
                self._read(deadline)
        except BootFailed:  # qemu exited: the line is as complete as it gets
            pass

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    # -- what the tests do ---------------------------------------------------------------

    def login(
        self, hostname: str, timeout: float = LOGIN_TIMEOUT, password: Optional[str] = None
    ) -> float:
        """Wait for ``HOSTNAME login:``, log in as root (with ``password``); return the boot time.

        Once init has entered its runlevel a getty has :data:`RUNLEVEL_TO_LOGIN` seconds
        to show its prompt, so a guest without a serial getty fails without the full wait.
        """
        prompt = re.compile(rb"(\S+) login:")
        first = self.expect(
            re.compile(prompt.pattern + rb"|INIT: Entering runlevel"), timeout, "login prompt"
        )
        if first.group(1) is None:
            first = self.expect(
                prompt,
                RUNLEVEL_TO_LOGIN,
                f"login prompt {RUNLEVEL_TO_LOGIN:.0f} s after init entered its runlevel "
                "(no getty on the serial console?)",
            )
        self._login_at = first.start()
        self.login_seconds = time.monotonic() - self.started
        shown = first.group(1).decode(errors="replace")
        if shown != hostname:
            raise self._fail(f"the login prompt names {shown!r}, expected {hostname!r}")
        self.send("root\n")
        if password is not None:
            self.expect("Password:", COMMAND_TIMEOUT, "password prompt")
            self.send(password + "\n")
        # A shell prompt ends the output ("root@inst1:~# "); "Password:" fails in expect.
        self.expect(re.compile(rb"[#$] \Z"), COMMAND_TIMEOUT, "root shell prompt")
        # No echo, and no kernel messages interleaving with command output.
        self.run("stty -echo; dmesg -n 1")
        return self.login_seconds

    def boot_failures(self) -> list[str]:
        """What the boot scripts said failed before the login prompt (kernel lines aside)."""
        text = bytes(self._buf[: self._login_at]).decode(errors="replace").replace("\r", "")
        return [
            line
            for line in text.splitlines()
            if re.search(r"fail", line, re.I) and not re.match(r"\[ *[0-9]+\.[0-9]+\]", line)
        ]

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """Run ``command`` in the root shell; return its output, raise if it fails."""
        # The markers are split by quotes so the echoed command line never matches.
        self.send(
            f"printf '%s\\n' '@@BEG''IN@@'; {command}; printf '@@%s %s@@\\n' 'EN''D' \"$?\"\n"
        )
        match = self.expect(re.compile(rb"@@BEGIN@@\r?\n(.*?)@@END (\d+)@@", re.S), timeout)
        out = match.group(1).decode(errors="replace").replace("\r", "")
        status = int(match.group(2))
        if status != 0:
            raise self._fail(f"{command!r} failed in the guest (status {status}): {out}")
        return out.strip()

    def ssh(self, key: Path, command: str, timeout: float = SSH_TIMEOUT) -> str:
        """Run ``command`` as root over SSH with ``key``; retried (bounded) until sshd answers.

        Between tries the runner waits for the guest's console (at most a second), so
        it keeps reading the serial log and notices a guest that stopped.
        """
        if self.ssh_port is None:
            raise RuntimeError("the guest was booted without a NIC")
        argv = [
            "ssh", "-i", str(key), "-p", str(self.ssh_port),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=20", "root@127.0.0.1", command,
        ]  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                proc = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                    timeout=COMMAND_TIMEOUT,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                raise self._fail(f"ssh {command!r} hung for {COMMAND_TIMEOUT:.0f} s") from None
            if proc.returncode == 0:
                return proc.stdout.strip()
            error = proc.stderr.strip()
            if proc.returncode != 255:
                raise self._fail(f"{command!r} failed over SSH (status {proc.returncode}): {error}")
            if "Permission denied" in error:
                raise self._fail(f"sshd refused root's key: {error}")
            if time.monotonic() >= deadline:
                raise self._fail(f"no SSH login as root within {timeout:.0f} s: {error}")
            self._read(min(deadline, time.monotonic() + 1))

    def qmp(self, command: str, **arguments: object) -> object:
        """Run a QMP command on qemu's monitor; return its ``return``, raise on its ``error``."""
        if self.qmp_socket is None:
            raise RuntimeError("the guest was booted without a monitor")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(COMMAND_TIMEOUT)
            sock.connect(str(self.qmp_socket))
            replies = sock.makefile("rb")
            json.loads(replies.readline())  # the greeting
            for name, args in (("qmp_capabilities", {}), (command, arguments)):
                sock.sendall(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
                while True:  # events may come before the reply
                    reply = json.loads(replies.readline())
                    if "return" in reply or "error" in reply:
                        break
                if "error" in reply:
                    raise self._fail(f"qemu's monitor refused {name}: {reply['error']}")
            return reply["return"]

    def resize_disk(self, size: int) -> None:
        """Make the disk ``size`` bytes (qemu tells the guest, as Ganeti's KVM on grow-disk).

        Under ``-snapshot`` the temporary overlay grows: the guest sees the new size, the
        image file stays as it is.
        """
        self.qmp("block_resize", device=DISK_ID, size=size)

    def check(self, condition: bool, reason: str) -> None:
        """Fail with the serial log's tail unless ``condition``."""
        if not condition:
            raise self._fail(reason)


@contextmanager
def _reserved_port() -> Iterator[int]:
    """A free port on 127.0.0.1, held (bound, not listening) until the boot ends.

    While it is held no other boot picks it; qemu's forward binds it beside this
    socket (both with SO_REUSEADDR, only qemu listens).
    """
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


#: The id qemu gives the first ``if=virtio`` drive, for the monitor's commands.
DISK_ID = "virtio0"


def _drive(path: Path) -> str:
    return "file=" + str(path).replace(",", ",,") + ",if=virtio,format=raw"


@contextmanager
def boot(
    disk: Path,
    workdir: Path,
    *,
    kernel: Optional[NodeKernel] = None,
    append: str = "root=/dev/vda1 ro",
    memory_mib: int = 512,
    nic_mac: Optional[str] = None,
    firmware: str = "bios",
    monitor: bool = False,
) -> Iterator[Guest]:
    """Boot ``disk`` (read-only: ``-snapshot``) from a node kernel or from its own boot loader.

    With ``kernel`` it is Ganeti KVM's ``kernel_path`` mode (``append`` plus the
    serial console and ``panic=1``); without, the firmware boots the disk: SeaBIOS, or
    OVMF with ``firmware="uefi"``.  With ``nic_mac`` the guest has a virtio NIC with that
    MAC on restricted user networking, its port 22 forwarded from
    ``127.0.0.1:Guest.ssh_port``.  With ``monitor`` qemu's QMP monitor listens on
    ``workdir/qmp.sock`` (``Guest.qmp``).  The serial log is ``workdir/serial.log``,
    qemu's own messages ``workdir/qemu.log``.
    """
    qemu = qemu_binary()
    if qemu is None:
        raise RuntimeError("qemu-system-x86_64 not found: install qemu-system-x86")
    argv = [
        qemu, "-accel", "tcg", "-m", str(memory_mib),
        "-display", "none", "-nodefaults", "-no-reboot", "-snapshot",
        "-chardev", "stdio,id=serial0,signal=off", "-serial", "chardev:serial0",
        "-drive", _drive(disk),
    ]  # fmt: skip
    if firmware == "uefi":
        variables = workdir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, variables)
        for unit, (image, readonly) in enumerate(((OVMF_CODE, ",readonly=on"), (variables, ""))):
            path = str(image).replace(",", ",,")
            argv += ["-drive", f"if=pflash,format=raw,unit={unit}{readonly},file={path}"]
    if kernel is not None:
        argv += ["-kernel", str(kernel.vmlinuz), "-initrd", str(kernel.initrd)]
        argv += ["-append", f"{append} console=ttyS0,115200 panic=1"]
    logfile, qemu_log = workdir / "serial.log", workdir / "qemu.log"
    with _reserved_port() as port, open(logfile, "wb") as log, open(qemu_log, "wb") as errors:
        if nic_mac is not None:
            forward = f"hostfwd=tcp:127.0.0.1:{port}-:22"
            argv += ["-netdev", f"user,id=net0,restrict=on,{forward}"]
            argv += ["-device", f"virtio-net-pci,netdev=net0,mac={nic_mac}"]
        qmp_socket = workdir / "qmp.sock" if monitor else None
        if qmp_socket is not None:
            argv += ["-qmp", f"unix:{qmp_socket},server=on,wait=off"]
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, cwd=workdir
        )
        try:
            yield Guest(proc, logfile, log, port if nic_mac is not None else None, qmp_socket)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    try:
                        pipe.close()
                    except BrokenPipeError:
                        pass
