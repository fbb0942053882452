"""A small Gentoo-shaped test stage, and an entry-by-entry comparison of an unpacked tree.

``build(workdir)`` (as root) makes a tree holding every kind of entry a real
stage has — numeric owners that do not exist on the node (portage 250),
setuid/setgid/sticky modes, hard links, relative and absolute symlinks, xattrs
including ``security.capability``, ACLs, empty directories, device nodes, a
FIFO, long and odd names, a /boot with a fake kernel — and Gentoo's skeleton
files, then packs it with GNU tar as Gentoo's release tooling does (``./``
prefix, numeric owners, xattrs, ACLs) in any compression.

``compare(tree, target)`` lists every difference between the source tree and
an unpacked target: type, owner, mode, size, content, mtime, xattrs (ACLs are
the ``system.posix_acl_*`` xattrs), link targets and hard-link identity.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import sh

COMPRESSIONS = {
    "xz": (".tar.xz", ["xz", "-T0", "-c"]),
    "zstd": (".tar.zst", ["zstd", "-q", "-c"]),
    "bzip2": (".tar.bz2", ["bzip2", "-c"]),
    "gzip": (".tar.gz", ["gzip", "-c"]),
    "none": (".tar", None),
}
FLAVOURS = ("openrc", "systemd")
#: security.capability value for cap_net_raw=ep: VFS_CAP_REVISION_2 | effective, then
#: permitted/inheritable words for capabilities 0-31 and 32-63 (CAP_NET_RAW is bit 13).
CAP_NET_RAW_EP = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)

INITTAB = """\
# /etc/inittab:  This file describes how the INIT process should set up
#                the system in a certain run-level.

# Default runlevel.
id:3:initdefault:

# System initialization, mount local filesystems, etc.
si::sysinit:/sbin/openrc sysinit

# Further system initialization, brings up the boot runlevel.
rc::bootwait:/sbin/openrc boot

l0u:0:wait:/sbin/telinit u
l0:0:wait:/sbin/openrc shutdown
l1:S1:wait:/sbin/openrc single
l3:3:wait:/sbin/openrc default
l6:6:wait:/sbin/openrc reboot

# TERMINALS
c1:12345:respawn:/sbin/agetty 38400 tty1 linux
c2:2345:respawn:/sbin/agetty 38400 tty2 linux

# SERIAL CONSOLES
#s0:12345:respawn:/sbin/agetty -L 9600 ttyS0 vt100
#s1:12345:respawn:/sbin/agetty -L 9600 ttyS1 vt100

# What to do at the "Three Finger Salute".
ca:12345:ctrlaltdel:/sbin/shutdown -r now
"""

FSTAB = """\
# /etc/fstab: static file system information.
#
# See the manpage fstab(5) for more information.
#
# <fs>                  <mountpoint>    <type>          <opts>          <dump> <pass>

