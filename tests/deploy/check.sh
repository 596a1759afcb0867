#!/usr/bin/env bash
# tests/deploy/check.sh RESULT_FILE - validates the deployment files that cannot run here (no
# Docker engine, no Kubernetes cluster) with the tools that can read them. One "name: pass|fail"
# line per check goes to RESULT_FILE; details of failures go to stdout.
set -uo pipefail
out=${1:?usage: check.sh RESULT_FILE}
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
: >"$out"
check() { # name, command...
  local name=$1; shift
  local log; log=$(mktemp)
  if timeout 300 "$@" >"$log" 2>&1; then
    echo "deploy $name: pass" >>"$out"
  else
    echo "deploy $name: fail" >>"$out"
    echo "--- deploy $name failed: $*"; tail -30 "$log"
  fi
  rm -f "$log"
}
check "nginx.conf in sync with its template" bash deploy/nginx/render.sh check
check "nginx -t on the shipped and local configs" bash deploy/nginx/render.sh test
check "docker-compose config" docker-compose -f docker-compose.yml config -q
check "Dockerfile lint" bash -c 'out=$(npx --yes dockerfile-utils@0.16.3 lint Dockerfile 2>&1); echo "$out"; [ -z "$(echo "$out" | grep -v "^npm")" ]'
check "kustomize build" bash -c 'kubectl kustomize deploy/k8s >/dev/null'
check "shell scripts parse" bash -c 'for f in deploy/local/*.sh deploy/nginx/*.sh tests/*.sh tests/*/*.sh; do bash -n "$f" || exit 1; done'

# --- the local scripts -------------------------------------------------------------------------

# The README's first command on a machine without cmocka, after an earlier run left a half-made
# build/. cmocka is hidden from meson: PKG_CONFIG_LIBDIR holds every .pc file of the system except
# cmocka.pc, and PATH holds every program but cmake (meson's CMake lookup would find
# /usr/lib/*/cmake/cmocka). A probe project proves it is hidden. In a copy of the source tree:
# `meson setup build -Dtests=enabled` must fail naming cmocka (and leaves a half-made build/);
# run.sh must then set build/ up again, build without the unit tests and serve; and when the
# build breaks, run.sh must exit 1 showing meson's error.
no_cmocka_build() {
  local tmp d f dirs=() out p
  tmp=$(mktemp -d /tmp/chat-nocmocka.XXXXXX) || return 1
  # shellcheck disable=SC2064  # expand now
  trap "rm -rf '$tmp'" EXIT
  mkdir "$tmp/pc" "$tmp/bin" "$tmp/probe" "$tmp/src" || return 1
  IFS=: read -ra dirs <<<"${PKG_CONFIG_PATH:+$PKG_CONFIG_PATH:}$(pkg-config --variable pc_path pkg-config)"
  for d in "${dirs[@]}"; do
    for f in "$d"/*.pc; do
      [ -f "$f" ] && [ "${f##*/}" != cmocka.pc ] && cp -n "$f" "$tmp/pc/"
    done
  done
  for f in /usr/bin/* /usr/local/bin/*; do
    [ "${f##*/}" = cmake ] || [ -e "$tmp/bin/${f##*/}" ] || ln -s "$f" "$tmp/bin/${f##*/}"
  done
  local hidden=(PKG_CONFIG_LIBDIR="$tmp/pc" PATH="$tmp/bin:/usr/sbin:/sbin")
  printf "%s\n" "project('probe', 'c')" "if dependency('cmocka', required : false).found()" \
    "  error('cmocka is still visible to meson')" "endif" >"$tmp/probe/meson.build"
  env -u PKG_CONFIG_PATH "${hidden[@]}" meson setup "$tmp/probe-build" "$tmp/probe" >"$tmp/probe.log" 2>&1 ||
    { echo "could not hide cmocka from meson:"; tail -20 "$tmp/probe.log"; return 1; }

  tar -C "$root" --exclude='./build*' --exclude=./.git --exclude='*/node_modules' -cf - . |
    tar -C "$tmp/src" -xf - || return 1
  if (cd "$tmp/src" && env -u PKG_CONFIG_PATH "${hidden[@]}" meson setup build -Dtests=enabled) \
       >"$tmp/enabled.log" 2>&1; then
    echo "-Dtests=enabled configured without cmocka"; return 1
  fi
  grep -q 'Dependency "cmocka" not found' "$tmp/enabled.log" ||
    { echo "-Dtests=enabled failed, but not on cmocka:"; tail -20 "$tmp/enabled.log"; return 1; }
  if [ ! -d "$tmp/src/build" ] || [ -f "$tmp/src/build/build.ninja" ]; then
    echo "expected a half-made build/ after the failed setup"; ls -la "$tmp/src/build"; return 1
  fi

  p=$(free_port) || return 1
  (cd "$tmp/src" && run_sh_expect "127.0.0.1:$p" "$tmp/run.log" "${hidden[@]}" -- --listen "127.0.0.1:$p" \
     --admin-listen 127.0.0.1:0) || { echo "run.sh without cmocka did not serve"; return 1; }
  grep -q "unit tests not built" "$tmp/src/build/meson-logs/meson-log.txt" ||
    { echo "meson did not say that the unit tests are left out"; return 1; }
  if ls "$tmp/src/build/tests"/test_* >/dev/null 2>&1; then echo "unit tests were built without cmocka"; return 1; fi

  echo "error_here(" >>"$tmp/src/gateway/meson.build"
  if out=$(cd "$tmp/src" && env -i "${hidden[@]}" CHAT_SKIP_APT=1 timeout 120 bash deploy/local/run.sh --version 2>&1); then
    echo "run.sh succeeded with a broken gateway/meson.build: $out"; return 1
  fi
  [[ $out == *"run.sh: the build failed"* && $out == *"gateway/meson.build"*"ERROR"* ]] ||
    { echo "run.sh with a broken gateway/meson.build did not show why: $out"; return 1; }
}

