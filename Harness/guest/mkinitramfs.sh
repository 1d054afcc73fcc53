#!/bin/sh
# mkinitramfs.sh OUT MODULES_DIR
#
# Builds NestBench's guest initramfs (gzip'ed newc cpio) at OUT: busybox-static, Harness/guest/init,
# and the modules a guest needs to mount the host's root over 9p with a tmpfs overlay (virtio,
# 9p, overlay), taken with their dependencies from MODULES_DIR (/lib/modules/VERSION of the guest
# kernel). Everything else (kvm, kvm_amd, ...) is loaded after the switch into the shared root.
set -eu
out=$1
moddir=$2
here=$(cd "$(dirname "$0")" && pwd)
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "mkinitramfs: $busybox missing (apt-get install busybox-static)" >&2; exit 2; }
[ -f "$moddir/modules.dep" ] || { echo "mkinitramfs: $moddir/modules.dep missing (no modules for this kernel)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/sbin" "$work/proc" "$work/sys" "$work/dev" "$work/mnt" "$work/newroot" "$work/lib/nb"
cp "$busybox" "$work/bin/busybox"
for applet in sh mount umount mkdir cat echo sleep insmod modprobe chroot poweroff grep sed ls switch_root ip tr dirname cp chmod; do
    ln -s busybox "$work/bin/$applet"
done
ln -s ../bin/busybox "$work/sbin/modprobe"
cp "$here/init" "$work/init"
chmod 755 "$work/init"

# Modules in load order: each one's dependencies (modules.dep lists them, deepest last) first.
: >"$work/lib/nb/modules"
add() {
    local line file deps dep name base
    line=$(grep -m1 -E "(^|/)$1\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep" || true)
    [ -n "$line" ] || return 0 # built into this kernel
    file=${line%%:*}
    deps=${line#*:}
    for dep in $(echo $deps | tr ' ' '\n' | sed -n '1!G;h;$p'); do
        name=$(basename "$dep"); name=${name%%.ko*}
        add "$name"
    done
    base=$(basename "$file")
    grep -qx "$base" "$work/lib/nb/modules" && return 0
    case "$base" in
    *.ko) cp "$moddir/$file" "$work/lib/nb/$base" ;;
    *.ko.xz) xz -dc "$moddir/$file" >"$work/lib/nb/${base%.xz}"; base=${base%.xz} ;;
    *.ko.zst) zstd -dcq "$moddir/$file" >"$work/lib/nb/${base%.zst}"; base=${base%.zst} ;;
    *.ko.gz) gzip -dc "$moddir/$file" >"$work/lib/nb/${base%.gz}"; base=${base%.gz} ;;
    esac
    grep -qx "$base" "$work/lib/nb/modules" || echo "$base" >>"$work/lib/nb/modules"
}
for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci 9pnet 9pnet_virtio netfs fscache 9p overlay; do
    add "$m"
done
# A standalone guest (nb.standalone=1) also loads virtio_console (the doorbell's virtio-serial port):
# listed apart so that other guests load exactly what they did before.
cp "$work/lib/nb/modules" "$work/lib/nb/base-modules"
add virtio_console
grep -vxF -f "$work/lib/nb/base-modules" "$work/lib/nb/modules" >"$work/lib/nb/standalone-modules" || true
mv "$work/lib/nb/base-modules" "$work/lib/nb/modules"
(cd "$work" && find . | cpio -o -H newc --quiet | gzip -1) >"$out.tmp.$$"
mv "$out.tmp.$$" "$out"
