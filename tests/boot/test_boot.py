"""The instance boots: what ``create`` (or ``import``) writes boots under qemu and lets root in.

Every scenario drives the installed OS definition exactly as Ganeti does (a
variant file, the OS-interface environment), installs the bootable test stage
through ``STAGE4_FILE``, boots the disk and logs in as root on the serial
console to check the hostname, the root filesystem and its partition, swap and
``/boot``.  On the stage with real systemd, instances with a NIC are reached as
an admin would: the console, the network ``create`` configured, SSH with a key.
The negative controls prove the runner notices a broken guest.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from boot import kit, qemu
from support import REPO, ganeti_environ, leaks
from support.install import InstalledOS

pytestmark = [pytest.mark.boot, pytest.mark.slow]

FQDN = "inst1.example.com"
HOST = "inst1"
DISK_MIB = 512
#: The example hook that installs GRUB for guests booting from their own disk.
GRUB_HOOK = REPO / "examples" / "hooks" / "grub"

RecordProperty = Callable[[str, Any], None]


@dataclass(frozen=True)
class Expect:
    """What the booted guest must show."""

    fstype: str = "ext4"
    root: str = "/dev/vda1"
    boot: Optional[str] = None
    swap: Optional[str] = None


@dataclass
class Instance:
    """One instance's disk and the way to run the OS scripts on it, as Ganeti would."""

    installed_os: InstalledOS
    workdir: Path
    variant: str
    kernel: Optional[kit.NodeKernel]
    disk: Path

    def environ(self, **extra: str) -> dict[str, str]:
        env = ganeti_environ(
            self.disk,
            FQDN,
            OS_VARIANT=self.variant,
            INSTANCE_OS=f"gentoobootstrap+{self.variant}",
            INSTANCE_HV_kernel_path=str(self.kernel.vmlinuz) if self.kernel else "",
            INSTANCE_HV_initrd_path=str(self.kernel.initrd) if self.kernel else "",
        )
        env.update(extra)
        return env

    def run(
        self, script: str, *, check: bool = True, **extra: Any
    ) -> subprocess.CompletedProcess[Any]:
        kwargs = {k: v for k, v in extra.items() if k in ("stdin", "stdout", "text")}
        if "stdout" in kwargs:  # export's data goes there; keep its log for the message
            kwargs["stderr"] = subprocess.PIPE
        env = {k: v for k, v in extra.items() if k not in kwargs}
        result = self.installed_os.run(script, self.environ(**env), **kwargs)
        if check:
            assert result.returncode == 0, f"{script} failed:\n{str(result.stderr)[-3000:]}"
        assert not leaks(self.workdir), f"{script} left behind: {leaks(self.workdir)}"
        return result

    def create(self, **extra: str) -> None:
        self.run("create", **extra)

    def boot(
        self,
        record_property: RecordProperty,
        expect: Expect,
        more: Optional[Callable[[qemu.Guest], None]] = None,
    ) -> None:
        """Boot the disk, log in as root on the serial console and check what the guest shows."""
        with qemu.boot(self.disk, self.workdir, kernel=self.kernel) as guest:
            record_property("boot_seconds", guest.login(HOST))
            assert guest.run("hostname") == HOST
            source, fstype = guest.run("findmnt -no SOURCE,FSTYPE /").split()
            assert (re.sub(r"\[.*\]$", "", source), fstype) == (expect.root, expect.fstype)
            assert guest.run("findmnt -no OPTIONS /").startswith("rw"), "/ was not remounted rw"
            swaps = guest.run("swapon --show=NAME --noheadings").split()
            assert swaps == ([expect.swap] if expect.swap else [])
            assert guest.run("findmnt -no SOURCE /boot || true") == (expect.boot or "")
            assert not guest.boot_failures(), "the guest's boot scripts reported failures"
            if more:
                more(guest)


@pytest.fixture
def make_instance(
    installed_os: InstalledOS,
    stage_tarball: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Callable[..., Instance]:
    """An instance with its own variant (the test stage plus ``settings``) and a fresh disk."""

    def make(
        kernel: Optional[kit.NodeKernel],
        settings: Optional[dict[str, str]] = None,
        disk_mib: int = DISK_MIB,
        hooks: tuple[Path, ...] = (),
        name: str = "",
        stage: Optional[Path] = None,
    ) -> Instance:
        variant = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"boot-{request.node.name}{name}").strip("-")
        hooks_dir = tmp_path / f"hooks{name}"
        hooks_dir.mkdir()
        for hook in hooks:  # the examples ship disabled: enabling is making them executable
            shutil.copy(hook, hooks_dir / hook.name)
            (hooks_dir / hook.name).chmod(0o755)
        installed_os.add_variant(
            variant,
            {
                "STAGE4_FILE": str(stage or stage_tarball),
                "CUSTOMIZE_DIR": str(hooks_dir),
                **(settings or {}),
            },
        )
        disk = tmp_path / f"disk{name}.img"
        with open(disk, "wb") as f:
            f.truncate(disk_mib * 2**20)
        return Instance(installed_os, tmp_path, variant, kernel, disk)

    return make


