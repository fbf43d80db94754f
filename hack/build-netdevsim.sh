#!/usr/bin/env bash
# netdevsim.ko for the kernel tier's guest kernel; run by hack/install-kernel.sh (`make deps-kernel`) once the
# kernel is in place, and usable on its own.
#
# Why: netdevsim is the only software device whose PF implements the SR-IOV VF settings (ndo_set_vf_*: mac,
# vlan/qos, spoofchk, trust, link state, tx rates), so it is how the kernel tier proves VF settings programmed
# through a PF. Debian builds it for no kernel (`# CONFIG_NETDEVSIM is not set`), so it is built here, out of
# tree, for exactly the cached kernel.
#
# How:
#   1. the cached kernel's exact Debian version (DEBIAN_VERSION): linux-source-<major.minor> and
#      linux-headers-<kver> of that version, from the same private apt list as install-kernel.sh, unpacked
#      (dpkg -x or tar), never installed. A suite that has moved on is a hard error (see below).
#   2. the source tree with the kernel's own config (boot/config-<kver>) plus CONFIG_NETDEVSIM=m and without
#      install-time signing (the module is unsigned: the kernel has no CONFIG_MODULE_SIG_FORCE, loading it
#      only taints). Every other option that `olddefconfig` changes must be a toolchain probe (this host has
#      gcc 12 and pahole 1.24, Debian built with gcc 14 and pahole 1.30): anything else could change a struct
#      layout, and the script stops. Debug info and BTF stay on although the module ships neither: without
#      them CONFIG_DEBUG_INFO_BTF_MODULES goes, and with it four fields of struct module; the section keeps
#      its cache-line-rounded size, the kernel writes its own fields over the module's `exit` pointer, and
#      loading fails with "Invalid relocation target, existing value is nonzero" (seen). pahole is only
#      asked for its version: module BTF needs a vmlinux, which is not here, so kbuild skips it.
#   3. `make modules_prepare` with KERNELRELEASE=<kver>: the kbuild tools (fixdep, modpost, genksyms, objtool)
#      are built from the tree with the host's compiler; Debian's linux-kbuild binaries need trixie's glibc.
#   4. Debian's Module.symvers (from the headers package), so the symbol CRCs recorded in the module are the
#      kernel's (CONFIG_MODVERSIONS), then `make M=drivers/net/netdevsim`.
#   5. checks against a Debian module of this kernel: the same vermagic, and the same struct module as far
#      as a module can tell, its size and where the module's init and exit pointers sit in it (the
#      relocations of .gnu.linkonce.this_module). Then the debug info is stripped, as in Debian's modules,
#      and lib/modules/<kver>/extra/netdevsim.ko (uncompressed) installed, with depmod, so `modprobe
#      netdevsim` in the guest also loads its dependency (psample).
#
# Cache: $dir/NETDEVSIM records the kernel, its Debian version and the sha256 of this script; with it in
# place and the module in modules.dep nothing is done (no network). The build tree and the .debs (≈160 MB)
# are deleted after the build. A Debian mirror keeps only the newest build of a suite: once the suite has
# moved past the cached kernel, that kernel's source is gone, and the way out is a new kernel (printed).
#
# usage: hack/build-netdevsim.sh      env: NETCLAIM_CACHE, KERNEL_SUITE (default: versions.env)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SUITE_FROM_ENV=${KERNEL_SUITE:-}
# shellcheck source=versions.env
. "$HERE/versions.env"
KERNEL_SUITE=${SUITE_FROM_ENV:-$KERNEL_SUITE}
CACHE=${NETCLAIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netclaim}
BASE=$CACHE/kernel
HOST_PKGS=(make gcc libc6-dev binutils bc flex bison libelf-dev libssl-dev dwarves xz-utils kmod)
# Options `olddefconfig` may change besides the ones set below: only what the toolchain is and can do
# (compiler, assembler, linker, pahole and rustc versions and probes) and the key files that only building
# and signing vmlinux read. Code generation may differ; data layout does not. An option that depends on a
# probe and changes with it is not listed here, so it stops the build.
TOOLCHAIN_OPTIONS='^CONFIG_(CC_HAS_[A-Z0-9_]+|CC_OPT_[A-Z0-9_]+|CC_VERSION_TEXT|GCC_VERSION|GCC_ASM_GOTO_OUTPUT_BROKEN|AS_VERSION|LD_VERSION|PAHOLE_VERSION|PAHOLE_HAS_[A-Z0-9_]+|RUSTC_[A-Z0-9_]+|MODULE_SIG_ALL|MODULE_SIG_KEY|SYSTEM_TRUSTED_KEYS|BUILD_SALT|NETDEVSIM)$'

t0=$(date +%s%N); tstep=$t0
step() { local now; now=$(date +%s%N); echo "[$(( (now - tstep) / 1000000 )) ms] $*"; tstep=$now; }
die() { echo "build-netdevsim: $*" >&2; exit 1; }

