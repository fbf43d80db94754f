#!/usr/bin/env bash
# `make deps-kernel`: everything the kernel tier (hack/kernel-guest.sh) needs to boot a Debian kernel in QEMU.
#
# Why: the VM that runs the other tiers has a kernel without dummy, ipvlan, vlan or rdma_rxe, so those kinds
# could only be unit-tested. A stock Debian kernel has all of them as modules; booting it under QEMU gives
# the netns tier a real kernel of the kind users run, without touching the host's kernel or network.
#
# What goes where:
#   host (apt, bookworm only):  qemu-system-x86 (the VM), busybox-static (the initramfs and the guest's
#                               poweroff), kmod (depmod here, modprobe in the guest), xz-utils, and
#                               ibverbs-utils + ibverbs-providers (ibv_devinfo and librxe: the guest runs
#                               the host's userland, so its verbs programs come from here)
#   $CACHE/kernel/<kver>_<debian version>/
#       boot/vmlinuz-<kver>     the kernel from linux-image-<kver> (Debian $KERNEL_SUITE), unpacked with dpkg -x
#       lib/modules/<kver>/     its modules, with modules.dep made by depmod (the .deb ships none)
#       lib/modules/<kver>/extra/netdevsim.ko, NETDEVSIM
#                               netdevsim, which Debian does not build, built for this kernel from its
#                               source package by hack/build-netdevsim.sh (run at the end of this script)
#       initramfs.cpio.gz       busybox + the few modules needed to mount the root (9p, overlay) + /init
#       DEBIAN_VERSION, KVER    what this directory holds
#   $CACHE/kernel/<suite>.current   the directory name the runner uses for that suite
#
# Why dpkg -x and not install: a trixie kernel package would pull trixie's initramfs-tools, kmod and more
# onto a bookworm host and register a kernel the host would then try to boot. Nothing from trixie/sid is
# installed here; the package is only unpacked. The suite (and the kernel line it must carry) is pinned in
# hack/versions.env; a Debian mirror keeps only the newest build per suite, so the exact version is recorded
# at install time, and a suite that moved to another line is a hard error, as for containerd and etcd.
# A cached install is reused without network. The initramfs is rebuilt when this script changes.
#
# usage: hack/install-kernel.sh      env: NETCLAIM_CACHE, KERNEL_SUITE, KERNEL_LINE (defaults: versions.env)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SUITE_FROM_ENV=${KERNEL_SUITE:-}
LINE_FROM_ENV=${KERNEL_LINE:-}
# shellcheck source=versions.env
. "$HERE/versions.env"
KERNEL_SUITE=${SUITE_FROM_ENV:-$KERNEL_SUITE}
KERNEL_LINE=${LINE_FROM_ENV:-$KERNEL_LINE}
CACHE=${NETCLAIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netclaim}
BASE=$CACHE/kernel
HOST_PKGS=(qemu-system-x86 busybox-static kmod xz-utils ibverbs-utils ibverbs-providers)
# Modules the initramfs loads to mount the root; their dependencies are added from modules.dep.
BOOT_MODULES=(9pnet_virtio 9p overlay)

t0=$(date +%s%N); tstep=$t0
step() { local now; now=$(date +%s%N); echo "[$(( (now - tstep) / 1000000 )) ms] $*"; tstep=$now; }
die() { echo "install-kernel: $*" >&2; exit 1; }

# --- host packages (bookworm) --------------------------------------------------------------------------
# shellcheck source=host-packages.sh
. "$HERE/host-packages.sh"
done_line=$(install_host_packages install-kernel "${HOST_PKGS[@]}") || exit 1
step "$done_line"
for b in qemu-system-x86_64 depmod xz ibv_devinfo; do command -v "$b" >/dev/null || die "$b not found after install"; done
[ -x /bin/busybox ] || die "/bin/busybox (busybox-static) not found"

# --- the kernel package ----------------------------------------------------------------------------------
# A cached directory is complete when the kernel, modules.dep and the module list of the guest are there.
have_kernel() { # dir
  [ -s "$1/KVER" ] && [ -s "$1/DEBIAN_VERSION" ] && [ -f "$1/boot/vmlinuz-$(cat "$1/KVER")" ] &&
    [ -s "$1/lib/modules/$(cat "$1/KVER")/modules.dep" ]
}

