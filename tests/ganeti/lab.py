"""A throw-away single-node Ganeti cluster inside a network namespace.

The recipe: Debian's ganeti with the fake
hypervisor, ``file`` and ``blockdev`` disk templates, a bridge with a
documentation address in a namespace of its own, name resolution through
``/etc/netns/NS/hosts``, and every ``gnt-*`` command run inside the namespace
with a clean environment (the daemons hand theirs on to the OS scripts).

Everything the lab makes is a context manager on one ExitStack, so it is torn
down in reverse order also when a test fails or the run is interrupted:
instances, cluster, daemons, namespace, loop devices, files, OS links, and the
node's ``/etc/ganeti`` and ``/var/lib/ganeti`` as they were before.

The lab's commands and daemons see only the lab's OS definitions: in their mount
namespace (``ip netns exec`` makes one, a slave of the node's) a directory of the
lab's is mounted over the first directory of Ganeti's OS search path and an empty
one over every other.  What the node has installed (this OS from ``make install``,
say) cannot change the results, and no OS is found twice: Ganeti 3.0.2's
``gnt-os diagnose`` fails on an OS present in two search directories.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
NAMESPACE = "gntlab-gentoobootstrap"
BRIDGE = "gntbr"
NODE_IP = "198.51.100.10"  # RFC 5737 documentation range: nothing routes there
CLUSTER_IP = "198.51.100.11"
DOMAIN = "ganeti.lab"
CLUSTER = f"cluster.{DOMAIN}"
#: Where Debian's Ganeti keeps its configure-time constants (OS_SEARCH_PATH among them).
GANETI_CONSTANTS = "/usr/share/ganeti/*/ganeti/_constants.py"
OS_LOG_DIR = Path("/var/log/ganeti/os")
ADOPT_ROOT = Path("/dev/disk")  # Ganeti adopts block devices only below here
#: Node state that the lab puts back as it found it.
STATE_DIRS = (Path("/etc/ganeti"), Path("/var/lib/ganeti"))
RUN_DIR = Path("/run/ganeti")
DAEMON_UTIL = "/usr/lib/ganeti/daemon-util"
LOCK_FILE = Path("/run/lock/gentoobootstrap-ganeti-lab.lock")
#: What a running lab changed on the node, kept until its teardown is complete.
RECORD_DIR = Path("/var/tmp/gentoobootstrap-ganeti-lab")
COMMAND_TIMEOUT = 900  # seconds; a create has no timeout in Ganeti, CI should not hang


class LabUnavailable(Exception):
    """This machine cannot run the lab (the reason says why); tests skip."""


@dataclass(frozen=True)
class Result:
    argv: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"$ {' '.join(self.argv)}\nexit status {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


def run(argv: Sequence[str], check: bool = True, timeout: float = COMMAND_TIMEOUT) -> Result:
    """Run ``argv`` with only PATH set, stdin closed; ``check`` asserts exit status 0."""
    p = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={"PATH": PATH},  # as `env -i PATH=...`: the daemons hand it on to OS scripts
        cwd="/",
        timeout=timeout,
        check=False,
    )
    result = Result(list(argv), p.returncode, p.stdout, p.stderr)
    if check and p.returncode != 0:
        raise AssertionError(f"command failed:\n{result}")
    return result


def skip_reason() -> Optional[str]:
    """Why this machine cannot run the lab, or None."""
    if os.geteuid() != 0:
        return "the Ganeti lab needs root"
    if not shutil.which("gnt-cluster", path=PATH):
        return "Ganeti is not installed (apt-get install ganeti socat fdisk e2fsprogs)"
    killed_lab = (RECORD_DIR / "record.json").exists()  # recover() undoes it
    if Path("/var/lib/ganeti/config.data").exists() and not killed_lab:
        return "this machine already belongs to a Ganeti cluster; the lab needs a node of its own"
    return None


def ganeti_os_search_path() -> list[Path]:
    """Ganeti's OS search path, as its build configured it."""
    for constants in sorted(Path("/").glob(GANETI_CONSTANTS.lstrip("/"))):
        found = re.search(r"^OS_SEARCH_PATH = (\[.*\])$", constants.read_text(), re.M)
        if found:
            return [Path(d) for d in json.loads(found.group(1))]
    raise LabUnavailable(f"no OS_SEARCH_PATH in {GANETI_CONSTANTS}: not Debian's Ganeti?")


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` (bounded) until it is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


# --- loop devices and mounts -------------------------------------------------------------------


def loop_devices() -> dict[str, str]:
    """Every loop device of the machine: ``/dev/loopN -> backing file``."""
    out = run(["losetup", "--list", "--noheadings", "--raw", "-O", "NAME,BACK-FILE"]).stdout
    devices = {}
    for line in out.splitlines():
        name, _, back = line.partition(" ")
        # losetup --raw escapes blanks as \x20
        devices[name] = re.sub(r" \(deleted\)$", "", back.replace("\\x20", " "))
    return devices


@contextlib.contextmanager
def loop_device(
    path: Path, read_only: bool = False, offset: int = 0, size: int = 0
) -> Iterator[str]:
    argv = ["losetup", "--find", "--show"]
    if read_only:
        argv.append("--read-only")
    if offset:
        argv += ["--offset", str(offset)]
    if size:
        argv += ["--sizelimit", str(size)]
    device = run([*argv, str(path)]).stdout.strip()
    try:
        wait_for(lambda: Path(device).exists(), f"{device} to appear")
        yield device
    finally:
        run(["losetup", "--detach", device])


def mounts(pid: str = "self") -> list[tuple[str, str]]:
    """``(source, mount point)`` of every mount in the mount namespace of ``pid``."""
    with open(f"/proc/{pid}/mounts") as f:
        return [(line.split()[0], line.split()[1]) for line in f]


@contextlib.contextmanager
def mounted(device: str, where: Path, fstype: str, writable: bool = False) -> Iterator[Path]:
    # Read-only without replaying a journal: the disk belongs to a stopped instance.
    options = {"ext3": "ro,noload", "ext4": "ro,noload", "xfs": "ro,norecovery"}.get(fstype, "ro")
    if writable:
        options = "rw"
    run(["mount", "-t", fstype, "-o", options, device, str(where)])
    try:
        yield where
    finally:
        run(["umount", str(where)])
        where.rmdir()


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type: str


def partitions(disk: Path) -> list[Partition]:
    """The disk's partition table (empty when it has none)."""
    r = run(["sfdisk", "--json", str(disk)], check=False)
    if r.returncode != 0:
        return []
    table = json.loads(r.stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    return [
        Partition(i, int(p["start"]) * sector, int(p["size"]) * sector, str(p.get("type", "")))
        for i, p in enumerate(table.get("partitions", []), 1)
    ]


def filesystem_type(device: str) -> str:
    return run(["blkid", "-p", "-o", "value", "-s", "TYPE", device], check=False).stdout.strip()


@dataclass(frozen=True)
class Guest:
    """A read-only view of an installed guest disk: every filesystem on it, mounted."""

    root: Path  # the filesystem that holds /etc
    filesystems: dict[int, tuple[str, Path]]  # partition number (0: whole disk) -> type, mount
    partitions: list[Partition]

    def fstype(self, mount: Path) -> str:
        return next(t for t, m in self.filesystems.values() if m == mount)


@contextlib.contextmanager
def guest_disk(disk: Path, workdir: Path, writable: bool = False) -> Iterator[Guest]:
    """Mount every filesystem of ``disk`` (a file or block device), read-only unless asked."""
    table = partitions(disk)
    spans = [(p.number, p.start, p.size) for p in table] or [(0, 0, 0)]
    with contextlib.ExitStack() as stack:
        filesystems = {}
        for number, start, size in spans:
            device = stack.enter_context(loop_device(disk, not writable, start, size))
            fstype = filesystem_type(device)
            if fstype in ("", "swap", "vfat"):  # vfat: the ESP (the node may lack a FAT driver)
                continue
            where = Path(tempfile.mkdtemp(dir=workdir, prefix=f"guest-{number}-"))
            mount = stack.enter_context(mounted(device, where, fstype, writable))
            filesystems[number] = (fstype, mount)
        roots = [m for _, m in filesystems.values() if (m / "etc").is_dir()]
        assert len(roots) == 1, f"{disk}: no single filesystem with /etc: {filesystems} {table}"
        yield Guest(roots[0], filesystems, table)


# --- the node's state ---------------------------------------------------------------------------


@contextlib.contextmanager
def exclusive_lab() -> Iterator[None]:
    """One lab per machine: Ganeti's state directories are the node's."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "w") as lock:
        deadline = time.monotonic() + 1800
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabUnavailable(
                        "another Ganeti lab kept the lock for 30 minutes"
                    ) from None
                time.sleep(1)
        yield


@contextlib.contextmanager
def node_state_kept(workdir: Path) -> Iterator[None]:
    """Put the node's Ganeti state back as it was (contents, owners, modes) afterwards.

    The copy and a record of what the lab changes live in RECORD_DIR, outside the
    test's temporary directory, so that :func:`recover` can undo a lab that was
    killed (SIGKILL, a power cut) before the next one starts.
    """
    record = {
        "workdir": str(workdir),
        "existed": [str(d) for d in (*STATE_DIRS, RUN_DIR) if d.exists()],
    }
    shutil.rmtree(RECORD_DIR, ignore_errors=True)  # without record.json: nothing changed yet
    try:
        for directory in STATE_DIRS:
            if directory.exists():
                copy = RECORD_DIR / directory.relative_to("/")
                copy.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                run(["cp", "-a", str(directory), str(copy)])
        (RECORD_DIR / "record.json").write_text(json.dumps(record))
    except BaseException:
        shutil.rmtree(RECORD_DIR, ignore_errors=True)
        raise
    try:
        yield
    finally:
        _restore_node_state(record)


def _restore_node_state(record: Mapping[str, Any]) -> None:
    existed = record["existed"]
    for directory in STATE_DIRS:
        shutil.rmtree(directory, ignore_errors=True)
        if str(directory) in existed:
            run(["cp", "-a", str(RECORD_DIR / directory.relative_to("/")), str(directory)])
    if str(RUN_DIR) not in existed:
        shutil.rmtree(RUN_DIR, ignore_errors=True)
    shutil.rmtree(RECORD_DIR)


def note(kind: str, path: Path) -> None:
    """Add ``path`` to the running lab's record (what :func:`recover` would remove)."""
    if RECORD_DIR.is_dir():
        with open(RECORD_DIR / kind, "a") as f:
            f.write(f"{path}\n")


def recover() -> bool:
    """Undo what a killed lab left behind (its record says what); True if there was one."""
    record_file = RECORD_DIR / "record.json"
    if not record_file.exists():
        return False
    record = json.loads(record_file.read_text())
    workdir = Path(record["workdir"])
    lab = Lab(workdir)
    if Path("/run/netns", NAMESPACE).exists():
        _stop_daemons(lab)
        run(["ip", "netns", "delete", NAMESPACE], check=False)
    held = [str(p.resolve()) for p in lab.adopt_dir.glob("*")]
    for device in [*lab.leaked_loops(), *held]:
        run(["losetup", "--detach", device], check=False)
    for path in (lab.adopt_dir, Path("/etc/netns", NAMESPACE)):
        shutil.rmtree(path, ignore_errors=True)
    made = RECORD_DIR / "made"
    for line in reversed(made.read_text().splitlines() if made.exists() else []):
        path = Path(line)
        with contextlib.suppress(OSError):  # already gone, or no longer empty: not ours
            if path.is_symlink():
                path.unlink()
            else:
                path.rmdir()
    _restore_node_state(record)
    return True


@contextlib.contextmanager
def created(path: Path) -> Iterator[Path]:
    """A directory, removed afterwards with every parent this created."""
    made = []
    for directory in reversed([path, *path.parents]):
        if not directory.exists():
            note("made", directory)
            directory.mkdir()
            made.append(directory)
    try:
        yield path
    finally:
        if made:
            shutil.rmtree(made[0], ignore_errors=True)


# --- the namespace ------------------------------------------------------------------------------


@contextlib.contextmanager
def network_namespace(name: str, hosts: dict[str, str]) -> Iterator[None]:
    """A namespace with lo, a bridge with carrier (a veth pair) and its own /etc/hosts."""
    if Path("/run/netns", name).exists():
        raise LabUnavailable(f"network namespace {name} exists, but not made by a lab")
    r = run(["ip", "netns", "add", name], check=False)
    if r.returncode != 0:
        raise LabUnavailable(f"cannot create a network namespace: {r.stderr.strip()}")
    try:
        ip = ["ip", "-n", name]
        run([*ip, "link", "set", "lo", "up"])
        for argv in (
            ["link", "add", BRIDGE, "type", "bridge"],
            ["link", "add", f"{BRIDGE}v0", "type", "veth", "peer", "name", f"{BRIDGE}v1"],
        ):
            r = run([*ip, *argv], check=False)
            if r.returncode != 0:
                raise LabUnavailable(f"kernel lacks bridge/veth: {r.stderr.strip()}")
        run([*ip, "link", "set", f"{BRIDGE}v0", "master", BRIDGE])
        run([*ip, "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE])
        for link in (f"{BRIDGE}v0", f"{BRIDGE}v1", BRIDGE):
            run([*ip, "link", "set", link, "up"])
        with created(Path("/etc/netns", name)) as etc:
            (etc / "hosts").write_text(
                "".join(f"{address} {names}\n" for address, names in hosts.items())
            )
            yield
    finally:
        run(["ip", "netns", "delete", name], check=False)


def namespace_pids(name: str) -> list[str]:
    return run(["ip", "netns", "pids", name], check=False).stdout.split()


# --- the lab ------------------------------------------------------------------------------------


@dataclass
class Lab:
    """A running single-node cluster; ``gnt()`` runs Ganeti's commands inside its namespace."""

    workdir: Path
    namespace: str = NAMESPACE
    node: str = ""
    storage_dir: Path = field(init=False)
    adopt_dir: Path = field(init=False)
    #: The lab's OS definitions, seen in place of the first OS search directory.
    os_root: Path = field(init=False)
    #: Ganeti's OS search path; the lab's processes see os_root in place of the first.
    os_search_path: list[Path] = field(default_factory=list)
    #: What one test made (adopted block devices); closed after its instances are removed.
    test_stack: contextlib.ExitStack[Optional[bool]] = field(default_factory=contextlib.ExitStack)

    def __post_init__(self) -> None:
        self.storage_dir = self.workdir / "file-storage"
        self.adopt_dir = ADOPT_ROOT / self.namespace
        self.os_root = self.workdir / "os"

    def in_namespace(self, *argv: str) -> list[str]:
        """``argv`` in the lab's namespace, seeing only the lab's OS definitions."""
        first, *others = self.os_search_path
        empty = self.workdir / "no-os"
        mounts = [f"mount --bind {shlex.quote(str(self.os_root))} {shlex.quote(str(first))}"]
        mounts += [
            f"if [ -d {quote} ]; then mount --bind {shlex.quote(str(empty))} {quote}; fi"
            for quote in (shlex.quote(str(d)) for d in others)
        ]
        script = " && ".join([*mounts, 'exec "$@"'])
        return ["ip", "netns", "exec", self.namespace, "sh", "-ec", script, "sh", *argv]

    def gnt(self, command: str, *args: str, check: bool = True) -> Result:
        """``gnt-COMMAND ARGS`` inside the namespace, e.g. ``lab.gnt("os", "diagnose")``."""
        return run(self.in_namespace(f"gnt-{command}", *args), check=check)

    def daemon_pid(self, daemon: str = "ganeti-noded") -> str:
        return (RUN_DIR / f"{daemon}.pid").read_text().strip()

    def instances(self) -> list[str]:
        return self.gnt("instance", "list", "--no-headers", "-o", "name").stdout.split()

    def remove_instances(self) -> None:
        for name in self.instances():
            self.gnt("instance", "remove", "-f", "--ignore-failures", name, check=False)

    def add_instance(
        self,
        name: str,
        os_name: str,
        template: str = "file",
        disk: str = "size=1G",
        params: Optional[dict[str, str]] = None,
        check: bool = True,
        secret: Optional[dict[str, str]] = None,
    ) -> Result:
        argv = [
            *("instance", "add", "-o", os_name, "-t", template, "--disk", f"0:{disk}"),
            *("-n", self.node, "--no-start", "--no-name-check", "--no-ip-check"),
            *("-B", "maxmem=128M,minmem=128M"),
        ]
        for key, value in (params or {}).items():
            argv += ["-O", f"{key}={value}"]
        if secret:  # Ganeti keeps these out of its config and job logs; so must we
            argv += ["--os-parameters-secret", ",".join(f"{k}={v}" for k, v in secret.items())]
        return self.gnt(*argv, name, check=check)

    def disk_path(self, name: str) -> Path:
        """The instance's disk 0 as the node sees it (file or adopted block device)."""
        info = self.gnt("instance", "info", "--static", name).stdout
        found = re.search(r"^\s+logical_id: \['\w+', '(/[^']+)'\]$", info, re.M)
        assert found, f"no disk path of {name} in gnt-instance info:\n{info}"
        return Path(found.group(1))

    def adoptable(self, name: str, size: str = "1G") -> Path:
        """A block device for ``-t blockdev``, released after the test's instances are gone."""
        return self.test_stack.enter_context(self.block_device(name, size))

    @contextlib.contextmanager
    def block_device(self, name: str, size: str = "1G") -> Iterator[Path]:
        """A loop device to adopt, linked as /dev/disk/NAMESPACE/NAME (Ganeti's adopt root)."""
        image = self.workdir / f"{name}.img"
        run(["truncate", "--size", size, str(image)])
        try:
            with loop_device(image) as device, created(self.adopt_dir):
                link = self.adopt_dir / name
                link.symlink_to(device)
                try:
                    yield link
                finally:
                    link.unlink()
        finally:
            image.unlink()

    @contextlib.contextmanager
    def os_definition(self, name: str, directory: Path) -> Iterator[Path]:
        """Make the OS definition in ``directory`` visible to Ganeti as ``name``
        (found in the first OS search directory, where the lab sees its os_root)."""
        link = self.os_root / name
        link.symlink_to(directory)
        try:
            yield self.os_search_path[0] / name
        finally:
            link.unlink()

    def log_mark(self) -> frozenset[str]:
        """The OS logs that exist now: :meth:`os_logs` lists those written after."""
        return frozenset(p.name for p in OS_LOG_DIR.glob("*"))

    def os_logs(self, mark: frozenset[str], operation: str = "", instance: str = "") -> list[Path]:
        """OS script logs written since ``mark``, oldest first.

        Their names have one-second resolution and mtimes lag the clock a little,
        so the logs that did not exist at the mark are the new ones.
        """
        found = [p for p in OS_LOG_DIR.glob(f"{operation}-*{instance}*") if p.name not in mark]
        return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))

    def leaked_loops(self) -> dict[str, str]:
        """Loop devices on our disks (backed by our files, or stacked on our loop devices).

        The loop devices the lab itself holds for adopted disks are not leaks.
        """
        held = {str(p.resolve()) for p in self.adopt_dir.glob("*")}
        devices = loop_devices()
        ours: set[str] = set()
        grew = True
        while grew:
            grew = False
            for device, back in devices.items():
                if device not in ours and (
                    back.startswith(str(self.workdir)) or back in ours | held
                ):
                    ours.add(device)
                    grew = True
        return {device: devices[device] for device in sorted(ours - held)}

    def leaked_mounts(self) -> list[tuple[str, str, str]]:
        """``(pid, source, target)`` of mounts of our disks, ours and the node daemon's.

        The OS scripts run under ganeti-noded, which lives in the mount namespace
        ``ip netns exec`` made: their mounts do not show in our /proc/self/mounts.
        """
        devices = set(self.leaked_loops()) | {str(p.resolve()) for p in self.adopt_dir.glob("*")}
        pids = ["self"]
        with contextlib.suppress(OSError):
            pids.append(self.daemon_pid())
        return [
            (pid, source, target)
            for pid in pids
            for source, target in mounts(pid)
            if re.sub(r"p\d+$", "", source) in devices or target.startswith(str(self.workdir))
        ]

    def leaked_partitions(self) -> list[str]:
        """Partition devices the kernel still has for our disks (BLKPG/partx, --partscan)."""
        devices = set(self.leaked_loops()) | {str(p.resolve()) for p in self.adopt_dir.glob("*")}
        found = []
        for device in sorted(devices):
            base = Path(device).name
            found += [f"/dev/{p.name}" for p in Path("/sys/block", base).glob(f"{base}p*")]
        return found

    def leaks(self) -> list[str]:
        """Everything of our disks still attached, partitioned in the kernel, or mounted."""
        return (
            [f"{d} ({back})" for d, back in self.leaked_loops().items()]
            + [f"partition {p}" for p in self.leaked_partitions()]
            + [
                f"{source} mounted on {target} (mount namespace of {pid})"
                for pid, source, target in self.leaked_mounts()
            ]
        )

    def release_leaks(self) -> None:
        """Undo leaked mounts and loop devices of our disks so that later tests start clean."""
        for pid, _, target in reversed(self.leaked_mounts()):
            enter = [] if pid == "self" else ["nsenter", "--target", pid, "--mount"]
            run([*enter, "umount", "--lazy", target], check=False)
        for partition in self.leaked_partitions():
            disk, number = re.fullmatch(r"(/dev/loop\d+)p(\d+)", partition).groups()  # type: ignore[union-attr]
            run(["partx", "--delete", "--nr", number, disk], check=False)
        for device in self.leaked_loops():
            run(["losetup", "--detach", device], check=False)


@contextlib.contextmanager
def cluster(workdir: Path) -> Iterator[Lab]:
    """Bring up the lab in ``workdir``; tear everything down on the way out, whatever happens."""
    reason = skip_reason()
    if reason:
        raise LabUnavailable(reason)
    lab = Lab(workdir, os_search_path=ganeti_os_search_path())
    # Ganeti names the node socket.getfqdn(): the machine's host name, resolved in the
    # namespace's /etc/hosts, where it is an alias of the node's name in the lab's domain.
    hostname = socket.gethostname()
    short = hostname.split(".")[0]
    lab.node = f"{short}.{DOMAIN}"
    aliases = " ".join(dict.fromkeys((short, hostname)))
    # SIGTERM and SIGHUP interrupt like Ctrl-C, so the teardown below runs; nothing
    # interrupts the teardown itself.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    handlers = {s: signal.getsignal(s) for s in signals}
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    try:
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(exclusive_lab())
                if recover():
                    log.warning("cleaned up what a killed Ganeti lab had left on this node")
                reason = skip_reason()  # again, under the lock
                if reason:
                    raise LabUnavailable(reason)
                stack.enter_context(node_state_kept(workdir))
                # The mount point of the lab's OS root, made (and removed) if missing.
                stack.enter_context(created(lab.os_search_path[0]))
                lab.os_root.mkdir()
                (workdir / "no-os").mkdir()
                stack.enter_context(
                    network_namespace(
                        lab.namespace,
                        {NODE_IP: f"{lab.node} {aliases}", CLUSTER_IP: f"{CLUSTER} cluster"},
                    )
                )
                stack.callback(_stop_daemons, lab)
                lab.storage_dir.mkdir(mode=0o750, parents=True)
                with open("/etc/ganeti/file-storage-paths", "a") as f:  # restored afterwards
                    f.write(f"{lab.storage_dir}\n")
                lab.gnt(
                    *("cluster", "init", "--no-ssh-init", "--no-etc-hosts"),
                    *(f"--master-netdev={BRIDGE}", "--master-netmask=24"),
                    f"--nic-parameters=mode=bridged,link={BRIDGE}",
                    *("--enabled-hypervisors=fake", "--enabled-disk-templates=file,blockdev"),
                    f"--file-storage-dir={lab.storage_dir}",
                    CLUSTER,
                )
                stack.callback(lab.gnt, "cluster", "destroy", "--yes-do-it", check=False)
                lab.node = lab.gnt("node", "list", "--no-headers", "-o", "name").stdout.strip()
                stack.callback(lab.test_stack.close)
                stack.callback(lab.remove_instances)
                yield lab
            finally:
                for s in signals:
                    signal.signal(s, signal.SIG_IGN)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


def _stop_daemons(lab: Lab) -> None:
    """Stop every daemon (``destroy`` leaves the on-demand metad), then anything left in the ns."""
    run(["ip", "netns", "exec", lab.namespace, DAEMON_UTIL, "stop-all"], check=False)
    for pid in namespace_pids(lab.namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGTERM)
    wait_for(lambda: not namespace_pids(lab.namespace), "the lab's processes to exit")
