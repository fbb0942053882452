#!/bin/bash
# Runs inside the stage4 chroot after the packages and the root overlay.
set -euo pipefail

# The dist kernel built its initramfs when it was merged, before root_overlay's
# /etc/dracut.conf.d/ganeti.conf existed: build it again, generic and with virtio.
emerge --config sys-kernel/gentoo-kernel-bin

# Each instance makes its own machine id and SSH host keys at first boot.
: > /etc/machine-id
rm -f /etc/ssh/ssh_host_*
