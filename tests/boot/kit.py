"""Build what the boot tests boot: a node kernel kit and Gentoo-shaped test stages.

Both come from Debian's packages (the archive apt already uses) and are cached
under ``/var/cache/gentoobootstrap-tests/`` (``$GENTOOBOOTSTRAP_TEST_CACHE``) in a
directory named by a hash of their recipe — this file, ``init.sh`` and the
inputs — so an edit rebuilds and a fresh CI machine builds from scratch.

* The **node kernel kit**: Debian's kernel (``apt-get download`` + ``dpkg-deb -x``)
  and a small busybox-static initrd that loads virtio and the ext4/xfs/btrfs
  modules and mounts ``root=`` — what a Ganeti node's ``kernel_path`` would boot.
* The **test stage**: a real sysvinit userland from ``debootstrap`` shaped like a
  Gentoo stage (Gentoo's inittab serial lines, ``/etc/conf.d/hostname``,
  ``/etc/gentoo-release``, ``/etc/runlevels``) but keeping Debian's own rc so it
  boots, with the kit's kernel and initrd in ``/boot`` for the boot-from-disk
  scenario.  It is a tarball that the real ``create`` installs via ``STAGE4_FILE``.
* The **systemd stage**: Debian's systemd as PID 1 (with udev, systemd-networkd,
  openssh-server and iproute2) shaped like Gentoo's systemd stage3: no inittab, an
  ``sshd.service`` that makes the host keys at its start, no host keys, an empty
  ``/etc/machine-id``, root locked.
* The **OpenRC stage**: sysvinit as PID 1 with Gentoo's inittab calling
  ``/sbin/openrc``, Debian's OpenRC, busybox, and an ``sshd`` script that makes the
  host keys (no netifrc: no archive CI reaches has it).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("GENTOOBOOTSTRAP_TEST_CACHE", "/var/cache/gentoobootstrap-tests"))

#: The modules the initrd loads (with their dependencies) before mounting root; the
#: stages have no modules of the node kernel, so the NIC's driver is loaded here too.
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4", "xfs", "btrfs")
SUITE = "bookworm"
#: sysvinit is the init Gentoo's OpenRC stages share the inittab format with;
#: the filesystem tools let Debian's checkroot fsck every root we test.
STAGE_PACKAGES = ("sysvinit-core", "util-linux", "e2fsprogs", "xfsprogs", "btrfs-progs")
STAGE_NAME = "stage4-amd64-boottest.tar.zst"
#: Gentoo's systemd stage3 in Debian's packages: systemd as /sbin/init, udev (which
#: applies the .link files), networkd (part of Debian's systemd), sshd, ip; what the
#: grow service calls: sfdisk (Gentoo's util-linux has it, Debian splits it into fdisk)
#: and the filesystem tools (a guest with xfs or btrfs root has them).
SYSTEMD_PACKAGES = (
    "systemd-sysv", "udev", "openssh-server", "iproute2", "fdisk", "e2fsprogs", "xfsprogs",
    "btrfs-progs",
)  # fmt: skip
SYSTEMD_STAGE_NAME = "stage4-amd64-systemd-boottest.tar.zst"

#: Gentoo's OpenRC stage3 in Debian's packages: sysvinit as PID 1, busybox (its
#: udhcpc), sshd, ip; then Debian's openrc, which takes sysv-rc's place (debootstrap
#: itself would install both and fail on their conflict); sfdisk and the filesystem
#: tools for the grow service, as in the systemd stage.
OPENRC_PACKAGES = (
    "sysvinit-core", "busybox", "openssh-server", "iproute2", "fdisk", "e2fsprogs", "xfsprogs",
    "btrfs-progs",
)  # fmt: skip
OPENRC_STAGE_NAME = "stage4-amd64-openrc-boottest.tar.zst"

#: Gentoo's inittab: sysvinit hands every runlevel to /sbin/openrc.
GENTOO_INITTAB = """\
id:3:initdefault:
si::sysinit:/sbin/openrc sysinit
rc::bootwait:/sbin/openrc boot
l0:0:wait:/sbin/openrc shutdown
l0s:0:wait:/sbin/halt -dhnp
l1:1:wait:/sbin/openrc single
l2:2:wait:/sbin/openrc nonetwork
l3:3:wait:/sbin/openrc default
l4:4:wait:/sbin/openrc default
l5:5:wait:/sbin/openrc default
l6:6:wait:/sbin/openrc reboot
l6r:6:wait:/sbin/reboot -dkn
su0:S:wait:/sbin/openrc single
su1:S:wait:/sbin/sulogin
c1:12345:respawn:/sbin/agetty 38400 tty1 linux
"""

#: An sshd service as Gentoo's: named sshd, host keys made before the start.  It
#: only uses the network: the stage has no netifrc to provide one.
SSHD_INITD = """\
#!/sbin/openrc-run
description="OpenSSH server daemon"
command="/usr/sbin/sshd"
pidfile="/run/sshd.pid"

