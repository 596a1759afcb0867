#!/usr/bin/env bash
# deploy/local/deps.sh - installs what chat-gateway needs on Debian 12 (run as root).
#   deps.sh build   compiler, meson, libraries (enough to build and run the gateway)
#   deps.sh test    the above plus everything the test suites use (redis-server, nginx,
#                   python3-websockets, pytest, chromium for the browser test, clang for fuzzing,
#                   docker-compose to validate the compose file; kubectl comes with the machine)
# Set CHAT_SKIP_APT=1 to skip (for a machine that already has everything).
set -euo pipefail
what=${1:-build}
[ "${CHAT_SKIP_APT:-0}" = 1 ] && exit 0
build_pkgs=(build-essential meson ninja-build pkg-config python3 libuv1-dev libwslay-dev
            libhiredis-dev libcjson-dev libssl-dev)
test_pkgs=(libcmocka-dev redis-server nginx python3-websockets python3-pytest python3-jwt
           chromium clang curl procps iproute2 docker-compose
           python3-twisted python3-autobahn python3-txaio)
pkgs=("${build_pkgs[@]}")
[ "$what" = test ] && pkgs+=("${test_pkgs[@]}")
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" != 0 ]; then
  echo "deps.sh: run as root (or install: ${pkgs[*]})" >&2
  exit 1
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
