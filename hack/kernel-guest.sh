#!/usr/bin/env bash
# Run one command inside a QEMU guest booted on the Debian kernel of `make deps-kernel`, and exit with the
# command's exit code. The kernel tier uses it to run the netns tier on a kernel that has every link kind.
#
# usage: hack/kernel-guest.sh [--rw DIR]... [--] COMMAND [ARG]...
#   --rw DIR   share DIR read-write into the guest at the same path (e.g. test-results for the JUnit file)
#   env: NETCLAIM_CACHE, KERNEL_SUITE (default: hack/versions.env), NETCLAIM_KERNEL_ACCEL (kvm|tcg, default:
#        kvm when /dev/kvm works, else tcg), NETCLAIM_KERNEL_SMP (2), NETCLAIM_KERNEL_MEM (1536M),
#        NETCLAIM_KERNEL_TIMEOUT (seconds, default 1200 with KVM, 3600 with TCG)
#
# Why the host's own root as the guest's root (read-only over 9p, a tmpfs overlay on top): the guest then
# has exactly the host's Python, the repository and its .venv, iproute2 and util-linux, with nothing to
# build, download or keep in sync, and the only thing that differs from the netns tier on the host is the
# kernel, which is the point of the tier. A rootfs built from Debian packages would be a second userland
# (and a second Python environment) to maintain for no gain in what is tested. Writes inside the guest land
# in the tmpfs and vanish at power-off; only the --rw directories and a private run directory (command,
# environment, exit code, console log) are shared writable.
#
# Network safety: the guest has no network device at all (-nodefaults, -nic none); every link the tests use
# is created inside the guest's kernel.
#
# Stages: the initramfs (hack/install-kernel.sh) mounts the root and runs this script with --stage2 as the
# guest's init, which mounts the rest, loads the link-kind modules, runs the command, records its exit code
# and powers off. A guest that cannot boot, or that stops without an exit code, is an error: the console
# log is shown.
set -euo pipefail

# Modules the tests need in the guest: the link kinds netclaim creates, soft RoCE for RDMA, rdma_ucm for
# the /dev/infiniband/rdma_cm node (the connection manager every RDMA pod gets), and netdevsim, a PF whose
# VF settings (ip link set PF vf N ...) the kernel keeps (built for this kernel by hack/build-netdevsim.sh:
# Debian has none). A module that does not load stops the guest before the tests run.
GUEST_MODULES=(dummy ipvlan macvlan veth 8021q rdma_rxe rdma_ucm netdevsim)

# --- stage 2: the guest's init -----------------------------------------------------------------------------
if [ "${1:-}" = "--stage2" ]; then
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  poweroff_now() {
    sync
    if [ -x /bin/busybox ]; then /bin/busybox poweroff -f; fi
    echo o > /proc/sysrq-trigger
    sleep 10
  }
  trap poweroff_now EXIT
  cmdline_arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -1; }
  mount -t proc proc /proc
  mount -t sysfs sysfs /sys
  mount -t devtmpfs devtmpfs /dev
  mkdir -p /dev/pts /dev/shm
  mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
  mount -t tmpfs -o mode=1777 tmpfs /dev/shm
  mount -t tmpfs -o mode=0755 tmpfs /run
  mount -t tmpfs -o mode=1777 tmpfs /tmp
  mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || true
  run=$(cmdline_arg netclaim_run)
  mkdir -p "$run"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=none netclaim-run "$run"
  # guest.env (written by the host side below): RW_DIRS, WORKDIR, COMMAND, and the exported environment.
  # shellcheck disable=SC1091
  . "$run/guest.env"
  for i in "${!RW_DIRS[@]}"; do
    mkdir -p "${RW_DIRS[$i]}"
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=none "netclaim-rw$i" "${RW_DIRS[$i]}"
  done
  kver=$(uname -r)
  mkdir -p /lib/modules
  mount --bind "$(cmdline_arg netclaim_modules)" /lib/modules
  modprobe -a "${GUEST_MODULES[@]}" || { echo "netclaim guest: cannot load ${GUEST_MODULES[*]}" >&2; exit 1; }
  ip link set lo up
  hostname netclaim-guest
  echo "netclaim guest: kernel $kver up in $(cut -d' ' -f1 /proc/uptime) s; modules: ${GUEST_MODULES[*]}"
  cd "$WORKDIR"
  set +e
  "${COMMAND[@]}" < /dev/null
  rc=$?
  set -e
  echo "$rc" > "$run/rc"
  echo "netclaim guest: command exited $rc after $(cut -d' ' -f1 /proc/uptime) s of guest uptime"
  for d in "${RW_DIRS[@]}"; do umount "$d" || true; done
  umount "$run" || true
  exit 0
