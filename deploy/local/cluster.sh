#!/usr/bin/env bash
# deploy/local/cluster.sh - the docker-compose topology as plain processes on loopback:
# redis-server, CLUSTER_NODES gateway nodes on one Redis, and nginx (least_conn) in front.
# Redis requires a password, a new random one per `up` (as the compose and Kubernetes Redis do).
#
#   cluster.sh up     [NAME=VALUE...]   start everything; refuses if the cluster is already up
#   cluster.sh down   [NAME=VALUE...]   stop everything by PID (SIGTERM, bounded wait, SIGKILL)
#   cluster.sh status [NAME=VALUE...]   one line per component; exit 0 if all up, 3 otherwise
#
# Settings (environment variables, or NAME=VALUE arguments after the command):
#   CLUSTER_DIR        run directory: pid files, logs, nginx.conf, cluster.env  (/tmp/chat-cluster)
#   CLUSTER_BASE_PORT  redis = base, node I = base+I, nginx = base+10,
#                      node I's admin listener (/healthz /readyz /metrics) = base+10+I (18800)
#   CLUSTER_NODES      number of gateway nodes, 1..9                              (3)
#   CHAT_GATEWAY_BIN   the gateway binary                (build/gateway/chat-gateway in the repo)
#   CLUSTER_START_TIMEOUT / CLUSTER_STOP_TIMEOUT  seconds per component / per stage      (10 / 10)
#   CLUSTER_DRAIN_DELAY / CLUSTER_DRAIN_TIMEOUT   the nodes' --drain-delay / --drain-timeout (0 / 5s)
#   NGINX_BIN, REDIS_SERVER_BIN                   override the nginx / redis-server found on PATH
#
# `up` writes $CLUSTER_DIR/{redis,node1..nodeN,nginx}.pid, one log per component
# ($CLUSTER_DIR/<name>.log, plus nginx-access.log and nginx-error.log), $CLUSTER_DIR/redis.conf
# (mode 0600: the password) and $CLUSTER_DIR/cluster.env (mode 0600), KEY=VALUE lines without
# quotes (REDIS_PORT, REDIS_PASSWORD, REDIS_URL=redis://:PASSWORD@127.0.0.1:PORT, NODE1_PORT,
# NODE1_URL, NODE1_ADMIN_URL, ..., NGINX_PORT, NGINX_URL=ws://127.0.0.1:PORT, NGINX_HTTP_URL).
# The password reaches the nodes in their environment (CHAT_REDIS_URL), never on a command line
# that `ps` shows; `REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -p $REDIS_PORT` talks to Redis.
# If a component does not start, `up` prints its
# log tail, stops what it started and exits 1. The nginx config is rendered from the same template
# as the compose one (deploy/nginx/render.sh local). Works as root and as a normal user.
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
prog=cluster.sh

usage() { sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
die() { echo "$prog: $*" >&2; exit 1; }

cmd=${1:-}
[ $# -ge 1 ] && shift
for arg in "$@"; do
  case $arg in
    CLUSTER_DIR=*|CLUSTER_BASE_PORT=*|CLUSTER_NODES=*|CHAT_GATEWAY_BIN=*|CLUSTER_START_TIMEOUT=*|\
    CLUSTER_STOP_TIMEOUT=*|NGINX_BIN=*|REDIS_SERVER_BIN=*|CLUSTER_DRAIN_DELAY=*|\
    CLUSTER_DRAIN_TIMEOUT=*) export "${arg?}" ;;
    *) echo "$prog: unknown argument: $arg" >&2; usage ;;
  esac
done

CLUSTER_DIR=${CLUSTER_DIR:-/tmp/chat-cluster}
# status and down take the node count and ports of the running cluster from its cluster.env
# unless they are given.
if [ "$cmd" != up ] && [ -f "${CLUSTER_DIR%/}/cluster.env" ]; then
  env_nodes=$(sed -n 's/^CLUSTER_NODES=//p' "${CLUSTER_DIR%/}/cluster.env")
  env_base=$(sed -n 's/^REDIS_PORT=//p' "${CLUSTER_DIR%/}/cluster.env")
  CLUSTER_NODES=${CLUSTER_NODES:-$env_nodes}
  CLUSTER_BASE_PORT=${CLUSTER_BASE_PORT:-$env_base}
