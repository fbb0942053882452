#!/bin/busybox sh
# The boot tests' initrd: load the virtio and filesystem modules, mount root=
# (/dev/vdXN, UUID=, LABEL=) as rootfstype=/rootflags=/ro|rw say, switch_root.
# Any failure prints "initrd failed: ..." (the runner fails fast on it) and powers off.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
	echo "initrd failed: $*" >/dev/console
	poweroff -f
}

while read -r module; do
	insmod "/modules/$module" 2>/dev/null
done </modules/order

root= fstype= flags= mode=ro init=/sbin/init
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	root=*) root=${arg#root=} ;;
	rootfstype=*) fstype=${arg#rootfstype=} ;;
	rootflags=*) flags=${arg#rootflags=} ;;
	init=*) init=${arg#init=} ;;
	ro) mode=ro ;;
	rw) mode=rw ;;
	esac
done
[ -n "$root" ] || fail "no root= on the kernel command line"

# Wait for the device (bounded: 30 s), resolving UUID=/LABEL= with findfs.
tries=300
while :; do
	case "$root" in
	UUID=* | LABEL=*) dev=$(findfs "$root" 2>/dev/null) ;;
	*) dev=$root ;;
	esac
	[ -n "$dev" ] && [ -b "$dev" ] && break
	tries=$((tries - 1))
	[ "$tries" -gt 0 ] || fail "root device $root did not appear"
	usleep 100000
done

mkdir -p /newroot
mount -o "$mode${flags:+,$flags}" ${fstype:+-t "$fstype"} "$dev" /newroot ||
	fail "cannot mount $dev (root=$root) on /newroot"
[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || fail "$init not found on $root"
echo "initrd: switching to $root ($dev)"
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot "$init"