@contextmanager
def mounted_partition(disk: Path, number: int, mountpoint: Path) -> Iterator[Path]:
    """Mount partition ``number`` of a disk image (a loop device over its byte range)."""
    table = json.loads(kit.sh("sfdisk", "--json", disk))["partitiontable"]
    sector = table.get("sectorsize", 512)
    part = next(p for p in table["partitions"] if p["node"].endswith(str(number)))
    loop = kit.sh(
        "losetup", "--find", "--show",
        "--offset", str(part["start"] * sector), "--sizelimit", str(part["size"] * sector),
        disk,
    ).strip()  # fmt: skip
    try:
        mountpoint.mkdir(exist_ok=True)
        kit.sh("mount", loop, mountpoint)
        try:
            yield mountpoint
        finally:
            kit.sh("umount", mountpoint)
    finally:
        kit.sh("losetup", "--detach", loop)


# -- node-kernel mode: INSTANCE_HV_kernel_path, root_path=/dev/vda1, serial_console=True --


NODE_KERNEL_SCENARIOS = {
    "default": ({}, {}, Expect()),
    # The test stage's kernel has no vfat module to mount an ESP: BIOS only (test_uefi has both).
    "gpt": ({"PARTITION_STYLE": "gpt", "BOOT_FIRMWARE": "bios"}, {}, Expect()),
    "boot-and-swap": (
        {"BOOT_SIZE": "64", "SWAP": "yes", "SWAP_SIZE": "64"},
        {},
        Expect(boot="/dev/vda2", swap="/dev/vda3"),
    ),
    "xfs": ({}, {"OSP_FILESYSTEM": "xfs"}, Expect(fstype="xfs")),
    "btrfs": ({}, {"OSP_FILESYSTEM": "btrfs"}, Expect(fstype="btrfs")),
}


@pytest.mark.parametrize(
    ("settings", "params", "expect"),
    NODE_KERNEL_SCENARIOS.values(),
    ids=NODE_KERNEL_SCENARIOS.keys(),
)
def test_boots_with_the_node_kernel(
    make_instance: Callable[..., Instance],
    node_kernel: kit.NodeKernel,
    record_property: RecordProperty,
    settings: dict[str, str],
    params: dict[str, str],
    expect: Expect,
) -> None:
    instance = make_instance(node_kernel, settings)
    instance.create(**params)
    instance.boot(record_property, expect)


OWN_DISK_SCENARIOS = {
    "msdos": ({}, Expect()),
    # gpt: GRUB's core image goes into the BIOS boot partition create makes.
    "gpt-boot": (
        {"PARTITION_STYLE": "gpt", "BOOT_FIRMWARE": "bios", "BOOT_SIZE": "64"},
        Expect(boot="/dev/vda2"),
    ),
}


@pytest.mark.parametrize(
    ("settings", "expect"), OWN_DISK_SCENARIOS.values(), ids=OWN_DISK_SCENARIOS.keys()
)
def test_boots_from_its_own_disk_with_the_grub_hook(
    make_instance: Callable[..., Instance],
    record_property: RecordProperty,
    settings: dict[str, str],
    expect: Expect,
) -> None:
    # No kernel_path: the BIOS boots GRUB from the disk, GRUB the stage's own kernel.
    instance = make_instance(None, settings, hooks=(GRUB_HOOK,))
    instance.create()
    instance.boot(record_property, expect)


def test_boots_after_reinstall(
    make_instance: Callable[..., Instance],
    node_kernel: kit.NodeKernel,
    record_property: RecordProperty,
) -> None:
    instance = make_instance(node_kernel, {"BOOT_SIZE": "64"})
    instance.create()
    # gnt-instance reinstall: create again on the used disk, another filesystem this time.
    instance.create(INSTANCE_REINSTALL="1", OSP_FILESYSTEM="btrfs")
    instance.boot(record_property, Expect(fstype="btrfs", boot="/dev/vda2"))


