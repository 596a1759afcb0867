#!/usr/bin/env bash
# tests/browser/run.sh - runs the browser test of the demo page against a gateway binary.
# usage: tests/browser/run.sh <path-to-chat-gateway-binary>
# Needs Node.js >= 20 with npm and Debian's chromium (/usr/bin/chromium, or $CHROMIUM).
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 <path-to-chat-gateway-binary>" >&2
  exit 2
fi
bin=$(realpath -m -- "$1")
cd -- "$(dirname -- "${BASH_SOURCE[0]}")"
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
exec node two_tabs.mjs "$bin"
