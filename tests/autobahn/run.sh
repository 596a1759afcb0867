#!/usr/bin/env bash
# tests/autobahn/run.sh BUILD_DIR RESULT_FILE [RUN ARGS...] - the Autobahn|Testsuite fuzzingclient
# (Python 3 port in ../shared/autobahn, next to the repository) against chat-echo, the gateway's own
# WebSocket layer with an echo app on top (tests/autobahn/echo.c).
#   - starts BUILD_DIR/tests/autobahn/chat-echo on a free loopback port with a 16 MiB message limit
#     (section 9 sends messages up to 16 MiB), a 64 MiB send queue (an echo of a message must fit
#     in it, or the session closes with 4002); everything else at the gateway's defaults;
#   - runs ../shared/autobahn/run ws://127.0.0.1:PORT/ws (/ws: the gateway's upgrade path) with
#     --timeout 600; default cases 1-7, 9, 10; RUN ARGS ("5.*,6.*", --exclude ...) are passed on;
#   - stops the harness by PID with SIGTERM and requires exit status 0 and no sanitizer report;
#   - prints the non-passing cases and the summary line, and writes "autobahn: pass" (0 failed,
#     harness clean) or "autobahn: fail" to RESULT_FILE. Exit status 0 only on pass.
# Logs and per-case JSON reports stay in a /tmp/chat-autobahn.* folder (printed).
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR RESULT_FILE [CASES] [--exclude PATTERNS] ..." >&2
  exit 2
fi
build=$1; result=$2; shift 2
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
# The suite lives next to the repository (../shared/autobahn); a clone elsewhere (CI) finds it
# through AUTOBAHN_DIR or at /work/shared/autobahn.
runner=""
for d in "${AUTOBAHN_DIR:-}" "$root/../shared/autobahn" /work/shared/autobahn; do
  if [ -n "$d" ] && [ -x "$d/run" ]; then runner="$d/run"; break; fi
done
echo_bin="$build/tests/autobahn/chat-echo"
max_msg=16777216   # 16 MiB: the largest message of section 9 (9.1.6, 9.2.6)
send_queue=67108864

fail() { # reason
  echo "autobahn: $1" >&2
  echo "autobahn: fail" >"$result"
  exit 1
}

[ -n "$runner" ] || fail "the Autobahn suite runner is missing: set AUTOBAHN_DIR, or put it next to the repository ($(dirname -- "$root")/shared/autobahn) or at /work/shared/autobahn"
[ -x "$echo_bin" ] || fail "$echo_bin not built (ninja -C $build)"
for mod in twisted autobahn txaio; do
  /usr/bin/python3 -c "import $mod" 2>/dev/null ||
    fail "python module $mod missing: apt-get install -y python3-twisted python3-autobahn python3-txaio"
done

work=$(mktemp -d /tmp/chat-autobahn.XXXXXX)
echo "autobahn: logs and reports in $work"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# chat-echo takes exactly the gateway's options (flags, CHAT_* environment, defaults).
opts=(--max-message-bytes "$max_msg" --send-queue-bytes "$send_queue")

pid=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Start on a free port; another process may grab it between the probe and the bind: retry.
port=
for _attempt in 1 2 3 4 5; do
  p=$(free_port) || fail "cannot find a free port"
  log="$work/chat-echo.log"
  "$echo_bin" --listen "127.0.0.1:$p" --admin-listen "" --drain-delay 0 --drain-timeout 2s \
    --connect-rate-per-ip 0 \
    "${opts[@]}" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do # up to 10 s (ASan start-up is slow)
    if grep -q '"msg":"listening"' "$log"; then port=$p; break 2; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    cat "$log" >&2
    fail "chat-echo started but did not report listening within 10 s"
  fi
  wait "$pid"; rc=$?
  pid=
  grep -q 'cannot listen' "$log" || { cat "$log" >&2; fail "chat-echo exited with status $rc at start-up"; }
done
[ -n "$port" ] || { cat "$log" >&2; fail "chat-echo could not listen after 5 attempts"; }
echo "autobahn: chat-echo pid $pid on 127.0.0.1:$port ${opts[*]}"

# The runner's positional CASES must follow the URL (argparse); default --timeout 600.
cmd=("$runner" "ws://127.0.0.1:$port/ws")
if [ $# -gt 0 ] && [[ $1 != -* ]]; then cmd+=("$1"); shift; fi
cmd+=(--out "$work/reports" "$@")
[[ " $* " == *" --timeout "* ]] || cmd+=(--timeout 600)
start=$(date +%s)
timeout 700 "${cmd[@]}" >"$work/run.out" 2>"$work/run.err"
run_rc=$?
elapsed=$(( $(date +%s) - start ))
cat "$work/run.out" # one line per non-passing case, then the summary line
summary=$(grep '^autobahn: [0-9]* passed' "$work/run.out" | tail -1)
if [ -z "$summary" ]; then
  echo "autobahn: the suite gave no summary (exit $run_rc):" >&2
  tail -20 "$work/run.err" >&2
fi
echo "autobahn: suite exit $run_rc after ${elapsed}s"

# Stop the harness by PID: SIGTERM, clean exit required.
ok=1
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "autobahn: chat-echo still running 30 s after SIGTERM" >&2
    kill -KILL "$pid"
    ok=0
  fi
  wait "$pid"; echo_rc=$?
else
  wait "$pid"; echo_rc=$?
  echo "autobahn: chat-echo died during the run" >&2
  ok=0
fi
pid=
if [ "$echo_rc" -ne 0 ]; then
  echo "autobahn: chat-echo exited with status $echo_rc after SIGTERM" >&2
  ok=0
fi
if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: [A-Za-z]*Sanitizer' "$work/chat-echo.log"; then
  echo "autobahn: sanitizer report in $work/chat-echo.log:" >&2
  grep -E -A20 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$work/chat-echo.log" | head -60 >&2
  ok=0
fi

if [ "$ok" = 1 ] && [ "$run_rc" -eq 0 ] && grep -q ' 0 failed' <<<"$summary"; then
  echo "autobahn: pass" >"$result"
  echo "autobahn: pass (chat-echo exited 0)"
  exit 0
fi
echo "autobahn: fail" >"$result"
echo "autobahn: fail"
exit 1
