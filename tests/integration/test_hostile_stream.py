"""An import stream crafted by a hostile owner, and the jail its extractor runs in.

The extractor (restore for a dump, tar otherwise) reads the stream as root.  A crafted
dump makes restore walk ``..`` paths out of the new filesystem (and crash); so it runs
confined
(:mod:`gentoobootstrap.confinement`).  First the jail itself, with a child that tries
every way out it can; then import of crafted dumps.  The node's canaries stay
byte-for-byte as they were, and nothing is left attached or mounted.
"""

from __future__ import annotations

import ctypes
import tempfile
from pathlib import Path

import pytest
import sh
from test_export_import import OS, Layout, dump_of, needs_dump, sparse

from gentoobootstrap import confinement, runner
from gentoobootstrap.confinement import Jail
from gentoobootstrap.disk import mounts
from gentoobootstrap.errors import CommandError
from support import canary_state
from support.install import InstalledOS

pytestmark = pytest.mark.root

#: A child that tries every way out of its jail, saying what happened to each.
ESCAPES = """
try() {{ if ( eval "$2" ) 2>/dev/null; then echo "$1: done"; else echo "$1: refused"; fi; }}
try absolute-link 'ln -s {canary}/file out && echo pwned > out'
try dot-dot 'echo pwned > {dotdot}{canary}/file'
try direct 'echo pwned > {canary}/file'
try list 'ls {canary}'
try usr 'echo pwned > /usr/pwned'
try root 'echo pwned > /pwned'
try mount 'mount -t tmpfs none /tmp'
try chroot 'chroot / true'
try device 'mknod /tmp/disk b 7 0 && head -c1 /tmp/disk'
try guest-device 'mknod disk b 7 0 && head -c1 disk'
try exec 'cp /usr/bin/true /tmp/t && /tmp/t'
try proc 'cat /proc/1/environ'
try work 'echo ok > written && echo ok > boot/written'
try scratch 'echo ok > /tmp/written'
try null 'echo ok > /dev/null'
try handle '/usr/bin/python3 -c "$OPEN_BY_HANDLE" {handle}'
"""
#: open_by_handle_at(2) of a handle made outside, on the mount of /tmp (the scratch
#: directory's filesystem, the node's): opens the node file it names, chroot or not.
OPEN_BY_HANDLE = """
import ctypes, os, sys
handle = ctypes.create_string_buffer(bytes.fromhex(sys.argv[1]))
fd = ctypes.CDLL(None).open_by_handle_at(os.open("/tmp", os.O_RDONLY), handle, os.O_RDONLY)
sys.exit(fd < 0 or not os.read(fd, 100))
"""


def file_handle(path: Path) -> str:
    """name_to_handle_at(2) of ``path``: the struct file_handle, in hex."""
    handle = ctypes.create_string_buffer(128)
    ctypes.c_uint.from_buffer(handle).value = 128 - 8
    mount_id = ctypes.c_int()
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.name_to_handle_at(-100, bytes(path), handle, ctypes.byref(mount_id), 0) == 0
    return handle.raw[: 8 + ctypes.c_uint.from_buffer(handle).value].hex()


@pytest.fixture
def os_def(installed_os: InstalledOS, no_leaks: Path, stages: dict) -> OS:
    return OS(installed_os, no_leaks, stages["openrc", "zstd"].tarball)


@pytest.fixture
def node(no_leaks: Path) -> Path:
    """The node's files a jailed child aims at."""
    canary = no_leaks / "node"
    canary.mkdir()
    (canary / "file").write_text("the node's own file\n")
    return canary


def test_a_confined_child_reaches_only_its_tree(no_leaks: Path, node: Path) -> None:
    """What a compromised restore could try: it writes its tree and its /tmp, nothing else."""
    work = no_leaks / "work"
    work.mkdir()
    before = canary_state(node)
    (no_leaks / "jail").mkdir()
    jail = Jail.below(no_leaks / "jail", work, confinement.RESTORING)
    # Mounted as import mounts the new filesystems, /boot one of its own: the jail holds the
    # tree with its submounts.
    options = "size=1m," + ",".join(mounts.FOREIGN)
    sh.mount("-t", "tmpfs", "-o", options, "root", str(work))
    try:
        (work / "boot").mkdir()
        sh.mount("-t", "tmpfs", "-o", options, "boot", str(work / "boot"))
        try:
            handle = file_handle(node / "file")
            script = ESCAPES.format(canary=node, dotdot="../" * 40, handle=handle)
            env = {"OPEN_BY_HANDLE": OPEN_BY_HANDLE}
            said = runner.output(["sh", "-c", script], jail=jail, env=env)
            assert (work / "boot/written").read_text() == "ok\n"
        finally:
            sh.umount(str(work / "boot"))
        assert (work / "written").read_text() == "ok\n"
    finally:
        sh.umount(str(work))
    assert dict(line.split(": ") for line in said.splitlines()) == {
        "absolute-link": "refused",
        "dot-dot": "refused",
        "direct": "refused",
        "list": "refused",
        "usr": "refused",
        "root": "refused",
        "mount": "refused",
        "chroot": "refused",
        "device": "refused",
        "guest-device": "refused",
        "exec": "refused",
        "proc": "refused",
        "work": "done",
        "scratch": "done",
        "null": "done",
        "handle": "refused",
    }
    assert canary_state(node) == before
    assert (jail.scratch / "written").read_text() == "ok\n"
    # The jail's mounts lived in the child's namespace only.
    assert not any(jail.root.iterdir())
    assert str(no_leaks) not in Path("/proc/self/mountinfo").read_text()