fi
CLUSTER_BASE_PORT=${CLUSTER_BASE_PORT:-18800}
CLUSTER_NODES=${CLUSTER_NODES:-3}
CLUSTER_START_TIMEOUT=${CLUSTER_START_TIMEOUT:-10}
CLUSTER_STOP_TIMEOUT=${CLUSTER_STOP_TIMEOUT:-10}
CHAT_GATEWAY_BIN=${CHAT_GATEWAY_BIN:-build/gateway/chat-gateway}
# A relative binary path is taken from the current directory if it is there, else from the repo.
case $CHAT_GATEWAY_BIN in
  /*) ;;
  *) if [ -e "$PWD/$CHAT_GATEWAY_BIN" ]; then CHAT_GATEWAY_BIN=$PWD/$CHAT_GATEWAY_BIN
     else CHAT_GATEWAY_BIN=$root/$CHAT_GATEWAY_BIN; fi ;;
esac

case $CLUSTER_DIR in
  *[[:space:]]*) die "CLUSTER_DIR must not contain white space: '$CLUSTER_DIR'" ;;
  /*) ;;
  *) CLUSTER_DIR=$PWD/$CLUSTER_DIR ;;
esac
CLUSTER_DIR=${CLUSTER_DIR%/}
if ! [[ $CLUSTER_BASE_PORT =~ ^[1-9][0-9]{0,4}$ ]] || [ "$CLUSTER_BASE_PORT" -gt 65525 ]; then
  die "CLUSTER_BASE_PORT must be 1..65525: $CLUSTER_BASE_PORT"
fi
[[ $CLUSTER_NODES =~ ^[1-9]$ ]] || die "CLUSTER_NODES must be 1..9: $CLUSTER_NODES"
[[ $CLUSTER_START_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "CLUSTER_START_TIMEOUT must be whole seconds"
[[ $CLUSTER_STOP_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "CLUSTER_STOP_TIMEOUT must be whole seconds"

redis_port=$CLUSTER_BASE_PORT
nginx_port=$((CLUSTER_BASE_PORT + 10))
node_port() { echo $((CLUSTER_BASE_PORT + $1)); }
admin_port() { echo $((CLUSTER_BASE_PORT + 10 + $1)); } # a node's /healthz /readyz /metrics

# The components of the current settings, in start order.
components() {
  local i
  echo redis
  for ((i = 1; i <= CLUSTER_NODES; i++)); do echo "node$i"; done
  echo nginx
}
port_of() {
  case $1 in
    redis) echo "$redis_port" ;;
    nginx) echo "$nginx_port" ;;
    node*) node_port "${1#node}" ;;
  esac
}

# Does PID run the component? Guards against a reused PID: only our own processes are signalled.
is_ours() { # pid component
  local pid=$1 comp=$2 cmdline
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  case $comp in
    redis) [[ $cmdline == *redis* || $cmdline == *valkey* ]] ;;
    nginx) [[ $cmdline == *nginx* ]] ;;
    node*) [[ $cmdline == *"--node-id $comp "* ]] ;;
    *) return 1 ;;
  esac
}
pid_of() { # component -> pid from its pid file, or nothing
  local f=$CLUSTER_DIR/$1.pid pid
  [ -f "$f" ] || return 1
  read -r pid <"$f" 2>/dev/null || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  echo "$pid"
}
# Alive and not a zombie (an exited process that its new parent has not reaped yet).
alive() { # pid
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 0
  [ "$state" != Z ]
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Every component that has a pid file in CLUSTER_DIR (whatever CLUSTER_NODES says now).
pidfile_components() {
  local f
  for f in "$CLUSTER_DIR"/redis.pid "$CLUSTER_DIR"/node[0-9]*.pid "$CLUSTER_DIR"/nginx.pid; do
    [ -f "$f" ] && basename "$f" .pid
  done
  return 0
}

# Stops the given components together: SIGTERM, wait up to CLUSTER_STOP_TIMEOUT, then SIGKILL.
stop_group() { # component...
  local comp pid live=() pids=() i
  for comp in "$@"; do
    if pid=$(pid_of "$comp") && is_ours "$pid" "$comp"; then
      kill -TERM "$pid" 2>/dev/null || true
      live+=("$comp"); pids+=("$pid")
    fi
  done
  [ ${#pids[@]} -eq 0 ] && { rm_pidfiles "$@"; return 0; }
  for ((i = 0; i < CLUSTER_STOP_TIMEOUT * 10; i++)); do
    local any=0
    for pid in "${pids[@]}"; do alive "$pid" && any=1; done
    [ $any = 0 ] && break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if alive "${pids[$i]}"; then
      echo "$prog: ${live[$i]} (pid ${pids[$i]}) still running after ${CLUSTER_STOP_TIMEOUT}s: SIGKILL" >&2
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
  done
  rm_pidfiles "$@"
}
rm_pidfiles() { local comp; for comp in "$@"; do rm -f "$CLUSTER_DIR/$comp.pid"; done; }

# Gateways first (their 1001 close frames still reach the clients through nginx), then nginx,
# then Redis.
stop_all() { # components...
  local nodes=() comp
  for comp in "$@"; do case $comp in node*) nodes+=("$comp") ;; esac; done
  [ ${#nodes[@]} -gt 0 ] && stop_group "${nodes[@]}"
  for comp in nginx redis; do
    [[ " $* " == *" $comp "* ]] && stop_group "$comp"
  done
  return 0
}

find_bin() { # override name fallback
  local override=$1 name=$2 fallback=$3
  if [ -n "$override" ]; then echo "$override"; return; fi
  command -v "$name" 2>/dev/null || { [ -x "$fallback" ] && echo "$fallback"; } || return 1
}

# --- up -------------------------------------------------------------------------------------
started=()
declare -A started_pid=()   # component -> pid, of this `up`
fail() { # component message
  local comp=$1 msg=$2 log=$CLUSTER_DIR/$1.log
  trap - INT TERM
  echo "$prog: $comp failed to start: $msg" >&2
  if [ -s "$log" ]; then echo "--- last lines of $log:" >&2; tail -n 30 "$log" >&2; fi
  if [ "$comp" = nginx ] && [ -s "$CLUSTER_DIR/nginx-error.log" ]; then
    echo "--- last lines of $CLUSTER_DIR/nginx-error.log:" >&2
    tail -n 30 "$CLUSTER_DIR/nginx-error.log" >&2
  fi
  if [ ${#started[@]} -gt 0 ]; then
    echo "$prog: stopping what was started: ${started[*]}" >&2
    stop_all "${started[@]}"
  fi
  rm -f "$CLUSTER_DIR/cluster.env"
  exit 1
}

start_bg() { # component cmd...
  local comp=$1; shift
  "$@" </dev/null >>"$CLUSTER_DIR/$comp.log" 2>&1 &
  started_pid[$comp]=$!
  echo "$!" >"$CLUSTER_DIR/$comp.pid"
  started+=("$comp")
}

wait_up() { # component
  local comp=$1 port pid i
  port=$(port_of "$comp"); pid=${started_pid[$comp]}
  for ((i = 0; i < CLUSTER_START_TIMEOUT * 10; i++)); do
    alive "$pid" || fail "$comp" "the process (pid $pid) exited"
    port_open "$port" && return 0
    sleep 0.1
  done
  fail "$comp" "127.0.0.1:$port did not accept TCP within ${CLUSTER_START_TIMEOUT}s"
}

# The gateways log "broker link up" once both Redis links are ready and the node's canary came
# back (about 1 s after start). Wait for it so that a test can chat across nodes at once; if it
# does not come (a changed log line?) only warn: the ports are open.
wait_broker() {
  local i n missing
  for ((n = 0; n < CLUSTER_START_TIMEOUT * 10; n++)); do
    missing=()
    for ((i = 1; i <= CLUSTER_NODES; i++)); do
      alive "${started_pid[node$i]}" || fail "node$i" "the process (pid ${started_pid[node$i]}) exited"
      grep -q 'broker link up' "$CLUSTER_DIR/node$i.log" || missing+=("node$i")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    sleep 0.1
  done
  echo "$prog: warning: no 'broker link up' from ${missing[*]} within ${CLUSTER_START_TIMEOUT}s" >&2
}

cmd_up() {
  local comp pid port i redis_bin nginx_bin redis_password upstreams=()
  mkdir -p "$CLUSTER_DIR"
  for comp in $(pidfile_components); do
    if pid=$(pid_of "$comp") && is_ours "$pid" "$comp"; then
      die "already up ($comp runs as pid $pid; see '$prog status'); run '$prog down' first"
    fi
  done
  rm -f "$CLUSTER_DIR"/*.pid "$CLUSTER_DIR/cluster.env"   # stale ones

  [ -x "$CHAT_GATEWAY_BIN" ] || die "gateway binary not found or not executable: $CHAT_GATEWAY_BIN (build it: meson setup build && ninja -C build)"
  redis_bin=$(find_bin "${REDIS_SERVER_BIN:-}" redis-server /usr/bin/redis-server) ||
    die "redis-server not found (apt-get install redis-server, or set REDIS_SERVER_BIN)"
  nginx_bin=$(find_bin "${NGINX_BIN:-}" nginx /usr/sbin/nginx) ||
    die "nginx not found (apt-get install nginx, or set NGINX_BIN)"
  for comp in $(components); do
    port=$(port_of "$comp")
    port_open "$port" && die "127.0.0.1:$port (for $comp) is already in use; pick another CLUSTER_BASE_PORT"
  done
  for comp in $(components); do : >"$CLUSTER_DIR/$comp.log"; done
  : >"$CLUSTER_DIR/nginx-access.log"; : >"$CLUSTER_DIR/nginx-error.log"
  trap 'fail cluster "interrupted"' INT TERM

  # A new password per run, hex (nothing to escape in the URL), in files only this user reads.
  redis_password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  [ ${#redis_password} = 48 ] || die "could not read a password from /dev/urandom"
  (umask 077; printf '# GENERATED by cluster.sh up: this run'"'"'s Redis password\nrequirepass %s\n' \
    "$redis_password" >"$CLUSTER_DIR/redis.conf")
  start_bg redis "$redis_bin" "$CLUSTER_DIR/redis.conf" --bind 127.0.0.1 --port "$redis_port" \
    --save '' --appendonly no --daemonize no --protected-mode yes --dir "$CLUSTER_DIR" --logfile ''
  wait_up redis
  # Every client of this loopback cluster is 127.0.0.1 (nginx passes it in X-Forwarded-For), so
  # the per-address connection limit is off unless CLUSTER_CONNECT_RATE_PER_IP sets it.

  for ((i = 1; i <= CLUSTER_NODES; i++)); do
    port=$(node_port "$i")
    CHAT_REDIS_URL="redis://:$redis_password@127.0.0.1:$redis_port" \
    start_bg "node$i" "$CHAT_GATEWAY_BIN" --listen "127.0.0.1:$port" --node-id "node$i" \
      --trusted-proxies 127.0.0.1/32 \
      --admin-listen "127.0.0.1:$(admin_port "$i")" \
      --drain-delay "${CLUSTER_DRAIN_DELAY:-0}" --drain-timeout "${CLUSTER_DRAIN_TIMEOUT:-5s}" \
      --connect-rate-per-ip "${CLUSTER_CONNECT_RATE_PER_IP:-0}" \
      --room-linger "${CLUSTER_ROOM_LINGER:-15s}"
    upstreams+=("127.0.0.1:$port")
  done
  for ((i = 1; i <= CLUSTER_NODES; i++)); do wait_up "node$i"; done
  wait_broker

  mkdir -p "$CLUSTER_DIR/nginx-tmp"
  bash "$root/deploy/nginx/render.sh" local "$CLUSTER_DIR" "$nginx_port" "${upstreams[@]}" \
    >"$CLUSTER_DIR/nginx.conf" 2>"$CLUSTER_DIR/nginx.log" || fail nginx "rendering nginx.conf failed"
  local nginx_args=(-p "$CLUSTER_DIR/" -e "$CLUSTER_DIR/nginx-error.log" -c "$CLUSTER_DIR/nginx.conf")
  "$nginx_bin" -t -q "${nginx_args[@]}" >>"$CLUSTER_DIR/nginx.log" 2>&1 ||
    fail nginx "nginx -t rejected $CLUSTER_DIR/nginx.conf"
  # In the foreground (daemon off), so that $! is the master (it writes its own pid file under
  # nginx-tmp/ as well).
  start_bg nginx "$nginx_bin" "${nginx_args[@]}" -g 'daemon off;'
  wait_up nginx
  trap - INT TERM

  (umask 077; : >"$CLUSTER_DIR/cluster.env")
  {
    echo "CLUSTER_DIR=$CLUSTER_DIR"
    echo "CLUSTER_NODES=$CLUSTER_NODES"
    echo "REDIS_PORT=$redis_port"
    echo "REDIS_PASSWORD=$redis_password"
    echo "REDIS_URL=redis://:$redis_password@127.0.0.1:$redis_port"
    for ((i = 1; i <= CLUSTER_NODES; i++)); do
      echo "NODE${i}_ID=node$i"
      echo "NODE${i}_PORT=$(node_port "$i")"
      echo "NODE${i}_URL=ws://127.0.0.1:$(node_port "$i")"
      echo "NODE${i}_ADMIN_URL=http://127.0.0.1:$(admin_port "$i")"
    done
    echo "NGINX_PORT=$nginx_port"
    echo "NGINX_URL=ws://127.0.0.1:$nginx_port"
    echo "NGINX_HTTP_URL=http://127.0.0.1:$nginx_port"
  } >"$CLUSTER_DIR/cluster.env"

  echo "chat cluster up in $CLUSTER_DIR"
  printf '  %-6s pid %-8s redis://127.0.0.1:%s (password: REDIS_PASSWORD in cluster.env)\n' redis \
    "${started_pid[redis]}" "$redis_port"
  for ((i = 1; i <= CLUSTER_NODES; i++)); do
    printf '  %-6s pid %-8s ws://127.0.0.1:%s\n' "node$i" "${started_pid[node$i]}" "$(node_port "$i")"
  done
  printf '  %-6s pid %-8s ws://127.0.0.1:%s/ws  (demo page: http://127.0.0.1:%s/)\n' \
    nginx "${started_pid[nginx]}" "$nginx_port" "$nginx_port"
  echo "  env: $CLUSTER_DIR/cluster.env  logs: $CLUSTER_DIR/*.log"
  echo "  stop: CLUSTER_DIR=$CLUSTER_DIR deploy/local/cluster.sh down"
}

# --- down / status -----------------------------------------------------------------------------
cmd_down() {
  local comps
  [ -d "$CLUSTER_DIR" ] || { echo "$prog: nothing to stop ($CLUSTER_DIR does not exist)"; return 0; }
  mapfile -t comps < <(pidfile_components)
  if [ ${#comps[@]} -eq 0 ]; then
    echo "$prog: nothing to stop (no pid files in $CLUSTER_DIR)"
  else
    stop_all "${comps[@]}"
    echo "$prog: stopped ${comps[*]}"
  fi
  rm -f "$CLUSTER_DIR/cluster.env"
}

cmd_status() {
  local comp pid port state all_up=0 seen=() extra
  # Nodes from an earlier `up` with a larger CLUSTER_NODES are reported too.
  mapfile -t seen < <( (components; pidfile_components) | awk '!s[$0]++')
  for comp in "${seen[@]}"; do
    port=$(port_of "$comp")
    if pid=$(pid_of "$comp"); then
      if is_ours "$pid" "$comp"; then
        if port_open "$port"; then state=up; else state="running, port closed"; all_up=3; fi
      else
        state="dead (stale pid file)"; all_up=3
      fi
    else
      pid=-; state="down (no pid file)"; all_up=3
    fi
    printf '%-6s pid %-8s port %-5s %s\n' "$comp" "$pid" "$port" "$state"
  done
  extra=""; [ "$all_up" = 0 ] && extra=" (all up)"
  echo "cluster dir $CLUSTER_DIR$extra"
  return "$all_up"
}

case $cmd in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  -h|--help|help) usage 0 ;;
  *) usage ;;
esac
