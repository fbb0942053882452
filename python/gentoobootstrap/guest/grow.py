"""The guest's grow service: root partition and filesystem follow the disk when it grows.

``gnt-instance grow-disk`` makes the disk bigger (and Ganeti's KVM tells a running
guest); the guest then grows its root partition to the end of the disk — root
is the last partition there, see :mod:`gentoobootstrap.disk.layout` — and its
filesystem to fill the partition: at every boot, and when the kernel reports
that a disk changed size (a udev ``change`` event with ``RESIZE=1``).

One script does it under both init systems, with only what a stage3 ships:
util-linux (``findmnt``, ``sfdisk``, ``partx``, ``flock``) and the filesystem's
own tool.  systemd's own means do not cover our layouts: systemd-repart only
handles gpt (msdos is the default) and runs at boot only, and
``x-systemd.growfs`` grows at mount time, before the partition has grown.
OpenRC starts the script from a service of ours; systemd from a unit of ours.
The script never fails a boot over a missing tool: that is one line in the log.
"""

from __future__ import annotations

import logging

from gentoobootstrap.guest import initsystem
from gentoobootstrap.guest.initsystem import Init
from gentoobootstrap.guest.tree import GuestRoot

log = logging.getLogger(__name__)

NAME = "ganeti-growroot"
#: The script, the OpenRC service, the systemd unit and the udev rule, as guest paths.
SCRIPT = f"/usr/libexec/{NAME}"
OPENRC_SERVICE = f"/etc/init.d/{NAME}"
SYSTEMD_UNIT = f"/etc/systemd/system/{NAME}.service"
UDEV_RULE = f"/etc/udev/rules.d/90-{NAME}.rules"

#: POSIX sh.  ``ganeti-growroot [MOUNTPOINT]`` grows the filesystem mounted there (default /)
#: and, when it is on a partition, that partition first.
SCRIPT_TEXT = r"""#!/bin/sh
# Grow the root partition to the end of its disk and the root filesystem to fill it.
# Written by ganeti-instance-gentoobootstrap (GROW_ROOT="yes"); runs at boot and when a
# disk grows.  Usage: ganeti-growroot [MOUNTPOINT]  (default /).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C
me=ganeti-growroot
mnt=${1:-/}
status=0

say() { echo "$me: $*"; }

# have TOOL PACKAGE WHAT: true when TOOL is installed, else one line naming PACKAGE.
have() {
    command -v "$1" >/dev/null 2>&1 && return 0
    say "$1 not found (install $2): $3 is not grown"
    return 1
}

# quietly COMMAND...: run it, showing its output only when it fails.
quietly() {
    if ! out=$("$@" 2>&1); then
        say "$1 failed: $(echo "$out" | tail -n 3 | tr '\n' ' ')"
        return 1
    fi
}

# Size of the filesystem on $mnt in MiB.
fs_mib() { df -Pk "$mnt" 2>/dev/null | awk 'NR == 2 { print int($2 / 1024) }'; }

grow_partition() {
    number=$(cat "$sys/partition")
    start=$(cat "$sys/start")
    end=$((start + $(cat "$sys/size")))
    for other in "$disk_sys"/*/partition; do
        other=${other%/partition}
        if [ "$(cat "$other/start")" -gt "$start" ]; then
            say "$part is not the last partition on $disk (${other##*/} follows it): not grown"
            return 0
        fi
    done
    # In 512-byte sectors; less than 2 MiB after root is the table's own (gpt's backup).
    free=$(($(cat "$disk_sys/size") - end))
    [ "$free" -ge 4096 ] || return 0
    have sfdisk sys-apps/util-linux "$part" && have partx sys-apps/util-linux "$part" || return 0
    # gpt keeps a backup table at the old end of the disk: move it to the new end first.
    # --no-reread: root is mounted; partx tells the kernel the partition's new size.
    if sfdisk --dump "$disk" 2>/dev/null | grep -q '^label: gpt'; then
        quietly sfdisk --no-reread --no-tell-kernel --relocate gpt-bak-std "$disk" || return 1
    fi
    echo ', +' | quietly sfdisk --no-reread --no-tell-kernel -N "$number" "$disk" || return 1
    quietly partx --update --nr "$number" "$disk" || return 1
    say "grew $part to the end of $disk"
}

grow_filesystem() {
    case $fstype in
    ext2 | ext3 | ext4) have resize2fs sys-fs/e2fsprogs "$mnt" && set -- resize2fs "$part" ;;
    xfs) have xfs_growfs sys-fs/xfsprogs "$mnt" && set -- xfs_growfs "$mnt" ;;
    btrfs) have btrfs sys-fs/btrfs-progs "$mnt" && set -- btrfs filesystem resize max "$mnt" ;;
    *) say "cannot grow a $fstype filesystem: $mnt is not grown" && false ;;
    esac || return 0
    before=$(fs_mib)
    quietly "$@" || return 1
    after=$(fs_mib)
    [ "$before" = "$after" ] || say "grew the $fstype filesystem on $mnt from $before to $after MiB"
}

have findmnt sys-apps/util-linux "$mnt" || exit 0
part=$(findmnt -nvr -o SOURCE --mountpoint "$mnt")
fstype=$(findmnt -nr -o FSTYPE --mountpoint "$mnt")
if [ ! -b "$part" ]; then
    # The kernel mounted root itself (/dev/root): the fstab names its source.
    part=$(findmnt -snr -o SOURCE --evaluate --mountpoint "$mnt" 2>/dev/null)
fi
if [ -z "$fstype" ] || [ ! -b "$part" ]; then
    say "cannot find the block device of $mnt: nothing grown"
    exit 0
fi
# By device number: the name may be one sysfs does not know (a /dev/root node).
sys=$(readlink -f "/sys/dev/block/$(mountpoint -x "$part")")
if [ -r "$sys/partition" ]; then
    disk_sys=$(dirname "$(readlink -f "$sys")")
    disk=/dev/${disk_sys##*/}
    # A lock on the disk keeps a second run (a disk grown twice quickly) and udev's probing out.
    { flock 9 2>/dev/null; grow_partition; } 9<"$disk" || status=1
fi
grow_filesystem || status=1
exit $status
"""

