# shellcheck shell=bash
# Sourced, not run: bookworm packages on the host, installed only when missing.
#
# Why one place: three scripts need host packages (runtime tier, kernel tier, netdevsim build) and may
# run at the same time (`make test` sets tiers up in the background), so each must wait for the dpkg
# lock rather than fail, and recover the same way from a dpkg run another apt left half-configured.
# Only bookworm's own packages go on the host (newer suites are unpacked into private prefixes).

# install_host_packages WHO PACKAGE...: installs the missing ones; prints one line saying what it did.
# Returns non-zero, with a message to stderr prefixed by WHO, if a package is still missing after that.
install_host_packages() {
  local who=$1; shift
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "host packages present: $*"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || { echo "$who: missing host packages ${missing[*]}; run as root" >&2; return 1; }
  local apt=(-o DPkg::Lock::Timeout=300)
  DEBIAN_FRONTEND=noninteractive apt-get "${apt[@]}" update -q >/dev/null ||
    { echo "$who: apt-get update failed" >&2; return 1; }
  if ! DEBIAN_FRONTEND=noninteractive apt-get "${apt[@]}" install -y -q --no-install-recommends \
      "${missing[@]}" >/dev/null; then
    # Seen once here: dpkg failing while another apt run was finishing; finish pending configuration and
    # retry once.
    echo "$who: apt-get install failed; dpkg --configure -a and one retry" >&2
    DEBIAN_FRONTEND=noninteractive dpkg --configure -a
    DEBIAN_FRONTEND=noninteractive apt-get "${apt[@]}" install -y -q --no-install-recommends \
      "${missing[@]}" >/dev/null || { echo "$who: apt-get install ${missing[*]} failed" >&2; return 1; }
  fi
  for p in "${missing[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      { echo "$who: $p still not installed" >&2; return 1; }
  done
  echo "host packages installed: ${missing[*]}"
}
