#!/usr/bin/env bash
# Builds the QEMU test guest (Debian cloud kernel + busybox initramfs running test/qemu/guest/init) from
# Debian packages fetched with `apt-get download`; cached per kernel version so repeated runs reuse it.
# Usage: scripts/build-test-guest.sh [CACHE_DIR]   prints the directory holding vmlinuz and initrd.gz
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
init="$here/test/qemu/guest/init"
cache="${1:-${POSTCOPY_GUEST_CACHE:-${TMPDIR:-/tmp}/postcopy-test-guest}}"

# The kernel's ABI number changes with Debian point releases: ask the metapackage which one is current.
kpkg="$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1)"
[ -n "$kpkg" ] || { echo "build-test-guest: no linux-image-cloud-amd64 in the apt cache (run apt-get update)" >&2; exit 1; }
kver="${kpkg#linux-image-}"
# The init script is part of the key: editing it rebuilds the initrd.
key="$kver-$(md5sum <"$init" | cut -c1-8)"
out="$cache/$key"
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.gz" ]; then echo "$out"; exit 0; fi

mkdir -p "$cache"
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
# apt-get download as root warns that _apt cannot write here; harmless (it downloads unsandboxed).
# The kernel package (27 MB) is kept too, so a changed init only rebuilds the initrd.
mkdir -p "$cache/debs"
if [ ! -s "$cache/debs/$kpkg.deb" ]; then
  apt-get download -q "$kpkg" >&2
  mv ./linux-image-*.deb "$cache/debs/$kpkg.deb"
fi
cp "$cache/debs/$kpkg.deb" kernel.deb
apt-get download -q busybox-static >&2
mv ./busybox-static_*.deb busybox.deb
dpkg-deb -x kernel.deb k
dpkg-deb -x busybox.deb b

root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp b/bin/busybox "$root/bin/busybox"
# Serial console and devtmpfs are built in; virtio is modular (QEMU.md: these six, in this order in init).
for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_legacy_dev virtio/virtio_pci_modern_dev virtio/virtio_pci block/virtio_blk; do
  f="$(find k/lib/modules -path "*/drivers/$m.ko*" | head -n1)"
  [ -n "$f" ] || { echo "build-test-guest: module $m not in $kpkg" >&2; exit 1; }
  case "$f" in
    *.xz) xz -dc "$f" >"$root/lib/modules/$(basename "$m").ko" ;;
    *.zst) zstd -qdc "$f" >"$root/lib/modules/$(basename "$m").ko" ;;
    *) cp "$f" "$root/lib/modules/$(basename "$m").ko" ;;
  esac
done
install -m 0755 "$init" "$root/init"
mkdir -p "$out.tmp"
cp k/boot/vmlinuz-* "$out.tmp/vmlinuz"
(cd "$root" && find . | "$work/b/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1) >"$out.tmp/initrd.gz"
rm -rf "$out" && mv "$out.tmp" "$out"
# Builds of an older init for this kernel are no longer used.
find "$cache" -mindepth 1 -maxdepth 1 -type d -name "$kver-*" ! -name "$key" -exec rm -rf {} +
echo "$out"
