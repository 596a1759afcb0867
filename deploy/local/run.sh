#!/usr/bin/env bash
# deploy/local/run.sh - installs the build dependencies, builds the gateway, and runs one node with
# the in-memory broker and the demo page on http://127.0.0.1:8080.
#
# It listens on loopback only unless --listen or CHAT_LISTEN says otherwise: guest mode lets anyone
# who reaches the port chat, so opening it to the network is a choice (--listen 0.0.0.0:8080).
# The binary's own default, and the container image's, stay 0.0.0.0:8080. Every other option is a
# flag or a CHAT_ variable, passed through (deploy/local/run.sh --help lists them).
# CHAT_SKIP_APT=1 skips the package installation.
#
# Only the gateway is built (no test package is needed). A build/ that an earlier run left half
# configured is set up again; when a step fails, the tail of its output is shown.
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
prog=run.sh

bash deploy/local/deps.sh build

log=$(mktemp /tmp/chat-run.XXXXXX)
step() { # what, command...
  local what=$1; shift
  if ! "$@" >"$log" 2>&1; then
    echo "$prog: $what failed: $*" >&2
    echo "--- last lines of its output (full log: $log):" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

if [ -f build/meson-private/coredata.dat ] && [ -f build/build.ninja ]; then
  : # configured: ninja re-runs meson by itself when a meson.build changed
elif [ -f build/meson-private/coredata.dat ]; then
  step "meson setup (from scratch)" meson setup --wipe build --buildtype=release
else
  # No build/, or one whose first meson setup failed before it wrote its state.
  step "meson setup" meson setup build --buildtype=release
fi
step "the build" ninja -C build gateway/chat-gateway
rm -f "$log"

listen=()
[ "${CHAT_LISTEN+set}" = set ] || listen=(--listen 127.0.0.1:8080)
for arg in "$@"; do
  case $arg in --listen|--listen=*) listen=() ;; esac
done
if [ ${#listen[@]} -gt 0 ]; then
  echo "$prog: http://127.0.0.1:8080 (loopback only; --listen 0.0.0.0:8080 opens it to the network)" >&2
fi
exec ./build/gateway/chat-gateway "${listen[@]}" "$@"
