#!/usr/bin/env bash
# deploy/local/run.sh - installs the build dependencies, builds, and runs one gateway node with the
# in-memory broker and the demo page on http://localhost:8080 (override with CHAT_LISTEN and the
# other CHAT_ variables or flags: deploy/local/run.sh --help lists them).
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
bash deploy/local/deps.sh build
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null
exec ./build/gateway/chat-gateway "$@"
