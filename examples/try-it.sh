#!/bin/sh
# Try the installed OS definition on a disk image, the way Ganeti runs it (as root).
#
# Builds a tiny local test stage (a few Gentoo-shaped files, not a bootable Gentoo: it
# needs no network, key or mirror), adds a variant "tryit" that installs it through
# STAGE4_FILE, and runs gentoobootstrap-try on a sparse disk image.  `make try` runs it
# with the configured paths; run by hand, the paths of the documented
#   ./configure --prefix=/usr --localstatedir=/var --sysconfdir=/etc
# apply unless OS_DIR, CONF_DIR or SBINDIR say otherwise.  The image and its log go to
# WORK (/var/tmp/gentoobootstrap-try).  The variant exists only while it runs: the
# installed variants.list is put back as it was and variants/tryit.conf removed; its
# stage is cached in WORK/cache, removed too, never in the node's cache.
#
# For the real thing (the newest official stage3) try the default variant instead:
#   gentoobootstrap-try /var/tmp/disk.img --size 8G --name test.example.com
set -eu

OS_DIR=${OS_DIR:-/usr/share/ganeti/os/gentoobootstrap}
CONF_DIR=${CONF_DIR:-/etc/ganeti/instance-gentoobootstrap}
SBINDIR=${SBINDIR:-/usr/sbin}
WORK=${WORK:-/var/tmp/gentoobootstrap-try}
SIZE=${SIZE:-1G}
NAME=${NAME:-try.example.com}

[ -d "$WORK" ] || mkdir -m 0755 "$WORK"
# Everything below is written as root into WORK: it must be root's and no one else's.
case "$(stat -c %u:%A "$WORK")" in
    0:d????-??-?) ;;
    *) echo "ERROR: WORK=$WORK must be a directory of root's that only root can write" >&2
       exit 1 ;;
esac
stage=$WORK/stage4-tryit.tar.xz
tree=$WORK/stage-tree
rm -rf "$tree"
mkdir -p "$tree"
(
    cd "$tree"
    mkdir -p bin sbin boot dev proc sys run tmp root home var/log var/tmp usr/bin usr/sbin \
        etc/conf.d etc/init.d etc/runlevels/boot etc/runlevels/default etc/portage \
        etc/ssh usr/share/zoneinfo
    chmod 1777 tmp var/tmp
    chmod 700 root
    echo "Gentoo Base System release 2.17" > etc/gentoo-release
    printf 'NAME=Gentoo\nID=gentoo\nPRETTY_NAME="Gentoo Linux"\n' > etc/os-release
    printf '# /etc/fstab: static file system information.\n' > etc/fstab
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost\n' > etc/hosts
    printf 'hostname="localhost"\n' > etc/conf.d/hostname
    printf 'root:x:0:0:root:/root:/bin/bash\nportage:x:250:250:portage:/var/tmp/portage:/sbin/nologin\n' > etc/passwd
    printf 'root:*:10770:0:::::\nportage:!:10770::::::\n' > etc/shadow
    chmod 640 etc/shadow
    printf 'root:x:0:root\nportage:x:250:portage\n' > etc/group
    printf 'id:3:initdefault:\nc1:12345:respawn:/sbin/agetty 38400 tty1 linux\n#s0:12345:respawn:/sbin/agetty -L 9600 ttyS0 vt100\n' > etc/inittab
    : > etc/machine-id
    printf '#!/sbin/openrc-run\n' > etc/init.d/net.lo
    printf '#!/sbin/openrc-run\n' > etc/init.d/sshd
    chmod 755 etc/init.d/net.lo etc/init.d/sshd
    ln -sf ../usr/share/zoneinfo/UTC etc/localtime
    printf 'TZif2 (not really)\n' > usr/share/zoneinfo/UTC
)
tar -C "$tree" --numeric-owner --owner=0 --group=0 -cJf "$stage.tmp" .
mv "$stage.tmp" "$stage"
rm -rf "$tree"

marker="# Written by try-it.sh: a tiny local test stage, not a real Gentoo."
conf=$CONF_DIR/variants/tryit.conf
list=$OS_DIR/variants.list
if [ -e "$conf" ] && [ "$(head -n 1 "$conf")" != "$marker" ]; then
    echo "ERROR: $conf exists and is not try-it.sh's: rename that variant first" >&2
    exit 1
fi
# Put the admin's configuration back however this ends.
saved=$WORK/variants.list.saved
cp -p "$list" "$saved"
undo() {
    cat "$saved" > "$list"
    rm -f "$saved" "$conf"
    rm -rf "$WORK/cache"
}
trap undo EXIT
trap 'exit 130' INT TERM HUP

mkdir -p "$CONF_DIR/variants"
cat > "$conf" <<CONF
$marker
STAGE4_FILE="$stage"
VERIFY="none"
CACHE_DIR="$WORK/cache"
SWAP="yes"
SWAP_SIZE="64"
CONF
grep -qx tryit "$list" || echo tryit >> "$list"

"$SBINDIR/gentoobootstrap-try" "$WORK/disk.img" --size "$SIZE" --name "$NAME" --variant tryit