fi

# --- host side: boot the guest -----------------------------------------------------------------------------
HERE=$(cd "$(dirname "$0")" && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
SUITE_FROM_ENV=${KERNEL_SUITE:-}
# shellcheck source=versions.env
. "$HERE/versions.env"
KERNEL_SUITE=${SUITE_FROM_ENV:-$KERNEL_SUITE}
CACHE=${NETCLAIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netclaim}
die() { echo "kernel-guest: $*" >&2; exit 2; }

rw_dirs=()
while [ $# -gt 0 ]; do
  case $1 in
    --rw) [ $# -ge 2 ] || die "--rw needs a directory"; mkdir -p "$2"; rw_dirs+=("$(cd "$2" && pwd)"); shift 2 ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || die "usage: hack/kernel-guest.sh [--rw DIR]... [--] COMMAND [ARG]..."

current=$CACHE/kernel/$KERNEL_SUITE.current
[ -s "$current" ] || die "no kernel for Debian $KERNEL_SUITE in $CACHE/kernel (run: make deps-kernel)"
kdir=$CACHE/kernel/$(cat "$current")
kver=$(cat "$kdir/KVER" 2>/dev/null) || die "$kdir is incomplete (run: make deps-kernel)"
for f in "$kdir/boot/vmlinuz-$kver" "$kdir/initramfs.cpio.gz" "$kdir/lib/modules/$kver/modules.dep"; do
  [ -s "$f" ] || die "$f missing (run: make deps-kernel)"
done
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (run: make deps-kernel)"
# Every guest module must be in that kernel's module tree (netdevsim is only there once built): said here,
# not after a boot.
for m in "${GUEST_MODULES[@]}"; do
  modprobe -d "$kdir" -S "$kver" --show-depends "$m" >/dev/null 2>&1 ||
    die "module $m not found for $kver in $kdir/lib/modules (run: make deps-kernel)"
done

# KVM when the host really can run a vCPU (the device node alone proves nothing): a paused q35 machine is
# started and resumed once per CPU model. Nested under another hypervisor (this VM) `-cpu host` can abort
# while loading MSR 0x10a (IA32_ARCH_CAPABILITIES, refused by the outer KVM); without that MSR it runs.
# No usable model: TCG, slower, same results.
kvm_runs() { # cpu model
  printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"cont"}' '{"execute":"quit"}' |
    timeout 20 qemu-system-x86_64 -machine q35,accel=kvm -cpu "$1" -nodefaults -display none -S -qmp stdio \
      >/dev/null 2>&1
}
want=${NETCLAIM_KERNEL_ACCEL:-auto}
case $want in auto | kvm | tcg) ;; *) die "NETCLAIM_KERNEL_ACCEL must be kvm or tcg, not $want" ;; esac
accel=tcg
cpu=max
if [ "$want" != tcg ] && [ -w /dev/kvm ]; then
  for model in host host,-arch-capabilities; do
    if kvm_runs "$model"; then accel=kvm; cpu=$model; break; fi
  done
fi
if [ "$want" = kvm ] && [ "$accel" != kvm ]; then die "NETCLAIM_KERNEL_ACCEL=kvm but KVM cannot run a vCPU here"; fi
if [ "$accel" = kvm ]; then timeout_s=${NETCLAIM_KERNEL_TIMEOUT:-1200}; else timeout_s=${NETCLAIM_KERNEL_TIMEOUT:-3600}; fi

run=$(mktemp -d "${TMPDIR:-/tmp}/netclaim-kernel.XXXXXX")
trap 'rm -rf "$run"' EXIT
{
  printf 'RW_DIRS=('; for d in "${rw_dirs[@]}"; do printf '%q ' "$d"; done; printf ')\n'
  printf 'WORKDIR=%q\n' "$PWD"
  printf 'COMMAND=('; for a in "$@"; do printf '%q ' "$a"; done; printf ')\n'
  # The host's PATH (pyenv, .venv) and the variables that steer the tests; everything else starts clean.
  printf 'export HOME=/root LANG=C.UTF-8 PATH=%q\n' "$PATH"
  printf 'export NETCLAIM_REQUIRE_KINDS=1\n'
  for v in CI NETCLAIM_CACHE PYTEST_ADDOPTS NETCLAIM_RELIABILITY_SEED NETCLAIM_FUZZ_SEED; do
    [ -n "${!v+x}" ] && printf 'export %s=%q\n' "$v" "${!v}"
  done
} > "$run/guest.env"