# NOTE: If your BOOT partition is ReiserFS, add the notail option to opts.
#/dev/BOOT              /boot           ext2            noauto,noatime  1 2
#/dev/ROOT              /               ext4            noatime         0 1
#/dev/SWAP              none            swap            sw              0 0
"""

HOSTS = """\
# /etc/hosts: Local Host Database
127.0.0.1\tlocalhost
::1\t\tlocalhost
"""


@dataclass(frozen=True)
class Stage:
    tarball: Path
    tree: Path  # the source tree the tarball was made from
    flavour: str


def _file(
    root: Path, rel: str, content: bytes | str = b"", mode: int = 0o644, uid: int = 0, gid: int = 0
) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def _dir(root: Path, rel: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Path:
    path = root / rel
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def _symlink(root: Path, rel: str, target: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def build_tree(root: Path, flavour: str = "openrc", filler_mib: int = 0) -> None:
    """Fill ``root`` with a small Gentoo-shaped system (must run as root)."""
    if flavour not in FLAVOURS:
        raise ValueError(flavour)
    root.mkdir(parents=True, exist_ok=True)
    for d in (
        "bin",
        "sbin",
        "lib64",
        "usr/bin",
        "usr/sbin",
        "usr/lib64",
        "usr/share/zoneinfo",
        "etc/conf.d",
        "etc/init.d",
        "etc/runlevels/boot",
        "etc/runlevels/default",
        "etc/runlevels/sysinit",
        "etc/runlevels/shutdown",
        "home",
        "mnt",
        "opt",
        "proc",
        "sys",
        "run",
        "var/log",
        "var/empty",
        "var/db/repos",
        "media",
    ):
        _dir(root, d)
    _dir(root, "root", 0o700)
    _dir(root, "tmp", 0o1777)
    _dir(root, "var/tmp", 0o1777)
    _dir(root, "var/lib/portage", 0o2775, 250, 250)  # setgid dir owned by portage
    _dir(root, "var/cache/distfiles", 0o2775, 250, 250)
    _dir(root, "home/larry", 0o700, 1000, 1000)  # a uid the node does not know
    _symlink(root, "lib", "lib64")
    _symlink(root, "usr/lib", "lib64")
    # Gentoo's skeleton.
    _file(root, "etc/gentoo-release", "Gentoo Base System release 2.17\n")
    _file(root, "usr/lib/os-release", 'NAME=Gentoo\nID=gentoo\nPRETTY_NAME="Gentoo Linux"\n')
    _symlink(root, "etc/os-release", "../usr/lib/os-release")
    _file(root, "etc/inittab", INITTAB)
    _file(
        root,
        "etc/conf.d/hostname",
        '# Hostname fallback if /etc/hostname does not exist\nhostname="localhost"\n',
    )
    _file(root, "etc/hosts", HOSTS)
    _file(root, "etc/fstab", FSTAB)
    _file(root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n", 0o444)
    _file(
        root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nportage:x:250:250:portage:/var/lib/portage/home:/sbin/nologin\n",
    )
    _file(root, "etc/group", "root::0:root\ntty::5:\nportage::250:portage\n")
    _file(root, "etc/shadow", "root:*:10770:0:::::\nportage:!:19000::::::\n", 0o640)
    _file(root, "usr/share/zoneinfo/UTC", b"TZif2" + b"\0" * 40)
    _symlink(root, "etc/localtime", "../usr/share/zoneinfo/UTC")
    _symlink(root, "etc/mtab", "/proc/self/mounts")  # absolute, dangling on the node
    # Binaries with special modes, capabilities, PaX markings and hard links.
    _file(root, "bin/bash", b"\x7fELF fake bash\n", 0o755)
    _file(root, "bin/su", b"\x7fELF fake su\n", 0o4711)
    _file(root, "usr/bin/wall", b"\x7fELF fake wall\n", 0o2755, 0, 5)
    _file(root, "usr/bin/passwd", b"\x7fELF fake passwd\n", 0o4755)
    ping = _file(root, "bin/ping", b"\x7fELF fake ping\n", 0o755)
    os.setxattr(ping, "security.capability", CAP_NET_RAW_EP)  # what setcap cap_net_raw=ep writes
    python = _file(root, "usr/bin/python3.12", b"\x7fELF fake python\n", 0o755)
    os.setxattr(python, "user.pax.flags", b"em")
    gzip = _file(root, "bin/gzip", b"\x7fELF fake gzip\n", 0o755)
    os.link(gzip, root / "bin/gunzip")
    os.link(gzip, root / "bin/zcat")
    _symlink(root, "usr/bin/awk", "gawk")
    _file(root, "usr/bin/gawk", b"\x7fELF fake gawk\n", 0o755)
    _symlink(root, "usr/bin/bash", "/bin/bash")  # absolute
    # ACLs: an access ACL on a file, a default ACL on a directory.
    notes = _file(root, "var/lib/portage/world", "sys-apps/portage\n", 0o664, 250, 250)
    sh.setfacl("-m", "u:250:rw,g:1000:r", str(notes))
    sh.setfacl("-d", "-m", "g:250:rwx", str(root / "var/cache/distfiles"))
    # Device nodes and a FIFO.
    _dir(root, "dev")
    os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(root / "dev/console", 0o600 | stat.S_IFCHR, os.makedev(5, 1))
    os.mkfifo(root / "run/initctl", 0o600)
    # Names tar must carry in extended headers.
    deep = "usr/share/doc/" + "/".join(["a-rather-long-directory-name"] * 5)
    _file(root, f"{deep}/README with spaces and ümlauts.txt", "long path\n")
    # /boot: must land on the /boot partition when there is one.
    _dir(root, "boot")
    _file(root, "boot/vmlinuz-6.6.0-gentoo", os.urandom(64 * 1024))
    _file(root, "boot/System.map-6.6.0-gentoo", "ffffffff81000000 T _text\n")
    _dir(root, "boot/grub")
    # Init system.
    if flavour == "openrc":
        _file(root, "sbin/openrc", b"\x7fELF fake openrc\n", 0o755)
        _file(root, "sbin/init", b"\x7fELF fake sysvinit\n", 0o755)
        _file(root, "sbin/agetty", b"\x7fELF fake agetty\n", 0o755)
        for service in ("hostname", "net.lo", "netmount", "sshd", "local", "agetty"):
            _file(root, f"etc/init.d/{service}", f"#!/sbin/openrc-run\n# {service}\n", 0o755)
        _symlink(root, "etc/runlevels/boot/hostname", "/etc/init.d/hostname")
        _symlink(root, "etc/runlevels/default/netmount", "/etc/init.d/netmount")
        _symlink(root, "etc/runlevels/default/local", "/etc/init.d/local")
    else:
        _file(root, "usr/lib/systemd/systemd", b"\x7fELF fake systemd\n", 0o755)
        _symlink(root, "sbin/init", "../usr/lib/systemd/systemd")
        for unit in (
            "getty@.service",
            "serial-getty@.service",
            "sshd.service",
            "systemd-networkd.service",
        ):
            _file(root, f"usr/lib/systemd/system/{unit}", f"[Unit]\nDescription={unit}\n")
        _dir(root, "etc/systemd/system/multi-user.target.wants")
        _dir(root, "etc/systemd/system/getty.target.wants")
        _symlink(
            root,
            "etc/systemd/system/getty.target.wants/getty@tty1.service",
            "/usr/lib/systemd/system/getty@.service",
        )
        _dir(root, "etc/systemd/network")
    if filler_mib:
        _file(root, "usr/share/filler.bin", b"\0" * (filler_mib << 20))


def pack(tree: Path, tarball: Path, compression: str) -> Path:
    """Pack ``tree`` as Gentoo's release tooling does: ``./`` prefix, numeric owners, xattrs."""
    compressor = COMPRESSIONS[compression][1]
    plain = tarball.with_name(tarball.name + ".tmp")
    sh.tar(
        "--create",
        "--file",
        str(plain),
        "--directory",
        str(tree),
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*.*",
        "--acls",
        "--sort=name",
        ".",
    )
    if compressor is None:
        plain.rename(tarball)
    else:
        with open(tarball, "wb") as out:
            sh.Command(compressor[0])(*compressor[1:], str(plain), _out=out)
        plain.unlink()
    return tarball