current=$BASE/$KERNEL_SUITE.current
[ -s "$current" ] || die "no kernel for Debian $KERNEL_SUITE in $BASE (run hack/install-kernel.sh first)"
dir=$BASE/$(cat "$current")
kver=$(cat "$dir/KVER" 2>/dev/null) || die "$dir has no KVER (run hack/install-kernel.sh)"
debver=$(cat "$dir/DEBIAN_VERSION" 2>/dev/null) || die "$dir has no DEBIAN_VERSION (run hack/install-kernel.sh)"
moddir=$dir/lib/modules/$kver
config=$dir/boot/config-$kver
if [ ! -s "$moddir/modules.dep" ] || [ ! -s "$config" ]; then die "$dir is incomplete (run hack/install-kernel.sh)"; fi
ko=$moddir/extra/netdevsim.ko
stamp="netdevsim for $kver (Debian $debver), build-netdevsim.sh sha256 $(sha256sum < "${BASH_SOURCE[0]}" | cut -c1-64)"

# --- cached? ---------------------------------------------------------------------------------------------
if [ -s "$ko" ] && [ "$(cat "$dir/NETDEVSIM" 2>/dev/null)" = "$stamp" ] &&
   grep -q '^extra/netdevsim\.ko:' "$moddir/modules.dep"; then
  step "netdevsim: cached ($ko)"
  exit 0
fi

# --- host packages (bookworm) --------------------------------------------------------------------------
# shellcheck source=host-packages.sh
. "$HERE/host-packages.sh"
done_line=$(install_host_packages build-netdevsim "${HOST_PKGS[@]}") || exit 1
step "$done_line"
for b in make gcc flex bison bc pahole xz objdump readelf strip depmod modinfo modprobe; do
  command -v "$b" >/dev/null || die "$b not found after install"
done

# --- the source and headers packages of exactly this kernel ------------------------------------------------
# The private list of install-kernel.sh (same directory, same options): the suite's package lists, nothing
# registered with the host's apt or dpkg.
APTDIR=$BASE/apt-$KERNEL_SUITE
A=(-o Dir::Etc::sourcelist="$APTDIR/sources.list" -o Dir::Etc::sourceparts=/dev/null
   -o Dir::State::Lists="$APTDIR/lists" -o Dir::Cache="$APTDIR/cache" -o Debug::NoLocking=1
   -o APT::Sandbox::User=root -q)
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
printf 'deb [trusted=yes] http://deb.debian.org/debian %s main\n' "$KERNEL_SUITE" > "$APTDIR/sources.list"
apt-get "${A[@]}" update >/dev/null || die "apt-get update of the private $KERNEL_SUITE list failed"
step "apt-get update (private $KERNEL_SUITE list)"
line=$(echo "$kver" | cut -d. -f1,2)
src_pkg=linux-source-$line
hdr_pkg=linux-headers-$kver
for p in "$src_pkg" "$hdr_pkg"; do
  versions=$(apt-cache "${A[@]}" madison "$p" | awk -F' *[|] *' '{ print $2 }' | paste -sd ' ')
  case " $versions " in
    *" $debver "*) ;;
    *) die "Debian $KERNEL_SUITE has $p ${versions:-in no version}, not $debver, the version of the cached kernel" \
           "($dir). Its source is gone from the mirror; move the kernel tier to the suite's current kernel:" \
           "rm $current && make deps-kernel" ;;
  esac
done