shares=(
  -fsdev "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap"
  -device virtio-9p-pci,fsdev=root,mount_tag=netclaim-root
  -fsdev "local,id=run,path=$run,security_model=none,multidevs=remap"
  -device virtio-9p-pci,fsdev=run,mount_tag=netclaim-run
)
for i in "${!rw_dirs[@]}"; do
  shares+=(-fsdev "local,id=rw$i,path=${rw_dirs[$i]},security_model=none,multidevs=remap"
           -device "virtio-9p-pci,fsdev=rw$i,mount_tag=netclaim-rw$i")
done
append="console=ttyS0 loglevel=3 panic=-1 rdinit=/init"
append+=" netclaim_stage2=$SELF netclaim_run=$run netclaim_modules=$kdir/lib/modules"

# One boot. A guest that has not reached stage 2 within the boot budget is stopped: seen here, nested KVM
# passes the probe above and then stops the vCPU on a "KVM internal error" (emulation failure in the
# kernel's decompressor), and QEMU waits, paused, for ever. Returns QEMU's exit status; 3 = did not boot.
BOOT_MARKER="netclaim guest: kernel"
boot() { # accel cpu boot_budget_s timeout_s
  local accel=$1 cpu=$2 budget=$3 limit=$4 qpid t0 waited=0
  : > "$run/console.log"
  : > "$run/qemu.err"
  echo "kernel-guest: booting $kver (Debian $KERNEL_SUITE $(cat "$kdir/DEBIAN_VERSION")) with $accel ($cpu)," \
    "${NETCLAIM_KERNEL_SMP:-2} vCPUs, ${NETCLAIM_KERNEL_MEM:-1536M}; boot budget ${budget}s, timeout ${limit}s"
  t0=$(date +%s%N)
  timeout --kill-after=10 "$limit" qemu-system-x86_64 \
    -machine "q35,accel=$accel" -cpu "$cpu" -smp "${NETCLAIM_KERNEL_SMP:-2}" -m "${NETCLAIM_KERNEL_MEM:-1536M}" \
    -nodefaults -no-user-config -nic none -display none -monitor none -no-reboot \
    -kernel "$kdir/boot/vmlinuz-$kver" -initrd "$kdir/initramfs.cpio.gz" -append "$append" \
    "${shares[@]}" \
    -chardev "stdio,id=console,signal=off,logfile=$run/console.log" -serial chardev:console \
    < /dev/null 2> >(tee "$run/qemu.err" >&2) &
  qpid=$!
  while kill -0 "$qpid" 2>/dev/null && ! grep -q "$BOOT_MARKER" "$run/console.log"; do
    if [ "$waited" -ge "$budget" ] || grep -q "KVM internal error" "$run/qemu.err" 2>/dev/null; then
      echo "kernel-guest: no stage 2 after ${waited}s: stopping this guest" >&2
      kill "$qpid" 2>/dev/null || true
      wait "$qpid" || true
      return 3
    fi
    sleep 1
    waited=$((waited + 1))
  done
  local qemu_rc=0
  wait "$qpid" || qemu_rc=$?
  echo "kernel-guest: qemu exit $qemu_rc after $(( ($(date +%s%N) - t0) / 1000000 )) ms ($accel)"
  return "$qemu_rc"
}

qemu_rc=0
if [ "$accel" = kvm ]; then
  boot kvm "$cpu" 60 "$timeout_s" || qemu_rc=$?
  if [ "$qemu_rc" -eq 3 ] && [ "$want" != kvm ]; then
    echo "kernel-guest: the KVM guest did not boot; its console (tail):" >&2
    tail -n 15 "$run/console.log" >&2 || true
    echo "kernel-guest: falling back to TCG (slower, same results)" >&2
    accel=tcg
    timeout_s=${NETCLAIM_KERNEL_TIMEOUT:-3600}
    qemu_rc=0
    boot tcg max 300 "$timeout_s" || qemu_rc=$?
  fi
else
  boot tcg max 300 "$timeout_s" || qemu_rc=$?
fi
if [ ! -s "$run/rc" ]; then
  echo "kernel-guest: the guest stopped without the command's exit code (qemu exit $qemu_rc; 124 = timeout," \
    "3 = no boot). Console log:" >&2
  tail -n 80 "$run/console.log" >&2 || true
  exit 2
fi
rc=$(cat "$run/rc")
echo "kernel-guest: command exit $rc ($accel)"
exit "$rc"