depend() {
	use logger dns net
}

start_pre() {
	checkpath -d -m 0755 /run/sshd
	ssh-keygen -A
}
"""

#: Gentoo's localmount (OpenRC's own, which Debian's package leaves out) as the name
#: services ``need``: here Debian's mountall.sh mounts them.
LOCALMOUNT_INITD = """\
#!/sbin/openrc-run
description="Local filesystems, mounted by Debian's mountall.sh"

depend() {
	need mountall.sh
}

start() {
	return 0
}
"""

#: sshd.service as Gentoo's net-misc/openssh installs it: named sshd, host keys made
#: at its start.  Debian's sshd keeps its privilege separation directory in /run/sshd.
SSHD_SERVICE = """\
[Unit]
Description=OpenSSH server daemon
After=network.target

[Service]
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStart=/usr/sbin/sshd -D -e
ExecReload=/bin/kill -HUP $MAINPID
KillMode=process
Restart=on-failure
RuntimeDirectory=sshd

[Install]
WantedBy=multi-user.target
"""

#: Gentoo's inittab serial lines (sys-apps/sysvinit's gentoo inittab), commented as shipped.
GENTOO_SERIAL_LINES = """\
# SERIAL CONSOLES
#s0:12345:respawn:/sbin/agetty -L 9600 ttyS0 vt100
#s1:12345:respawn:/sbin/agetty -L 9600 ttyS1 vt100
"""


@dataclass(frozen=True)
class NodeKernel:
    version: str
    vmlinuz: Path
    initrd: Path


def sh(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a build step; on failure raise with its output (the test shows it)."""
    proc = subprocess.run(
        [os.fspath(a) for a in argv],
        cwd=cwd,
        env={**os.environ, "LC_ALL": "C", **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, argv))} failed ({proc.returncode}): {proc.stderr[-2000:]}"
        )
    return proc.stdout


def _recipe_hash(*inputs: str) -> str:
    digest = hashlib.sha256()
    for path in (Path(__file__), HERE / "init.sh"):
        digest.update(path.read_bytes())
    for item in inputs:
        digest.update(item.encode() + b"\0")
    return digest.hexdigest()[:16]