tmp=$(mktemp -d "$BASE/.netdevsim.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/deb" "$tmp/hdr"
(cd "$tmp/deb" && apt-get "${A[@]}" download "$src_pkg=$debver" "$hdr_pkg=$debver" >/dev/null) ||
  die "download of $src_pkg and $hdr_pkg $debver failed"
step "downloaded $src_pkg and $hdr_pkg $debver ($(du -ch "$tmp"/deb/*.deb | tail -1 | cut -f1))"
# The source package holds one tarball; it is streamed out of the .deb, not stored.
dpkg-deb --fsys-tarfile "$tmp"/deb/"${src_pkg}"_*.deb | tar -xO "./usr/src/$src_pkg.tar.xz" | xz -dc -T0 |
  tar -x -C "$tmp" || die "cannot unpack $src_pkg"
src=$tmp/$src_pkg
[ -d "$src/drivers/net/netdevsim" ] || die "$src_pkg has no drivers/net/netdevsim"
dpkg -x "$tmp"/deb/"${hdr_pkg}"_*.deb "$tmp/hdr"
symvers=$tmp/hdr/usr/src/$hdr_pkg/Module.symvers
[ -s "$symvers" ] || die "$hdr_pkg has no Module.symvers"
rm -rf "$tmp/deb"
step "unpacked the source tree and Module.symvers"

# --- configure, prepare, build -----------------------------------------------------------------------------
K=(make -C "$src" -s -j"$(nproc)" KERNELRELEASE="$kver")
log=$tmp/build.log
run() { # description, command...
  local what=$1; shift
  "$@" >> "$log" 2>&1 || { tail -n 40 "$log" >&2; die "$what failed (log above)"; }
}
cp "$config" "$src/.config"
"$src/scripts/config" --file "$src/.config" --module NETDEVSIM --disable MODULE_SIG_ALL --set-str BUILD_SALT "$kver"
run "make olddefconfig" "${K[@]}" olddefconfig
grep -qx 'CONFIG_NETDEVSIM=m' "$src/.config" || die "CONFIG_NETDEVSIM=m did not survive olddefconfig"
# The options that are set, as NAME=value lines: "is not set" and absent (hidden by an unmet dependency)
# both mean n, and a value only one side has counts as changed.
options() { sed -n 's/^\(CONFIG_[A-Za-z0-9_]*=.*\)/\1/p' "$1" | LC_ALL=C sort; }
changed=$(LC_ALL=C comm -3 <(options "$config") <(options "$src/.config") | sed 's/^\t//; s/=.*//' | sort -u |
          grep -Ev "$TOOLCHAIN_OPTIONS" || true)
[ -z "$changed" ] || die "olddefconfig with $(gcc -dumpfullversion) changed options beyond toolchain probes" \
  "(the module could disagree with the kernel on data layout): $(echo "$changed" | tr '\n' ' ')"
step "configured: $kver's config + NETDEVSIM=m, gcc $(gcc -dumpfullversion) (Debian built with $(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"/\1/p' "$config"))"
run "make modules_prepare" "${K[@]}" modules_prepare
[ "$(cat "$src/include/config/kernel.release")" = "$kver" ] || die "kernel release is not $kver"
step "modules_prepare (kbuild tools and objtool built from the tree)"
cp "$symvers" "$src/Module.symvers"
run "make M=drivers/net/netdevsim" "${K[@]}" M="$src/drivers/net/netdevsim" modules
built=$src/drivers/net/netdevsim/netdevsim.ko
[ -s "$built" ] || die "no netdevsim.ko after the build"
step "built netdevsim.ko ($(du -h "$built" | cut -f1))"

# --- check against a Debian module of this kernel, install, depmod ----------------------------------------
ref_rel=$(awk -F: '$1 ~ /\/psample\.ko(\.[a-z]+)?$/ { print $1; exit }' "$moddir/modules.dep")
[ -n "$ref_rel" ] || die "no psample module in $moddir (netdevsim needs it)"
case $ref_rel in
  *.xz) xz -dc "$moddir/$ref_rel" > "$tmp/ref.ko" ;;
  *.zst) zstd -qdc "$moddir/$ref_rel" > "$tmp/ref.ko" ;;
  *.gz) gzip -dc "$moddir/$ref_rel" > "$tmp/ref.ko" ;;
  *) cp "$moddir/$ref_rel" "$tmp/ref.ko" ;;
esac
this_module_size() { objdump -h "$1" | awk '$2 == ".gnu.linkonce.this_module" { print $3 }'; }
# "offset symbol" of each relocation in struct module: init_module and cleanup_module, i.e. where the
# module's compiler put the init and exit pointers.
this_module_relocs() {
  readelf -r -W "$1" | awk -v sec=.rela.gnu.linkonce.this_module '
    /^Relocation section/ { on = index($0, "\047" sec "\047") > 0; next }
    on && $3 ~ /^R_X86_64_/ { print $1, $5 }'
}
want_magic=$(modinfo -F vermagic "$tmp/ref.ko")
got_magic=$(modinfo -F vermagic "$built")
[ "$got_magic" = "$want_magic" ] || die "vermagic '$got_magic' is not the kernel's '$want_magic'"
want_size=$(this_module_size "$tmp/ref.ko")
got_size=$(this_module_size "$built")
[ -n "$want_size" ] || die "no .gnu.linkonce.this_module section in $(basename "$ref_rel")"
[ "$got_size" = "$want_size" ] ||
  die "struct module is 0x$got_size bytes in netdevsim.ko, 0x$want_size in Debian's $(basename "$ref_rel")"
want_relocs=$(this_module_relocs "$tmp/ref.ko")
got_relocs=$(this_module_relocs "$built")
[ -n "$want_relocs" ] || die "no relocations in .gnu.linkonce.this_module of $(basename "$ref_rel")"
[ "$got_relocs" = "$want_relocs" ] ||
  die "struct module differs: init/exit at $(echo "$got_relocs" | tr '\n' ' ')in netdevsim.ko," \
      "at $(echo "$want_relocs" | tr '\n' ' ')in Debian's $(basename "$ref_rel")"
mkdir -p "$moddir/extra"
strip --strip-debug -o "$ko.tmp" "$built"
mv "$ko.tmp" "$ko"
depmod -b "$dir" "$kver" || die "depmod failed for $kver"
modprobe -d "$dir" -S "$kver" --show-depends netdevsim | grep -q '/extra/netdevsim\.ko' ||
  die "modprobe does not resolve netdevsim in $moddir after depmod"
echo "$stamp" > "$dir/NETDEVSIM"
step "installed $ko ($(du -h "$ko" | cut -f1); vermagic $got_magic; depends: $(modinfo -F depends "$ko")), depmod done"
echo "netdevsim ready in $(( ($(date +%s%N) - t0) / 1000000 )) ms: $ko"
