#!/usr/bin/env bash
# deploy/local/deps.sh - installs what chat-gateway needs on Debian 12.
#   deps.sh build   compiler, meson, libraries (enough to build and run the gateway)
#   deps.sh test    the above plus everything the test suites use (libcmocka-dev, redis-server,
#                   nginx, python3-websockets, pytest, chromium for the browser test, clang for
#                   fuzzing, docker-compose to validate the compose file; kubectl comes with the
#                   machine)
# Each package is checked with dpkg-query first: when all are installed it changes nothing, and
# needs no root (so a normal user can run deploy/local/run.sh). Otherwise it installs the missing
# ones with apt-get, which needs root; as another user it names them and exits 1.
# Set CHAT_SKIP_APT=1 to skip it all (for a machine that already has everything).
set -euo pipefail
prog=deps.sh
what=${1:-build}
case $what in
  build|test) ;;
  *) echo "usage: $prog build|test" >&2; exit 2 ;;
esac
[ "${CHAT_SKIP_APT:-0}" = 1 ] && exit 0
build_pkgs=(build-essential meson ninja-build pkg-config python3 libuv1-dev libwslay-dev
            libhiredis-dev libcjson-dev libssl-dev)
test_pkgs=(libcmocka-dev redis-server nginx python3-websockets python3-pytest python3-jwt
           chromium clang curl procps iproute2 docker-compose
           python3-twisted python3-autobahn python3-txaio)
pkgs=("${build_pkgs[@]}")
[ "$what" = test ] && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || status=
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$prog: all ${#pkgs[@]} packages for '$what' are installed"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "$prog: missing packages: ${missing[*]}" >&2
  echo "$prog: run as root, or install them: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi

echo "$prog: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp /tmp/chat-deps.XXXXXX)
run() { # command...: quiet unless it fails
  if ! "$@" >"$log" 2>&1; then
    echo "$prog: failed: $*" >&2
    echo "--- last lines of its output (full log: $log):" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
}
run apt-get update -qq
run apt-get install -y -qq --no-install-recommends "${missing[@]}"
rm -f "$log"
