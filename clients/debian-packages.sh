# Sourced by clients/go/build.sh and clients/java/build.sh: the Debian packages a build
# needs, checked once:
#
#   require_packages clients/go "$@" -- golang-go protoc-gen-go ...
#
# With --missing among the script's arguments it prints the packages not installed
# (nothing when all are) and exits 0; otherwise it exits 1 naming them, or returns.
require_packages() {
  local name=$1 mode=${2:-}
  shift
  while [ "$#" -gt 0 ] && [ "$1" != -- ]; do shift; done
  shift
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed ||
      missing+=("$package")
  done
  if [ "$mode" = --missing ]; then
    echo "${missing[*]}"
    exit 0
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "$name: missing Debian packages: ${missing[*]}" >&2
    exit 1
  fi
}