def test_without_a_capability_set_the_child_keeps_root_s(no_leaks: Path) -> None:
    """tar restores every attribute an export keeps: it may still mount (in its own
    namespace), but sees only its tree."""
    work = no_leaks / "work"
    work.mkdir()
    (no_leaks / "jail").mkdir()
    jail = Jail.below(no_leaks / "jail", work)
    said = runner.output(["sh", "-c", "mount -t tmpfs none /tmp && echo mounted; ls /"], jail=jail)
    assert said.split() == ["mounted", "bin", "dev", "etc", "lib", "lib64", "sbin", "tmp", "usr",
                            "work"]  # fmt: skip


def test_a_jail_that_cannot_be_made_fails_the_command(no_leaks: Path) -> None:
    jail = Jail(no_leaks / "missing", no_leaks, no_leaks, confinement.RESTORING)
    with pytest.raises(CommandError) as e:
        runner.run(["true"], jail=jail)
    assert e.value.returncode == runner.CONFINEMENT_FAILED
    assert "cannot confine /usr/bin/true: mount tmpfs on " in e.value.stderr


# --- crafted dumps --------------------------------------------------------------------------


@needs_dump
@pytest.mark.parametrize("where", ["root", "subdirectory"])
def test_a_dump_whose_names_lead_out(os_def: OS, no_leaks: Path, node: Path, where: str) -> None:
    """Names rewritten in the dump's directory blocks to climb out to a node file.  Run
    unconfined, restore follows the name at the root through ``..``: it gave the node's
    file the dump's mode (set-id, writable by all), owner and times.  Confined, the node's
    file stays untouched, and the import fails with one ERROR line."""
    escape = ("../" * 40 + str(node / "file")).encode()
    placeholder = b"x" * len(escape)
    tree = no_leaks / "tree"
    parent = tree / "d" if where == "subdirectory" else tree
    parent.mkdir(parents=True)
    (parent / placeholder.decode()).write_text("pwned\n")
    (parent / placeholder.decode()).chmod(0o6777)
    (tree / "etc").mkdir()
    dumped = dump_of(tree, no_leaks)
    assert placeholder in dumped
    crafted = no_leaks / "crafted.dump"
    crafted.write_bytes(dumped.replace(placeholder, escape))
    before = canary_state(node)
    layout = Layout("msdos", "ext4", 320)
    result = os_def.import_(sparse(no_leaks / "target.img", layout.size_mib), crafted, layout)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "ERROR: import: restore" in last and len(last) < 1000, last
    assert canary_state(node) == before


@needs_dump
@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_a_dump_that_holds_restore_s_own_file(
    os_def: OS, no_leaks: Path, node: Path, kind: str
) -> None:
    """restore writes ``restoresymtable`` into the new root (import removes it): a dump
    bringing one of its own, a directory or a link to a node file, fails the import with
    one ERROR line and leaves the node's file as it was."""
    tree = no_leaks / "tree"
    (tree / "etc").mkdir(parents=True)
    if kind == "directory":
        (tree / "restoresymtable").mkdir()
    else:
        (tree / "restoresymtable").symlink_to(node / "file")
    crafted = no_leaks / "crafted.dump"
    crafted.write_bytes(dump_of(tree, no_leaks))
    before = canary_state(node)
    layout = Layout("msdos", "ext4", 320)
    result = os_def.import_(sparse(no_leaks / "target.img", layout.size_mib), crafted, layout)
    assert canary_state(node) == before
    last = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and len(last) < 1000, result.stderr
    assert result.returncode == 1 and "ERROR: import: restore" in last, result.stderr


def test_a_tool_the_jail_cannot_run_fails_the_command(no_leaks: Path) -> None:
    """A tool whose interpreter is not in the jail (nor anywhere): one CommandError."""
    tool = no_leaks / "tool"
    tool.write_text("#!/nonexistent/interpreter\n")
    tool.chmod(0o755)
    (no_leaks / "jail").mkdir()
    (no_leaks / "work").mkdir()
    jail = Jail.below(no_leaks / "jail", no_leaks / "work", confinement.RESTORING)
    with pytest.raises(CommandError) as e:
        runner.run([tool], jail=jail)
    assert e.value.returncode == runner.CONFINEMENT_FAILED
    assert e.value.stderr == f"cannot run {tool} confined: No such file or directory"


def test_the_jail_holds_where_the_tool_and_its_links_lead() -> None:
    """A tool linked into a store (as on NixOS): the store is in the jail too; the jail's
    own directories never come from the node."""
    assert confinement.programs("/usr/sbin/restore") == list(confinement.PROGRAMS)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as directory:
        link = Path(directory, "restore")
        link.symlink_to("/opt/store/restore")
        assert confinement.programs(str(link)) == [*confinement.PROGRAMS, "opt", "var"]
    assert confinement.programs("/tmp/restore") == list(confinement.PROGRAMS)
    assert confinement.programs("/etc/restore") == list(confinement.PROGRAMS)