def build(
    workdir: Path,
    flavour: str = "openrc",
    compression: str = "xz",
    filler_mib: int = 0,
    name: str = "stage4-amd64-test",
) -> Stage:
    """Build the test stage in ``workdir``: the tree and its tarball."""
    tree = workdir / f"{name}-{flavour}-tree"
    build_tree(tree, flavour, filler_mib)
    suffix = COMPRESSIONS[compression][0]
    tarball = pack(tree, workdir / f"{name}-{flavour}{suffix}", compression)
    return Stage(tarball, tree, flavour)


# --- comparison --------------------------------------------------------------------------


#: xattrs a filesystem shows root but keeps for itself (XFS's copy of ACLs).
_FS_INTERNAL_XATTRS = ("trusted.SGI_ACL_",)


@dataclass(frozen=True)
class Entry:
    kind: str
    uid: int
    gid: int
    mode: int
    size: int
    mtime: int
    content: str  # sha256 of a file, the target of a symlink, the rdev of a device
    xattrs: tuple[tuple[str, bytes], ...]


def _entry(path: Path) -> Entry:
    st = os.lstat(path)
    fmt = stat.S_IFMT(st.st_mode)
    kind = {
        stat.S_IFREG: "file",
        stat.S_IFDIR: "dir",
        stat.S_IFLNK: "symlink",
        stat.S_IFCHR: "chr",
        stat.S_IFBLK: "blk",
        stat.S_IFIFO: "fifo",
    }.get(fmt, "other")
    content = ""
    if kind == "file":
        content = hashlib.sha256(path.read_bytes()).hexdigest()
    elif kind == "symlink":
        content = os.readlink(path)
    elif kind in ("chr", "blk"):
        content = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    xattrs: tuple[tuple[str, bytes], ...] = ()
    if kind != "symlink":
        names = [n for n in os.listxattr(path) if not n.startswith(_FS_INTERNAL_XATTRS)]
        xattrs = tuple(sorted((n, os.getxattr(path, n)) for n in names))
    return Entry(
        kind,
        st.st_uid,
        st.st_gid,
        stat.S_IMODE(st.st_mode),
        st.st_size if kind == "file" else 0,
        int(st.st_mtime),
        content,
        xattrs,
    )