# deps.sh as an unprivileged user (nobody, when this runs as root) on this machine, where every
# package is installed: exit 0, nothing installed (dpkg's status file untouched). Then with a
# dpkg-query that reports libuv1-dev missing: exit 1 naming it, apt-get never reached.
deps_nonroot() {
  local tmp as=() what before out
  tmp=$(mktemp -d /tmp/chat-deps-check.XXXXXX) || return 1
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  cp deploy/local/deps.sh "$tmp/deps.sh" && mkdir "$tmp/bin" || return 1
  printf '%s\n' '#!/bin/sh' '# libuv1-dev is not installed, for this dpkg-query' \
    'for a; do [ "$a" = libuv1-dev ] && { printf "unknown ok not-installed"; exit 0; }; done' \
    'exec /usr/bin/dpkg-query "$@"' >"$tmp/bin/dpkg-query"
  printf '%s\n' '#!/bin/sh' 'echo "apt-get was called: $*" >&2' 'exit 99' >"$tmp/bin/apt-get"
  chmod 755 "$tmp" "$tmp/bin" "$tmp/deps.sh" "$tmp/bin/dpkg-query" "$tmp/bin/apt-get"
  if [ "$(id -u)" = 0 ]; then as=(setpriv --reuid=65534 --regid=65534 --clear-groups); fi
  [ "$("${as[@]}" id -u)" != 0 ] || { echo "could not drop root"; return 1; }
  before=$(stat -c %Y.%s /var/lib/dpkg/status)
  for what in build test; do
    out=$(cd "$tmp" && "${as[@]}" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin bash ./deps.sh "$what" 2>&1) ||
      { echo "deps.sh $what as uid $("${as[@]}" id -u) failed: $out"; return 1; }
    [[ $out == *"packages for '$what' are installed"* ]] || { echo "deps.sh $what said: $out"; return 1; }
  done
  [ "$(stat -c %Y.%s /var/lib/dpkg/status)" = "$before" ] || { echo "dpkg's status changed"; return 1; }
  if out=$(cd "$tmp" && "${as[@]}" env -i PATH="$tmp/bin:/usr/sbin:/usr/bin:/sbin:/bin" bash ./deps.sh build 2>&1); then
    echo "deps.sh build with libuv1-dev missing exited 0 as non-root: $out"; return 1
  fi
  [[ $out == *"missing packages: libuv1-dev"* && $out != *"apt-get was called"* ]] ||
    { echo "deps.sh build with libuv1-dev missing said: $out"; return 1; }
}