def test_boots_after_export_and_import_onto_a_larger_disk(
    make_instance: Callable[..., Instance],
    node_kernel: kit.NodeKernel,
    record_property: RecordProperty,
    tmp_path: Path,
) -> None:
    source = make_instance(node_kernel, name="-source")
    source.create()
    marker = str(uuid.uuid4())
    with mounted_partition(source.disk, 1, tmp_path / "mnt") as root:
        (root / "root" / "marker").write_text(marker + "\n")
    image = tmp_path / "export.img"
    with open(image, "wb") as out:
        source.run(
            "export",
            stdout=out,
            text=False,
            EXPORT_DEVICE=str(source.disk),
            EXPORT_DISK_PATH=str(source.disk),
            EXPORT_INDEX="0",
        )
    target = make_instance(node_kernel, disk_mib=2 * DISK_MIB, name="-target")
    with open(image, "rb") as data:
        target.run(
            "import",
            stdin=data,
            text=False,
            IMPORT_DEVICE=str(target.disk),
            IMPORT_DISK_PATH=str(target.disk),
            IMPORT_INDEX="0",
            OSP_FILESYSTEM="xfs",
        )
    # Ganeti runs rename after every import.
    target.run("rename", OLD_INSTANCE_NAME=FQDN)

    def restored(guest: qemu.Guest) -> None:
        assert guest.run("cat /root/marker") == marker
        assert int(guest.run("lsblk -bno SIZE /dev/vda1")) > DISK_MIB * 2**20

    target.boot(record_property, Expect(fstype="xfs"), restored)


# -- real systemd, a NIC: the console, the network and SSH ------------------------------

#: The first NIC's MAC as Ganeti gives it (support.ganeti_environ).
MAC = "aa:00:00:12:34:56"
#: A Ganeti network shaped like qemu's user networking (slirp's own defaults).
SLIRP_NETWORK = {
    "NIC_0_IP": "10.0.2.15",
    "NIC_0_NETWORK_NAME": "slirp",
    "NIC_0_NETWORK_SUBNET": "10.0.2.0/24",
    "NIC_0_NETWORK_GATEWAY": "10.0.2.2",
}


@pytest.fixture
def ssh_key(tmp_path: Path) -> tuple[Path, str]:
    """A throw-away SSH key pair: the private key's path and the public key line."""
    key = tmp_path / "id_ed25519"
    kit.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "boot-test", "-f", key)
    return key, key.with_name("id_ed25519.pub").read_text().strip()


def settled(guest: qemu.Guest, run: Callable[[str], str]) -> None:
    """Wait until systemd has finished booting; every unit must have started."""
    state = run("systemctl is-system-running --wait || true")
    failed = "" if state == "running" else run("systemctl --failed --no-legend --plain || true")
    guest.check(state == "running", f"systemd is {state!r}, failed units: {failed}")


def check_nic(guest: qemu.Guest, run: Callable[[str], str], proto: str) -> None:
    """The NIC with Ganeti's MAC is eth0, with 10.0.2.15/24 from ``proto`` (static or dhcp).

    A static address comes with the default route via the network's gateway; qemu's
    DHCP server offers no router in restricted mode, so a lease brings none.
    """
    links = run("ip -o link show")
    names = [ln.split(":")[1].strip() for ln in links.splitlines() if f"link/ether {MAC}" in ln]
    guest.check(names == ["eth0"], f"the NIC with MAC {MAC} is {names}, not eth0:\n{links}")
    address = run("ip -o -4 addr show dev eth0")
    guest.check("inet 10.0.2.15/24" in address, f"eth0 lacks 10.0.2.15/24: {address!r}")
    guest.check(
        ("dynamic" in address) == (proto == "dhcp"), f"eth0's address is not {proto}: {address}"
    )
    if proto == "static":
        route = run("ip -4 route show default")
        guest.check(
            route.startswith("default via 10.0.2.2 dev eth0 proto static"),
            f"no static default route via 10.0.2.2 on eth0: {route!r}",
        )