OPENRC_TEXT = f"""#!/sbin/openrc-run
# Written by ganeti-instance-gentoobootstrap (GROW_ROOT="yes").

description="Grow the root partition and filesystem to fill the disk"

depend() {{
\tneed localmount
}}

start() {{
\tebegin "Growing the root partition and filesystem to fill the disk"
\t{SCRIPT}
\teend $?
}}
"""

SYSTEMD_TEXT = f"""# Written by ganeti-instance-gentoobootstrap (GROW_ROOT="yes").
[Unit]
Description=Grow the root partition and filesystem to fill the disk
After=local-fs.target

[Service]
Type=oneshot
ExecStart={SCRIPT}

[Install]
WantedBy=multi-user.target
"""

#: How each init system runs the script when a disk changes size while the guest runs.
_ON_RESIZE = {
    "openrc": f'RUN+="{SCRIPT}"',
    "systemd": f'RUN+="/usr/bin/systemctl --no-block start {NAME}.service"',
}


def udev_rule(init: Init) -> str:
    return (
        '# Written by ganeti-instance-gentoobootstrap (GROW_ROOT="yes"): grow root when a disk'
        " grows.\n"
        'ACTION=="change", SUBSYSTEM=="block", ENV{DEVTYPE}=="disk", ENV{RESIZE}=="1", '
        f"{_ON_RESIZE[init]}\n"
    )


def install_service(root: GuestRoot, init: Init, enabled: bool) -> None:
    """GROW_ROOT: write the grow script, its service and udev rule into the guest, enabled."""
    if not enabled:
        log.info("grow root: off (GROW_ROOT=no)")
        return
    root.write_text(SCRIPT, SCRIPT_TEXT, mode=0o755)
    if init == "openrc":
        root.write_text(OPENRC_SERVICE, OPENRC_TEXT, mode=0o755)
    else:
        root.write_text(SYSTEMD_UNIT, SYSTEMD_TEXT)
    initsystem.enable(root, init, NAME)
    root.write_text(UDEV_RULE, udev_rule(init))
    log.info("grow root: %s enabled, at boot and when the disk grows", NAME)