# run.sh (CHAT_SKIP_APT=1, the repo's build/) started with a clean environment: by default it
# listens on 127.0.0.1:8080 and nowhere else; --listen and CHAT_LISTEN move it. Each run is
# bounded and stopped by its PID (run.sh execs the gateway, so the PID stays the same; it runs in
# its own session, so a ninja still building goes with it).
run_sh_listen() {
  local tmp busy p
  tmp=$(mktemp -d /tmp/chat-runsh.XXXXXX) || return 1
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  busy=$(ss -Htln 'sport = :8080')
  if [ -n "$busy" ]; then
    echo "port 8080 is already in use, so run.sh's default cannot be tested: $busy"; return 1
  fi
  # The admin listener gets a kernel-chosen port: 9090 may be taken, and it is not under test.
  run_sh_expect 127.0.0.1:8080 "$tmp/default.log" -- --admin-listen 127.0.0.1:0 || return 1
  p=$(free_port) || return 1
  run_sh_expect "127.0.0.1:$p" "$tmp/flag.log" -- --admin-listen 127.0.0.1:0 --listen "127.0.0.1:$p" || return 1
  p=$(free_port) || return 1
  run_sh_expect "127.0.0.1:$p" "$tmp/env.log" "CHAT_LISTEN=127.0.0.1:$p" -- --admin-listen=127.0.0.1:0 || return 1
}
free_port() { # a port in 20000..32699 that no socket uses
  local i p
  for ((i = 0; i < 100; i++)); do
    p=$((20000 + RANDOM % 12700))
    [ -z "$(ss -Htan "sport = :$p")" ] && { echo "$p"; return 0; }
  done
  echo "no free port found" >&2; return 1
}
listeners_of() { # pid -> its listening addresses, sorted, space-separated
  ss -Htlnp | awk -v p="pid=$1," 'index($0, p) { print $4 }' | sort | tr '\n' ' '
}
run_sh_expect() { # expected-address log [NAME=VALUE...] -- run.sh args...
  local want=$1 log=$2 envs=() pid i all=""
  shift 2
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="${HOME:-/tmp}" CHAT_SKIP_APT=1 "${envs[@]}" \
    setsid bash deploy/local/run.sh "$@" </dev/null >"$log" 2>&1 &
  pid=$!
  # Until both listeners (public and admin) are up: 240 s, as the first run may have to build.
  for ((i = 0; i < 2400; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    all=$(listeners_of "$pid")
    [ "$(wc -w <<<"$all")" -ge 2 ] && break
    sleep 0.1
  done
  sleep 0.3; kill -0 "$pid" 2>/dev/null && all=$(listeners_of "$pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null; echo "run.sh (pid $pid) needed SIGKILL"
    fi
  fi
  wait "$pid" 2>/dev/null
  # Exactly two listeners: the expected public address, and the admin one on 127.0.0.1.
  local other
  other=$(tr ' ' '\n' <<<"$all" | grep -vx -- "$want" | grep .)
  if [[ " $all" != *" $want "* ]] || [ "$(wc -w <<<"$all")" != 2 ] ||
     ! [[ $other =~ ^127\.0\.0\.1:[0-9]+$ ]]; then
    echo "run.sh ${envs[*]} $*: expected a listener on $want (and the admin one on 127.0.0.1); got: ${all:-none}"
    tail -20 "$log"; return 1
  fi
}
export -f no_cmocka_build deps_nonroot run_sh_listen free_port listeners_of run_sh_expect
export root
check "run.sh builds and serves without cmocka, after a half-made build/" bash -c no_cmocka_build
check "deps.sh needs no root when everything is installed" bash -c deps_nonroot
check "run.sh listens on 127.0.0.1:8080 unless --listen or CHAT_LISTEN says otherwise" bash -c run_sh_listen