def snapshot(
    root: Path, skip: tuple[str, ...] = ("lost+found", "boot/lost+found")
) -> dict[str, Entry]:
    """Every entry below ``root`` (``"."`` for root itself), keyed by relative path."""
    entries = {".": _entry(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if rel in skip:
                continue
            entries[rel] = _entry(path)
    return entries


def hardlink_groups(root: Path) -> set[frozenset[str]]:
    """Paths that share an inode (files with more than one link)."""
    groups: dict[tuple[int, int], set[str]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                groups.setdefault((st.st_dev, st.st_ino), set()).add(str(path.relative_to(root)))
    return {frozenset(g) for g in groups.values()}


def compare(tree: Path, target: Path, ignore: Optional[set[str]] = None) -> list[str]:
    """Differences between the stage's source ``tree`` and an unpacked ``target``.

    ``ignore``: relative paths the install changed on purpose (etc/fstab, ...).
    The root directory's own mtime and the /boot mount point's are left out: the
    filesystems' root directories are touched by mkfs and mounting.
    """
    ignore = ignore or set()
    want, got = snapshot(tree), snapshot(target)
    problems = []
    for rel in sorted(set(want) | set(got)):
        if rel in ignore:
            continue
        if rel not in got:
            problems.append(f"{rel}: missing")
            continue
        if rel not in want:
            problems.append(f"{rel}: not in the stage")
            continue
        a, b = want[rel], got[rel]
        for field in ("kind", "uid", "gid", "mode", "size", "content", "xattrs", "mtime"):
            if field == "mtime" and (a.kind == "dir" and rel in (".", "boot")):
                continue
            if getattr(a, field) != getattr(b, field):
                problems.append(f"{rel}: {field} {getattr(a, field)!r} != {getattr(b, field)!r}")
    want_links, got_links = hardlink_groups(tree), hardlink_groups(target)
    for group in want_links - got_links:
        problems.append(f"hard links not kept: {sorted(group)}")
    return problems


def differences(a: Path, b: Path, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Every difference between two installed trees, to the nanosecond.

    Names, types, numeric owners, modes, sizes, contents, symlink targets, device
    numbers, xattrs (``security.capability``, the ACLs' ``system.posix_acl_*``),
    mtimes in nanoseconds and the hard-link groups.  ``ignore``: paths the install
    writes on purpose (their type, owner and mode are still compared).
    """
    problems = []
    left, right = snapshot(a, skip=("lost+found",)), snapshot(b, skip=("lost+found",))
    for rel in sorted(set(left) | set(right)):
        if rel not in left or rel not in right:
            problems.append(f"{rel}: only in {a if rel in left else b}")
            continue
        fields = ("kind", "uid", "gid", "mode")
        if rel not in ignore:
            fields += ("size", "content", "xattrs")
        for field in fields:
            mine, theirs = getattr(left[rel], field), getattr(right[rel], field)
            if mine != theirs:
                problems.append(f"{rel}: {field} {mine!r} != {theirs!r}")
        if rel not in ignore:
            ns = (os.lstat(a / rel).st_mtime_ns, os.lstat(b / rel).st_mtime_ns)
            if ns[0] != ns[1]:
                problems.append(f"{rel}: mtime_ns {ns[0]} != {ns[1]}")
    if hardlink_groups(a) != hardlink_groups(b):
        problems.append(f"hard links: {hardlink_groups(a) ^ hardlink_groups(b)}")
    return problems
