"""Our OS definition under a real single-node Ganeti 3.0 cluster.

Every scenario goes through Ganeti's own commands only, then checks the exit
status, the OS logs Ganeti wrote in /var/log/ganeti/os/, and the guest's files
on the disk (mounted read-only by the test).  The ``lab`` fixture fails a test
that leaves any loop device or mount of our disks behind.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from lab import DOMAIN, Guest, Lab, guest_disk, partitions

from gentoobootstrap.config.parameters import PARAMETERS
from support import guesttree, stage
from support.install import InstalledOS

pytestmark = pytest.mark.ganeti

OS = "gentoobootstrap"


def name(short: str) -> str:
    return f"{short}.{DOMAIN}"


def os_log(lab: Lab, mark: frozenset[str], operation: str, instance: str) -> str:
    """The one log of ``operation`` on ``instance`` written since ``mark``: checked."""
    logs = lab.os_logs(mark, operation, instance)
    assert len(logs) == 1, f"expected one {operation} log of {instance}, found {logs}"
    text = logs[0].read_text()
    assert "Traceback" not in text, text
    return text


def assert_succeeded(log: str) -> None:
    assert "ERROR" not in log, log


def assert_stage_installed(guest: Guest, test_stage: stage.Stage, fstype: str) -> None:
    """The stage is on the guest entry by entry; only /etc, the grow service and the ESP's
    mount point may differ."""
    assert guest.fstype(guest.root) == fstype
    made = {"boot", "efi", *guesttree.GROWN}
    problems = stage.compare(test_stage.tree, guest.root, ignore=made)
    boot = [m for t, m in guest.filesystems.values() if m != guest.root]
    if boot:  # a separate /boot: compared on its own filesystem
        [boot_mount] = boot
        problems = [p for p in problems if not p.startswith("boot/")]
        problems += stage.compare(test_stage.tree / "boot", boot_mount, ignore={"."})
    problems = [p for p in problems if not p.startswith(("etc/", "etc:"))]
    assert problems == []
    fstab = (guest.root / "etc" / "fstab").read_text()
    assert re.search(rf"^UUID=\S+\s+/\s+{fstype}\s", fstab, re.M), fstab


def installed_guest(lab: Lab, instance: str, test_stage: stage.Stage, fstype: str) -> None:
    with guest_disk(lab.disk_path(instance), lab.workdir) as guest:
        assert_stage_installed(guest, test_stage, fstype)


# --- what Ganeti sees ----------------------------------------------------------------------------


def test_diagnose_shows_gentoobootstrap_valid_with_api_20_variants_and_parameters(
    lab: Lab, gentoobootstrap: InstalledOS
) -> None:
    out = lab.gnt("os", "diagnose").stdout
    block = out[out.index(f"OS: {OS} ") :].split("\n\n")[0]
    assert f"OS: {OS} [global status: valid]" in block
    versions = re.search(r"\[API versions: ([\d, ]+)\]", block)
    assert versions and "20" in versions.group(1).split(", "), block
    assert f"Variants: [{', '.join(sorted(gentoobootstrap.variants()))}]" in block
    listed = re.search(r"\[parameters: ([^\]]*)\]", block)
    assert listed and sorted(listed.group(1).split(", ")) == sorted(PARAMETERS), block
    assert f"path: /srv/ganeti/os/{OS}" in block

    names = lab.gnt("os", "list", "--no-headers").stdout.split()
    assert {f"{OS}+{v}" for v in gentoobootstrap.variants()} <= set(names)


def test_info_lists_every_parameter_with_its_description(
    lab: Lab, gentoobootstrap: InstalledOS
) -> None:
    out = lab.gnt("os", "info", OS).stdout
    assert "valid: True" in out
    for parameter in PARAMETERS.values():
        assert f"{parameter.name}: {parameter.help}" in out


def test_cluster_verify_finds_nothing_wrong_with_our_os_or_its_instances(
    lab: Lab, gentoobootstrap: InstalledOS
) -> None:
    lab.add_instance(name("verify1"), f"{OS}+default")

    r = lab.gnt("cluster", "verify", check=False)

    # This machine is no real node: no /proc/sysrq-trigger, no sshd.  Nothing else may show.
    known = ("node setup error: The procfs filesystem", "ssh communication with node")
    problems = [
        line
        for line in r.stdout.splitlines()
        if re.search(r"- (ERROR|WARNING):", line) and not any(k in line for k in known)
    ]
    assert problems == [], r.stdout


# --- create ------------------------------------------------------------------------------------


def test_add_on_a_file_disk_installs_the_stage(
    lab: Lab, gentoobootstrap: InstalledOS, test_stage: stage.Stage
) -> None:
    mark = lab.log_mark()
    lab.add_instance(name("file1"), f"{OS}+default")

    assert_succeeded(os_log(lab, mark, "add", name("file1")))
    disk = lab.disk_path(name("file1"))
    assert disk.is_file()
    with guest_disk(disk, lab.workdir) as guest:
        assert_stage_installed(guest, test_stage, "ext4")
        assert [p.number for p in guest.partitions] == [1]
        assert (guest.root / "etc" / "hostname").read_text() == "file1\n"


def test_add_with_a_second_variant_uses_its_layout(
    lab: Lab, gentoobootstrap: InstalledOS, test_stage: stage.Stage
) -> None:
    mark = lab.log_mark()
    lab.add_instance(name("variant1"), f"{OS}+lab2")

    assert_succeeded(os_log(lab, mark, "add", name("variant1")))
    with guest_disk(lab.disk_path(name("variant1")), lab.workdir) as guest:
        assert_stage_installed(guest, test_stage, "ext3")
        assert len(guest.partitions) == 5  # root, /boot, swap, gpt's ESP and BIOS boot
        fstab = (guest.root / "etc" / "fstab").read_text()
        assert re.search(r"^UUID=\S+\s+/efi\s+vfat\s", fstab, re.M), fstab
        assert re.search(r"^UUID=\S+\s+/boot\s", fstab, re.M), fstab
        assert re.search(r"^UUID=\S+\s+none\s+swap\s", fstab, re.M), fstab


def test_add_with_the_filesystem_parameter_makes_xfs(
    lab: Lab, gentoobootstrap: InstalledOS, test_stage: stage.Stage
) -> None:
    mark = lab.log_mark()
    lab.add_instance(name("xfs1"), f"{OS}+default", params={"filesystem": "xfs"})

    assert_succeeded(os_log(lab, mark, "add", name("xfs1")))
    installed_guest(lab, name("xfs1"), test_stage, "xfs")


def test_grow_disk_adds_the_space_right_after_the_root_partition(
    lab: Lab, gentoobootstrap: InstalledOS, test_stage: stage.Stage
) -> None:
    """gnt-instance grow-disk: root is last on the disk, so the guest can grow into the space."""
    mark = lab.log_mark()
    lab.add_instance(name("grow1"), f"{OS}+lab2", disk="size=2G")
    assert_succeeded(os_log(lab, mark, "add", name("grow1")))
    lab.gnt("instance", "grow-disk", name("grow1"), "0", "1G")

    disk = lab.disk_path(name("grow1"))
    assert disk.stat().st_size == 3 * 2**30
    with guest_disk(disk, lab.workdir) as guest:
        [root] = [n for n, (_, mount) in guest.filesystems.items() if mount == guest.root]
        last = max(guest.partitions, key=lambda p: p.start)
        assert last.number == root == 1  # root_path's /dev/vda1, with /boot and swap before it
        # The old end of the disk, less gpt's backup table: the new GiB follows root directly.
        assert last.start + last.size == 2 * 2**30 - 2**20
        assert (guest.root / "usr/libexec/ganeti-growroot").is_file()


def test_os_parameters_reach_the_guest_and_a_secret_one_stays_out_of_the_log(
    lab: Lab, gentoobootstrap: InstalledOS, test_stage: stage.Stage
) -> None:
    password = "$6$labsalt$U7v4Fb0tSecretHashForTheLab"
    mark = lab.log_mark()
    lab.add_instance(
        name("params1"),
        f"{OS}+default",
        params={"timezone": "UTC"},
        secret={"root_password": password},
    )

    log = os_log(lab, mark, "add", name("params1"))
    assert_succeeded(log)
    assert password not in log and "U7v4Fb0t" not in log
    with guest_disk(lab.disk_path(name("params1")), lab.workdir) as guest:
        assert (guest.root / "etc" / "timezone").read_text() == "UTC\n"
        shadow = (guest.root / "etc" / "shadow").read_text()
        assert f"root:{password}:" in shadow


def test_verify_refuses_a_bad_filesystem_before_any_disk_is_touched(
    lab: Lab, gentoobootstrap: InstalledOS
) -> None:
    mark = lab.log_mark()
    r = lab.add_instance(name("ntfs1"), f"{OS}+default", params={"filesystem": "ntfs"}, check=False)

    assert r.returncode == 1
    message = r.stdout + r.stderr
    assert "filesystem" in message and "ext4" in message and "xfs" in message, message
    assert name("ntfs1") not in lab.instances()
    assert lab.os_logs(mark, "add", name("ntfs1")) == []
    assert not (lab.storage_dir / name("ntfs1")).exists()  # where its disk would be


def test_a_signed_but_hostile_stage3_is_refused_before_the_disk_is_touched(
    lab: Lab, gentoobootstrap: InstalledOS
) -> None:
    mark = lab.log_mark()
    r = lab.add_instance(name("hostile1"), f"{OS}+hostile", check=False)

    assert r.returncode == 1
    log = os_log(lab, mark, "add", name("hostile1"))
    last = log.strip().splitlines()[-1]
    assert "ERROR" in last and "outside the target" in last, log
    disk = lab.disk_path(name("hostile1"))
    assert disk.stat().st_blocks == 0  # Ganeti's sparse file: not a byte was written


def test_blockdev_add_then_reinstall_installs_the_stage(
    lab: Lab, gentoobootstrap: InstalledOS, test_stage: stage.Stage
) -> None:
    device = lab.adoptable("block1")
    mark = lab.log_mark()
    lab.add_instance(name("block1"), f"{OS}+default", "blockdev", f"adopt={device}")
    assert lab.os_logs(mark, "add", name("block1")) == []  # Ganeti skips create on adoption

    lab.gnt("instance", "reinstall", "-f", name("block1"))

    log = os_log(lab, mark, "add", name("block1"))  # reinstall logs as "add" too
    assert_succeeded(log)
    assert lab.disk_path(name("block1")) == device
    installed_guest(lab, name("block1"), test_stage, "ext4")


# --- reinstall ---------------------------------------------------------------------------------


def test_reinstall_replaces_a_populated_disk(
    lab: Lab, gentoobootstrap: InstalledOS, test_stage: stage.Stage
) -> None:
    lab.add_instance(name("again1"), f"{OS}+lab2")
    disk = lab.disk_path(name("again1"))
    with guest_disk(disk, lab.workdir, writable=True) as guest:
        (guest.root / "root" / "left-over").write_text("from the first install\n")

    mark = lab.log_mark()
    lab.gnt("instance", "reinstall", "-f", "-O", "filesystem=xfs", name("again1"))

    assert_succeeded(os_log(lab, mark, "add", name("again1")))
    with guest_disk(disk, lab.workdir) as guest:
        assert not (guest.root / "root" / "left-over").exists()
        assert_stage_installed(guest, test_stage, "xfs")


def test_reinstall_after_a_create_that_failed_half_way(
    lab: Lab, gentoobootstrap: InstalledOS, test_stage: stage.Stage
) -> None:
    mark = lab.log_mark()
    r = lab.add_instance(name("half1"), f"{OS}+broken", check=False)

    assert r.returncode == 1
    assert name("half1") in lab.instances()  # Ganeti keeps it, ADMIN_down
    log = os_log(lab, mark, "add", name("half1"))
    last = log.strip().splitlines()[-1]
    assert "ERROR" in last and "50-fail" in last, log
    assert "this hook fails on purpose" in log
    assert lab.leaks() == []
    disk = lab.disk_path(name("half1"))
    assert partitions(disk), "the create should have failed after partitioning"

    mark = lab.log_mark()
    lab.gnt("instance", "reinstall", "-f", "-o", f"{OS}+default", name("half1"))

    assert_succeeded(os_log(lab, mark, "add", name("half1")))
    installed_guest(lab, name("half1"), test_stage, "ext4")


# --- rename, export, import ---------------------------------------------------------------------


def test_rename_runs_our_rename(
    lab: Lab, gentoobootstrap: InstalledOS, test_stage: stage.Stage
) -> None:
    lab.add_instance(name("old1"), f"{OS}+default")
    mark = lab.log_mark()

    lab.gnt(
        "instance", "rename", "-f", "--no-name-check", "--no-ip-check", name("old1"), name("new1")
    )

    assert lab.instances() == [name("new1")]
    assert_succeeded(os_log(lab, mark, "rename", name("new1")))
    with guest_disk(lab.disk_path(name("new1")), lab.workdir) as guest:
        assert (guest.root / "etc" / "hostname").read_text().strip() == "new1"
        assert_stage_installed(guest, test_stage, "ext4")


def test_export_then_import_under_a_new_name_onto_a_bigger_disk_gives_the_same_guest(
    lab: Lab, gentoobootstrap: InstalledOS, test_stage: stage.Stage
) -> None:
    lab.add_instance(name("orig1"), f"{OS}+lab2")
    mark = lab.log_mark()

    lab.gnt("backup", "export", "-n", lab.node, name("orig1"))
    try:
        export_log = os_log(lab, mark, "export", name("orig1"))
        assert_succeeded(export_log)
        lab.gnt(
            *("backup", "import", "-n", lab.node, "-t", "file", "--disk", "0:size=2G"),
            *("--src-node", lab.node, "--src-dir", f"/var/lib/ganeti/export/{name('orig1')}"),
            *("--net", "0:mac=generate", "--no-name-check", "--no-ip-check"),
            name("copy1"),
        )
    finally:
        lab.gnt("backup", "remove", name("orig1"), check=False)

    assert_succeeded(os_log(lab, mark, "import", name("copy1")))
    # Ganeti runs rename after every import, from the exported name.
    assert_succeeded(os_log(lab, mark, "rename", name("copy1")))
    [rename] = lab.os_logs(mark, "rename", name("copy1"))
    assert rename.name.startswith(f"rename-{OS}+lab2-{name('orig1')}-{name('copy1')}-")
    with guest_disk(lab.disk_path(name("orig1")), lab.workdir) as guest:
        original = guest_snapshot(guest)
    with guest_disk(lab.disk_path(name("copy1")), lab.workdir) as guest:
        copy = guest_snapshot(guest)
        assert_stage_installed(guest, test_stage, "ext3")
        assert (guest.root / "etc" / "hostname").read_text().strip() == "copy1"
        assert max(p.start + p.size for p in guest.partitions) > 2**30  # uses the bigger disk
    changed = sorted(p for p in set(original) | set(copy) if original.get(p) != copy.get(p))
    # Only what rename rewrote (the host name in /etc) may differ.
    assert [p for p in changed if p != "etc" and not p.startswith("etc/")] == []


def guest_snapshot(guest: Guest) -> dict[str, stage.Entry]:
    """Every entry of the guest, /boot included; mount points' own mtimes left out."""
    entries = stage.snapshot(guest.root)
    for _, mount in guest.filesystems.values():
        if mount != guest.root:
            boot = stage.snapshot(mount)
            entries.update({f"boot/{rel}" if rel != "." else "boot": e for rel, e in boot.items()})
    for mountpoint in (".", "boot"):
        if mountpoint in entries:
            entries[mountpoint] = dataclasses.replace(entries[mountpoint], mtime=0)
    return entries
