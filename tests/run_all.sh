#!/usr/bin/env bash
# tests/run_all.sh - the one test command (README, CI): installs the dependencies, builds twice
# (normal and ASan+UBSan), runs every suite against both builds and prints "N passed, N failed" as
# its last line. Exit status 0 only when nothing failed and nothing was skipped.
#   suites: unit (cmocka), integration (pytest + python3-websockets against the binary),
#           browser (headless Chromium + playwright-core, normal build only)
#           autobahn (the Autobahn WebSocket suite against an echo app on our WebSocket layer),
#           fuzz (libFuzzer targets, clang build in build-fuzz, 20 s each),
#           deploy (nginx -t, docker-compose config, Dockerfile lint, kustomize build)
# CHAT_SKIP_APT=1 skips apt-get; CHAT_SUITES="unit integration" runs a subset.
set -uo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash deploy/local/deps.sh test || { echo "dependency installation failed"; echo "0 passed, 1 failed"; exit 1; }
suites=${CHAT_SUITES:-unit integration autobahn fuzz browser deploy}
results=$(mktemp -d /tmp/chat-tests.XXXXXX)
failed_build=0

# An existing build directory (e.g. the build/ of deploy/local/run.sh) is reconfigured with the
# options, so that -Dtests=enabled holds: without cmocka the setup fails here, loudly.
build() { # dir, meson options...
  local dir=$1; shift
  local setup=(meson setup "$dir" "$@")
  [ -f "$dir/meson-private/coredata.dat" ] && setup=(meson setup --reconfigure "$dir" "$@")
  "${setup[@]}" >"$results/setup-$dir.log" 2>&1 ||
    { echo "${setup[*]} failed:"; tail -30 "$results/setup-$dir.log"; return 1; }
  ninja -C "$dir" >"$results/ninja-$dir.log" 2>&1 || { tail -30 "$results/ninja-$dir.log"; return 1; }
}
build build -Dwerror=true -Dtests=enabled || failed_build=1
build build-asan -Db_sanitize=address,undefined -Dwerror=true -Dtests=enabled || failed_build=1
if [ $failed_build = 1 ]; then echo "build failed"; echo "0 passed, 1 failed"; exit 1; fi

for variant in build build-asan; do
  if [[ " $suites " == *" unit "* ]]; then
    echo "== unit ($variant)"
    meson test -C "$variant" --suite unit --print-errorlogs >"$results/unit-$variant.log" 2>&1
    cp "$variant/meson-logs/testlog.json" "$results/unit-$variant.json"
    tail -12 "$results/unit-$variant.log"
  fi
  if [[ " $suites " == *" integration "* ]]; then
    echo "== integration ($variant)"
    asan=0; [ "$variant" = build-asan ] && asan=1
    CHAT_GATEWAY_BIN="$root/$variant/gateway/chat-gateway" CHAT_TEST_ASAN=$asan \
      timeout 1200 /usr/bin/pytest -q -p no:cacheprovider tests/integration \
      --junitxml="$results/integration-$variant.xml" 2>&1 | tail -30
  fi
  if [[ " $suites " == *" autobahn "* ]]; then
    echo "== autobahn ($variant)"
    bash tests/autobahn/run.sh "$variant" "$results/autobahn-$variant.result" 2>&1 | tail -15
    sed -i "s/^autobahn:/autobahn ($variant):/" "$results/autobahn-$variant.result"
  fi
done
if [[ " $suites " == *" browser "* ]]; then
  echo "== browser"
  # one "browser <test>: pass|fail" line per test; a hung suite is one failure
  timeout 600 bash tests/browser/run.sh "$root/build/gateway/chat-gateway" \
    "$results/browser.result"
  if [ $? -ne 0 ] && ! grep -q ': fail$' "$results/browser.result" 2>/dev/null; then
    echo "browser suite: fail" >>"$results/browser.result"
  fi
fi
if [[ " $suites " == *" fuzz "* ]]; then
  echo "== fuzz"
  if CC=clang build build-fuzz -Dfuzz=true -Db_lundef=false -Db_sanitize=address,undefined \
       -Dc_args=-fsanitize=fuzzer-no-link -Dwerror=true; then
    bash tests/fuzz/run.sh build-fuzz "${CHAT_FUZZ_SECONDS:-20}" "$results/fuzz.result" 2>&1 | tail -8
  else
    echo "fuzz build: fail" >"$results/fuzz.result"
  fi
fi
if [[ " $suites " == *" deploy "* ]]; then
  echo "== deploy"
  bash tests/deploy/check.sh "$results/deploy.result"
  cat "$results/deploy.result"
fi
/usr/bin/python3 tools/test_summary.py "$results"