def test_systemd_instances_are_reachable(
    make_instance: Callable[..., Instance],
    node_kernel: kit.NodeKernel,
    systemd_stage: Path,
    ssh_key: tuple[Path, str],
    record_property: RecordProperty,
    tmp_path: Path,
) -> None:
    key, public = ssh_key
    password = f"pw-{uuid.uuid4().hex[:12]}"
    hashed = kit.sh("openssl", "passwd", "-6", password).strip()
    machine_ids = []

    # A static address from the Ganeti network; root's password a crypt hash, and a key.
    static = make_instance(node_kernel, stage=systemd_stage, name="-static")
    static.create(OSP_NETWORK="ganeti", OSP_SSH_KEY=public, OSP_ROOT_PASSWORD=hashed,
                  **SLIRP_NETWORK)  # fmt: skip
    (tmp_path / "static").mkdir()
    with qemu.boot(static.disk, tmp_path / "static", kernel=node_kernel, nic_mac=MAC) as guest:
        # serial-getty@ttyS0 (enabled by create) lets root in with the password.
        record_property("boot_seconds", guest.login(HOST, password=password))
        settled(guest, guest.run)
        enabled = guest.run("systemctl is-enabled serial-getty@ttyS0.service")
        guest.check(enabled == "enabled", f"serial-getty@ttyS0 is {enabled!r}")
        check_nic(guest, guest.run, "static")
        fqdn = guest.ssh(key, "hostname -f")
        guest.check(fqdn == FQDN, f"hostname -f over SSH gives {fqdn!r}, not {FQDN!r}")
        machine_ids.append(guest.ssh(key, "cat /etc/machine-id"))

    # DHCP from qemu's server; a key and the default password: root is locked.
    dhcp = make_instance(node_kernel, stage=systemd_stage, name="-dhcp")
    dhcp.create(OSP_NETWORK="dhcp", OSP_SSH_KEY=public)
    (tmp_path / "dhcp").mkdir()
    with qemu.boot(dhcp.disk, tmp_path / "dhcp", kernel=node_kernel, nic_mac=MAC) as guest:
        with pytest.raises(qemu.BootFailed, match="refused the root login"):
            guest.login(HOST, password="")
        record_property("boot_seconds", guest.login_seconds)
        ssh = functools.partial(guest.ssh, key)
        settled(guest, ssh)
        check_nic(guest, ssh, "dhcp")
        fqdn = ssh("hostname -f")
        guest.check(fqdn == FQDN, f"hostname -f over SSH gives {fqdn!r}, not {FQDN!r}")
        machine_ids.append(ssh("cat /etc/machine-id"))

    assert all(re.fullmatch(r"[0-9a-f]{32}", m) for m in machine_ids), machine_ids
    assert machine_ids[0] != machine_ids[1], "two instances share a machine-id"


# -- real OpenRC (no netifrc): the console and sshd from the default runlevel -----------


def test_openrc_instance_logs_in_and_starts_sshd(
    make_instance: Callable[..., Instance],
    node_kernel: kit.NodeKernel,
    openrc_stage: Path,
    ssh_key: tuple[Path, str],
    record_property: RecordProperty,
) -> None:
    # NETWORK=none: the stage has no netifrc, so there is no network and no SSH login to try.
    _, public = ssh_key
    password = f"pw-{uuid.uuid4().hex[:12]}"
    hashed = kit.sh("openssl", "passwd", "-6", password).strip()
    instance = make_instance(node_kernel, stage=openrc_stage)
    instance.create(OSP_SSH_KEY=public, OSP_ROOT_PASSWORD=hashed)
    with qemu.boot(instance.disk, instance.workdir, kernel=node_kernel) as guest:
        # The agetty line create put in Gentoo's inittab lets root in with the password.
        record_property("boot_seconds", guest.login(HOST, password=password))
        getty = guest.run("grep '^s0:' /etc/inittab")
        guest.check("agetty -L 115200 ttyS0" in getty, f"inittab's serial line: {getty!r}")
        name = guest.run("hostname")
        guest.check(name == HOST, f"hostname is {name!r}, not {HOST!r}")
        status = guest.run("rc-status default")
        guest.check(
            re.search(r"^\s*sshd\s.*started", status, re.M) is not None,
            f"sshd did not start in the default runlevel:\n{status}",
        )
        keys = guest.run("ls /etc/ssh/ | grep '^ssh_host_.*_key$' || true")
        guest.check("ssh_host_ed25519_key" in keys, f"sshd made no host keys: {keys!r}")


# -- negative controls: the runner must notice a guest that does not let root in --------


def test_control_no_serial_console_gives_no_login(
    make_instance: Callable[..., Instance], node_kernel: kit.NodeKernel
) -> None:
    instance = make_instance(node_kernel)
    instance.create(INSTANCE_HV_serial_console="False")
    with pytest.raises(qemu.BootFailed, match="no login prompt"):  # noqa: SIM117
        with qemu.boot(instance.disk, instance.workdir, kernel=node_kernel) as guest:
            guest.login(HOST)


def test_control_wrong_fstab_uuid_stops_in_maintenance(
    make_instance: Callable[..., Instance], node_kernel: kit.NodeKernel, tmp_path: Path
) -> None:
    instance = make_instance(node_kernel)
    instance.create()
    with mounted_partition(instance.disk, 1, tmp_path / "mnt") as root:
        fstab = root / "etc" / "fstab"
        text, count = re.subn(
            r"^UUID=\S+(\s+/\s)", rf"UUID={uuid.uuid4()}\1", fstab.read_text(), flags=re.M
        )
        assert count == 1, f"no root entry by UUID in fstab:\n{fstab.read_text()}"
        fstab.write_text(text)
    with pytest.raises(qemu.BootFailed, match="maintenance"):  # noqa: SIM117
        with qemu.boot(instance.disk, instance.workdir, kernel=node_kernel) as guest:
            guest.login(HOST)
