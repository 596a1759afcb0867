#!/usr/bin/env bash
# bench/history.sh - history on and off under the same loads: chat-bench against a fresh gateway
# per run (memory broker, and a redis-server of its own), gateway and redis-server pinned to CPU 0,
# chat-bench to CPU 1 (taskset). Prints one markdown table row per run (docs/benchmarks.md,
# "History on and off"), with redis-server's CPU time over the run for the Redis rows.
#   usage: bench/history.sh [BUILD_DIR]        (default: build; needs redis-server and taskset)
#   LOADS="B4 B3" / BROKERS="redis" in the environment pick a subset (default: all of them).
# Loads (1000 connections each, 64-byte texts, 10 s measured):
#   B4  10 rooms x 100 members, 10 senders x 20/s    =  20,000 deliveries/s
#   B3  10 rooms x 100 members, 10 senders x 200/s   = 200,000 deliveries/s
#   B1  1 room x 1000 members, 1 sender x 500/s      = 500,000 deliveries/s (open loop)
# Every process is started here and stopped by its PID; everything listens on 127.0.0.1.
set -euo pipefail
build=${1:-build}
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
gw_bin=$root/$build/gateway/chat-gateway
bench_bin=$root/$build/bench/chat-bench
[ -x "$gw_bin" ] && [ -x "$bench_bin" ] || { echo "build $build first" >&2; exit 2; }
work=$(mktemp -d /tmp/chat-bench-history.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1" >&2; return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run LOAD_NAME BROKER(memory|redis) HISTORY_SIZE chat-bench-args...
run() {
  local name=$1 broker=$2 hist=$3; shift 3
  local port rport="" rpid="" url=() r0=0 r1=0
  port=$(free_port)
  if [ "$broker" = redis ]; then
    rport=$(free_port)
    taskset -c 0 redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
      --daemonize no --dir "$work" >/dev/null 2>&1 &
    rpid=$!; pids+=("$rpid")
    wait_port "$rport"
    url=(--redis-url "redis://127.0.0.1:$rport")
  fi
  taskset -c 0 "$gw_bin" --listen "127.0.0.1:$port" --node-id bench --room-events=false \
    --connect-rate-per-ip 0 --rate-limit 0 --user-rate-limit 0 --history-size "$hist" \
    "${url[@]}" >"$work/gw.log" 2>&1 &
  local gpid=$!; pids+=("$gpid")
  wait_port "$port"
  [ -n "$rpid" ] && r0=$(cpu_ticks "$rpid")
  local out
  out=$(taskset -c 1 "$bench_bin" --url "ws://127.0.0.1:$port" --pid "$gpid" --quiet "$@" | tail -1)
  [ -n "$rpid" ] && r1=$(cpu_ticks "$rpid")
  kill -TERM "$gpid"; wait "$gpid" || true
  if [ -n "$rpid" ]; then kill -TERM "$rpid"; wait "$rpid" || true; fi
  local hz; hz=$(getconf CLK_TCK)
  OUT="$out" NAME="$name" BROKER="$broker" HIST="$hist" RCPU=$(( (r1 - r0) * 100 / hz )) \
  /usr/bin/python3 - <<'EOF'
import json, os
j = json.loads(os.environ["OUT"])
dur = j["duration_s"] + j["warmup_s"]
rcpu = int(os.environ["RCPU"]) / dur if os.environ["BROKER"] == "redis" else None
print(f"| {os.environ['NAME']} | {os.environ['BROKER']} | {os.environ['HIST']} | "
      f"{j['deliveries_per_s']:,.0f} | {j['lost']} | {j['p50_ms']:.2f} / {j['p99_ms']:.2f} / "
      f"{j['max_ms']:.1f} | {j['gateway_cpu_pct']:.0f} % | "
      + (f"{rcpu:.0f} % |" if rcpu is not None else "- |"))
EOF
}

echo "| load | broker | --history-size | deliveries/s | lost | p50 / p99 / max (ms) | gateway CPU | redis-server CPU |"
echo "|---|---|---|---|---|---|---|---|"
loads=" ${LOADS:-B4 B3 B1} "
for broker in ${BROKERS:-memory redis}; do
  for hist in 0 100; do
    [[ $loads == *" B4 "* ]] && run B4 "$broker" "$hist" --conns 1000 --rooms 10 --senders 10 --rate 20
    [[ $loads == *" B3 "* ]] && run B3 "$broker" "$hist" --conns 1000 --rooms 10 --senders 10 --rate 200
    [[ $loads == *" B1 "* ]] && run B1 "$broker" "$hist" --conns 1000 --rooms 1 --senders 1 --rate 500
  done
done