dir=""
if [ -s "$BASE/$KERNEL_SUITE.current" ] && have_kernel "$BASE/$(cat "$BASE/$KERNEL_SUITE.current")"; then
  dir=$BASE/$(cat "$BASE/$KERNEL_SUITE.current")
  step "kernel $(cat "$dir/KVER") (Debian $KERNEL_SUITE $(cat "$dir/DEBIAN_VERSION")): cached in $dir"
else
  APTDIR=$BASE/apt-$KERNEL_SUITE
  A=(-o Dir::Etc::sourcelist="$APTDIR/sources.list" -o Dir::Etc::sourceparts=/dev/null
     -o Dir::State::Lists="$APTDIR/lists" -o Dir::Cache="$APTDIR/cache" -o Debug::NoLocking=1
     -o APT::Sandbox::User=root -q)
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
  printf 'deb [trusted=yes] http://deb.debian.org/debian %s main\n' "$KERNEL_SUITE" > "$APTDIR/sources.list"
  apt-get "${A[@]}" update >/dev/null || die "apt-get update of the private $KERNEL_SUITE list failed"
  step "apt-get update (private $KERNEL_SUITE list)"
  # The metapackage names the versioned image package: linux-image-amd64 -> linux-image-<kver>.
  meta_version=$(apt-cache "${A[@]}" policy linux-image-amd64 | sed -n 's/^ *Candidate: //p')
  [ -n "$meta_version" ] && [ "$meta_version" != "(none)" ] || die "no linux-image-amd64 in Debian $KERNEL_SUITE"
  case $meta_version in
    "$KERNEL_LINE".*) ;;
    *) die "Debian $KERNEL_SUITE now ships kernel $meta_version, not the pinned $KERNEL_LINE line (KERNEL_LINE in hack/versions.env)" ;;
  esac
  pkg=$(apt-cache "${A[@]}" show "linux-image-amd64=$meta_version" |
        sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*-amd64\) (= [^)]*).*/\1/p' | head -1)
  [ -n "$pkg" ] || die "cannot find the versioned image package behind linux-image-amd64 $meta_version"
  kver=${pkg#linux-image-}
  dir=$BASE/${kver}_$meta_version
  tmp=$(mktemp -d "$BASE/.unpack.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/deb"
  (cd "$tmp/deb" && apt-get "${A[@]}" download "$pkg=$meta_version" >/dev/null) || die "download $pkg=$meta_version failed"
  step "downloaded $pkg $meta_version ($(du -h "$tmp"/deb/*.deb | cut -f1))"
  dpkg -x "$tmp"/deb/*.deb "$tmp/root"
  rm -rf "$tmp/deb"
  # Debian ships modules under usr/lib/modules (merged /usr); depmod -b and modprobe look in lib/modules.
  if [ -d "$tmp/root/usr/lib/modules/$kver" ]; then
    mkdir -p "$tmp/root/lib/modules"
    mv "$tmp/root/usr/lib/modules/$kver" "$tmp/root/lib/modules/"
  fi
  [ -f "$tmp/root/boot/vmlinuz-$kver" ] || die "$pkg has no boot/vmlinuz-$kver"
  [ -d "$tmp/root/lib/modules/$kver/kernel" ] || die "$pkg has no modules for $kver"
  depmod -b "$tmp/root" "$kver" || die "depmod failed for $kver"
  echo "$kver" > "$tmp/root/KVER"
  echo "$meta_version" > "$tmp/root/DEBIAN_VERSION"
  rm -rf "$dir"
  mv "$tmp/root" "$dir"
  rm -rf "$tmp"
  echo "$(basename "$dir")" > "$BASE/$KERNEL_SUITE.current"
  step "kernel $kver unpacked, depmod done: $dir"
fi
kver=$(cat "$dir/KVER")

# --- the initramfs ---------------------------------------------------------------------------------------
# Only stage 1: load the 9p and overlay modules, mount the host's root read-only with a tmpfs overlay on
# top, and switch_root into it; the rest (mounts, modules for the tests, the command) is hack/kernel-guest.sh
# running from that root, so changing it needs no rebuild here.
initrd=$dir/initramfs.cpio.gz
if [ -s "$initrd" ] && [ "$initrd" -nt "${BASH_SOURCE[0]}" ] && [ "$initrd" -nt /bin/busybox ]; then
  step "initramfs: cached ($initrd)"
else
  tmp=$(mktemp -d "$BASE/.initramfs.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/bin" "$tmp/modules" "$tmp/proc" "$tmp/sys" "$tmp/dev" "$tmp/lower" "$tmp/rw" "$tmp/newroot"
  cp /bin/busybox "$tmp/bin/busybox"
  moddir=$dir/lib/modules/$kver
  # Dependencies first: modules.dep lists each module's dependencies; emit them depth-first, once each.
  declare -A seen=()
  order=()
  add_module() { # path relative to $moddir
    local rel=$1 deps d
    [ -n "${seen[$rel]:-}" ] && return 0
    seen[$rel]=1
    deps=$(awk -F': ?' -v m="$rel" '$1 == m { print $2 }' "$moddir/modules.dep")
    for d in $deps; do add_module "$d"; done
    order+=("$rel")
  }
  for m in "${BOOT_MODULES[@]}"; do
    rel=$(awk -F: -v m="$m" '{ n = $1; sub(/.*\//, "", n); sub(/\.ko(\.[a-z]+)?$/, "", n); gsub(/-/, "_", n) }
                              n == m { print $1; exit }' "$moddir/modules.dep")
    if [ -z "$rel" ]; then
      # Built into the kernel: nothing to load.
      grep -q "/$m.ko" "$moddir/modules.builtin" 2>/dev/null || die "module $m neither built in nor in $moddir"
      continue
    fi
    add_module "$rel"
  done
  : > "$tmp/modules.load"
  for rel in "${order[@]}"; do
    name=$(basename "$rel"); name=${name%.xz}; name=${name%.zst}; name=${name%.gz}
    # busybox insmod may lack the kernel's module compression: store them uncompressed.
    case $rel in
      *.xz) xz -dc "$moddir/$rel" > "$tmp/modules/$name" ;;
      *.zst) zstd -qdc "$moddir/$rel" > "$tmp/modules/$name" ;;
      *.gz) gzip -dc "$moddir/$rel" > "$tmp/modules/$name" ;;
      *) cp "$moddir/$rel" "$tmp/modules/$name" ;;
    esac
    echo "$name" >> "$tmp/modules.load"
  done
  cat > "$tmp/init" <<'INIT'
#!/bin/busybox sh
# netclaim kernel tier, stage 1 (made by hack/install-kernel.sh): mount the host's root, read-only over
# 9p, under a tmpfs overlay, and hand over to hack/kernel-guest.sh --stage2 inside it.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
  echo "netclaim initramfs: $*" >&2
  poweroff -f
  sleep 5
}
arg() { for w in $(cat /proc/cmdline); do case $w in "$1="*) echo "${w#*=}" ;; esac; done; }
for m in $(cat /modules.load); do
  insmod "/modules/$m" || fail "insmod $m failed"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose netclaim-root /lower ||
  fail "cannot mount the host root (9p tag netclaim-root)"
mount -t tmpfs -o mode=0755 tmpfs /rw && mkdir /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot ||
  fail "cannot mount the overlay root"
stage2=$(arg netclaim_stage2)
[ -n "$stage2" ] && [ -f "/newroot$stage2" ] || fail "stage 2 script '$stage2' not found in the root"
umount /proc /sys /dev
exec switch_root /newroot /bin/bash "$stage2" --stage2
INIT
  chmod 755 "$tmp/init"
  (cd "$tmp" && find . -mindepth 1 | LC_ALL=C sort | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$tmp.cpio.gz" ||
    die "cpio of the initramfs failed"
  mv "$tmp.cpio.gz" "$initrd"
  step "initramfs built: $initrd ($(du -h "$initrd" | cut -f1); modules: $(tr '\n' ' ' < "$tmp/modules.load"))"
fi
# --- netdevsim (not in Debian's kernel; skipped when built for this kernel by the current script) -----------
KERNEL_SUITE=$KERNEL_SUITE NETCLAIM_CACHE=$CACHE "$HERE/build-netdevsim.sh" || die "building netdevsim for $kver failed"
echo "kernel tier ready in $(( ($(date +%s%N) - t0) / 1000000 )) ms: kernel $kver, cache $dir"
