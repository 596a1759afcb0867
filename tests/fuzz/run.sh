#!/usr/bin/env bash
# tests/fuzz/run.sh BUILD_DIR [SECONDS] [RESULT_FILE] - runs every libFuzzer target of a build
# configured with -Dfuzz=true (tests/fuzz/meson.build says how) for SECONDS each (default 20),
# starting from a temporary COPY of its seed corpus (the committed corpus never grows).
# Writes one "fuzz <name>: pass|fail" line per target to RESULT_FILE (default: stdout only).
# A target fails on a crash, a broken invariant, a leak, a timeout (-timeout=10), an RSS above
# 2048 MB, any sanitizer report, or when its binary is missing. For a failure it prints the
# reproducer, kept under BUILD_DIR/fuzz-artifacts/<name>/, and the tail of the log (kept as
# BUILD_DIR/fuzz-logs/<name>.log). Replay a reproducer with: BUILD_DIR/tests/fuzz/fuzz_<name> FILE
set -uo pipefail
build=${1:?usage: run.sh BUILD_DIR [SECONDS] [RESULT_FILE]}
secs=${2:-20}
result=${3:-/dev/null}
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
build=$(cd -- "$build" && pwd) || { echo "no build directory $1"; exit 2; }
targets=(http_upgrade ws_input envelope)

[ "$result" = /dev/null ] || : >"$result"
work=$(mktemp -d /tmp/chat-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$build/fuzz-logs"
failed=0

for name in "${targets[@]}"; do
  exe="$build/tests/fuzz/fuzz_$name"
  log="$build/fuzz-logs/$name.log"
  arts="$build/fuzz-artifacts/$name"
  if [ ! -x "$exe" ]; then
    echo "fuzz $name: fail" >>"$result"
    echo "--- fuzz $name: fail: $exe not built (configure with -Dfuzz=true and CC=clang)"
    failed=1
    continue
  fi
  rm -rf "$arts" && mkdir -p "$arts" "$work/$name"
  cp -R "$here/corpus/$name/." "$work/$name/"
  seeds=$(ls "$work/$name" | wc -l)
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:symbolize=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$exe" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -detect_leaks=1 \
      -print_final_stats=1 -artifact_prefix="$arts/" "$work/$name" >"$log" 2>&1
  rc=$?
  repro=$(find "$arts" -type f | sort)
  # the sanitizers' own markers; libFuzzer's "==ERROR: libFuzzer" covers timeouts and OOM
  reports=$(grep -E -c '^==[0-9]+==ERROR: |^SUMMARY: |runtime error: |invariant failed: ' "$log")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1)
  if [ $rc -eq 0 ] && [ -z "$repro" ] && [ "$reports" -eq 0 ]; then
    echo "fuzz $name: pass" >>"$result"
    echo "fuzz $name: pass (${secs}s, ${execs:-?} execs, ${speed:-?} exec/s, $cov, $seeds seeds)"
  else
    echo "fuzz $name: fail" >>"$result"
    echo "--- fuzz $name: fail (exit $rc, ${execs:-?} execs)"
    for f in $repro; do echo "reproducer: $f  (replay: $exe $f)"; done
    echo "log: $log"
    tail -40 "$log"
    failed=1
  fi
done
exit $failed