def cached(name: str, inputs: tuple[str, ...], build: Callable[[Path], None]) -> Path:
    """The cache directory for ``name`` + ``inputs``, built by ``build(dir)`` if missing.

    A lock serializes builders (pytest-xdist workers, other runs); a half-built
    directory is never visible under the final name.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    final = CACHE / f"{name}-{_recipe_hash(*inputs)}"
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir():
            return final
        partial = final.with_name(f".{final.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        started = time.monotonic()
        try:
            build(partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(final)
        (final / "build-seconds").write_text(f"{time.monotonic() - started:.1f}\n")
    return final


# -- the node kernel kit ---------------------------------------------------------------


def kernel_package() -> str:
    """The versioned package behind ``linux-image-amd64`` in the configured archive."""
    deps = sh("apt-cache", "depends", "linux-image-amd64")
    found = re.findall(r"Depends: (linux-image-\S+-amd64)", deps)
    if not found:
        raise RuntimeError("apt-cache knows no linux-image-amd64: run apt-get update")
    return found[0]


def _is_static(binary: Path) -> bool:
    """Whether an ELF64 binary has no PT_INTERP (no dynamic loader to find in the initrd)."""
    data = binary.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != 3 for i in range(phnum))


def _newc(entries: Iterator[tuple[str, int, bytes, int]]) -> bytes:
    """A newc cpio archive of (name, mode, data, rdev) — no root needed for device nodes."""
    out = io.BytesIO()

    def put(name: str, mode: int, data: bytes, rdev: int, ino: int) -> None:
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(encoded), 0)
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        out.write(b"\0" * (-out.tell() % 4) + data)
        out.write(b"\0" * (-out.tell() % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        put(name, mode, data, rdev, ino)
    put("TRAILER!!!", 0, b"", 0, 0)
    return out.getvalue()


def _initrd(modules: list[Path]) -> bytes:
    busybox = Path("/bin/busybox")
    if not busybox.is_file() or not _is_static(busybox):
        raise RuntimeError("/bin/busybox is missing or dynamic: install busybox-static")

    def entries() -> Iterator[tuple[str, int, bytes, int]]:
        for d in ("bin", "dev", "proc", "sys", "newroot", "modules"):
            yield d, 0o040755, b"", 0
        yield "dev/console", 0o020600, b"", (5 << 8) | 1
        yield "init", 0o100755, (HERE / "init.sh").read_bytes(), 0
        yield "bin/busybox", 0o100755, busybox.read_bytes(), 0
        for module in modules:
            yield f"modules/{module.name}", 0o100644, module.read_bytes(), 0
        order = "".join(f"{m.name}\n" for m in modules).encode()
        yield "modules/order", 0o100644, order, 0

    return gzip.compress(_newc(entries()), compresslevel=6, mtime=0)


def _build_kernel(package: str, out: Path) -> None:
    work = out / "work"
    work.mkdir()
    sh("apt-get", "download", package, cwd=work)
    (deb,) = work.glob(f"{package}_*.deb")
    root = work / "root"
    sh("dpkg-deb", "-x", deb, root)
    (version,) = (p.name for p in (root / "lib/modules").iterdir())
    sh("depmod", "-b", root, version)
    shown = sh("modprobe", "-d", root, "-S", version, "-a", "--show-depends", *MODULES)
    modules: list[Path] = []
    for line in shown.splitlines():
        words = line.split()
        if words and words[0] == "insmod" and Path(words[1]) not in modules:
            modules.append(Path(words[1]))
    (out / f"initrd.img-{version}").write_bytes(_initrd(modules))
    shutil.copy2(root / f"boot/vmlinuz-{version}", out / f"vmlinuz-{version}")
    (out / "version").write_text(version + "\n")
    shutil.rmtree(work)


def node_kernel() -> NodeKernel:
    """Debian's kernel and the boot tests' initrd, built once and cached."""
    package = kernel_package()
    kit = cached("kernel", (package, *MODULES), lambda out: _build_kernel(package, out))
    version = (kit / "version").read_text().strip()
    return NodeKernel(version, kit / f"vmlinuz-{version}", kit / f"initrd.img-{version}")


# -- the test stage ---------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian archive apt is configured with ($GENTOOBOOTSTRAP_TEST_MIRROR wins)."""
    if os.environ.get("GENTOOBOOTSTRAP_TEST_MIRROR"):
        return os.environ["GENTOOBOOTSTRAP_TEST_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        if not source.is_file():
            continue
        text = source.read_text()
        # one-line format: deb [options] URI SUITE COMPONENTS
        for m in re.finditer(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", text, re.M):
            return m.group(1)
        # deb822 format: a stanza with "URIs:" and a "Suites:" naming the suite
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:(.*)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
    return "http://deb.debian.org/debian"


def _shape_like_gentoo(root: Path, kernel: NodeKernel) -> None:
    """Give the Debian userland the files our code configures in a Gentoo stage."""
    inittab = root / "etc/inittab"
    lines = [ln for ln in inittab.read_text().splitlines(keepends=True) if "ttyS" not in ln]
    inittab.write_text("".join(lines) + "\n" + GENTOO_SERIAL_LINES)
    (root / "etc/conf.d").mkdir(exist_ok=True)
    (root / "etc/conf.d/hostname").write_text(
        '# Hostname fallback if /etc/hostname does not exist\nhostname="localhost"\n'
    )
    for level in ("sysinit", "boot", "default", "shutdown"):
        (root / "etc/runlevels" / level).mkdir(parents=True, exist_ok=True)
    _shape_common(root, kernel)


def _shape_like_gentoo_systemd(root: Path, kernel: NodeKernel) -> None:
    """Make the Debian systemd userland look like Gentoo's systemd stage3."""
    (root / "etc/inittab").unlink(missing_ok=True)
    units = root / "usr/lib/systemd/system"
    # Debian's ssh.service (alias sshd.service, enabled by its postinst) and socket go:
    # Gentoo's sshd.service takes their place, not enabled, as in a stage3.
    for unit in ("ssh.service", "ssh.socket", "ssh@.service", "rescue-ssh.target"):
        (units / unit).unlink(missing_ok=True)
    for link in (root / "etc/systemd/system").rglob("ssh*"):
        link.unlink()
    # Its SysV script too, or systemd's generator would make a unit of it.
    for script in (root / "etc").glob("rc?.d/[SK][0-9][0-9]ssh"):
        script.unlink()
    (root / "etc/init.d/ssh").unlink()
    (units / "sshd.service").write_text(SSHD_SERVICE)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Gentoo's stage3 has its locale settled; without it systemd-firstboot would ask on
    # the console at the first boot (the empty machine-id makes it one).
    (root / "etc/locale.conf").write_text("LANG=C.UTF-8\n")
    shadow = root / "etc/shadow"
    shadow.write_text(re.sub(r"(?m)^root:[^:]*:", "root:*:", shadow.read_text()))
    _shape_common(root, kernel)


def _shape_like_gentoo_openrc(root: Path, kernel: NodeKernel) -> None:
    """Install Debian's OpenRC and make the userland look like Gentoo's OpenRC stage3."""
    policy = root / "usr/sbin/policy-rc.d"  # no daemon starts in the chroot
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    sh("chroot", root, "apt-get", "install", "-y", "--no-install-recommends", "openrc", env=env)
    policy.unlink()
    (root / "etc/inittab").write_text(GENTOO_INITTAB + "\n" + GENTOO_SERIAL_LINES)
    (root / "etc/conf.d").mkdir(exist_ok=True)
    (root / "etc/conf.d/hostname").write_text(
        '# Hostname fallback if /etc/hostname does not exist\nhostname="localhost"\n'
    )
    # Debian's ssh script and its runlevel links go: Gentoo's sshd takes its place,
    # not enabled, as in a stage3.
    for link in [*(root / "etc/runlevels").rglob("ssh"), *(root / "etc").glob("rc?.d/*ssh")]:
        link.unlink()
    (root / "etc/init.d/ssh").unlink()
    (root / "etc/init.d/sshd").write_text(SSHD_INITD)
    (root / "etc/init.d/sshd").chmod(0o755)
    (root / "etc/init.d/localmount").write_text(LOCALMOUNT_INITD)
    (root / "etc/init.d/localmount").chmod(0o755)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    shadow = root / "etc/shadow"
    shadow.write_text(re.sub(r"(?m)^root:[^:]*:", "root:*:", shadow.read_text()))
    _shape_common(root, kernel)


def _shape_common(root: Path, kernel: NodeKernel) -> None:
    (root / "etc/hostname").write_text("localhost\n")
    (root / "etc/gentoo-release").write_text("Gentoo Base System release 2.17\n")
    (root / "etc/machine-id").write_text("")
    # The guest's own kernel (sys-kernel/gentoo-kernel-bin names) for booting from disk.
    shutil.copy2(kernel.vmlinuz, root / f"boot/vmlinuz-{kernel.version}")
    shutil.copy2(kernel.initrd, root / f"boot/initramfs-{kernel.version}.img")
    # Smaller and faster to unpack: no docs, locales or apt indexes.
    for junk in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        shutil.rmtree(root / junk, ignore_errors=True)
        (root / junk).mkdir()
    for junk in ("var/lib/apt/lists", "var/cache/apt", "var/cache/debconf"):
        for path in (root / junk).rglob("*"):
            if path.is_file():
                path.unlink()


Shape = Callable[[Path, NodeKernel], None]


def _build_stage(
    kernel: NodeKernel, mirror: str, packages: tuple[str, ...], shape: Shape, out: Path, name: str
) -> None:
    root = out / "root"
    debs = CACHE / "debootstrap-debs"  # reused by rebuilds after a recipe change
    debs.mkdir(exist_ok=True)
    started = time.monotonic()
    sh(
        "debootstrap",
        "--variant=minbase",
        f"--cache-dir={debs}",
        f"--include={','.join(packages)}",
        SUITE,
        root,
        mirror,
    )
    shape(root, kernel)
    packed = time.monotonic()
    sh(
        "tar",
        "-C", root,
        "--numeric-owner", "--xattrs", "--xattrs-include=*.*",
        "--use-compress-program=zstd -T0 -6", "-cf", out / name,
        ".",
    )  # fmt: skip
    shutil.rmtree(root)
    (out / "timings").write_text(
        f"debootstrap and shape: {packed - started:.1f} s\n"
        f"tar + zstd: {time.monotonic() - packed:.1f} s\n"
    )


def _stage(
    kernel: NodeKernel, cache_name: str, name: str, packages: tuple[str, ...], shape: Shape
) -> Path:
    """Stage tarball ``name`` (``packages`` debootstrapped, then ``shape``d), cached."""
    mirror = debian_mirror()
    inputs = (SUITE, mirror, *packages, kernel.version, kernel.initrd.parent.name)
    built = cached(
        cache_name, inputs, lambda out: _build_stage(kernel, mirror, packages, shape, out, name)
    )
    return built / name


def stage_tarball(kernel: NodeKernel) -> Path:
    """The Gentoo-shaped Debian stage tarball (for ``STAGE4_FILE``), built once and cached."""
    return _stage(kernel, "stage", STAGE_NAME, STAGE_PACKAGES, _shape_like_gentoo)


def systemd_stage_tarball(kernel: NodeKernel) -> Path:
    """The stage with real systemd, shaped like Gentoo's systemd stage3, built once and cached."""
    return _stage(
        kernel, "systemd-stage", SYSTEMD_STAGE_NAME, SYSTEMD_PACKAGES, _shape_like_gentoo_systemd
    )


def openrc_stage_tarball(kernel: NodeKernel) -> Path:
    """The stage with sysvinit and Debian's OpenRC, shaped like Gentoo's OpenRC stage3."""
    return _stage(
        kernel, "openrc-stage", OPENRC_STAGE_NAME, OPENRC_PACKAGES, _shape_like_gentoo_openrc
    )
