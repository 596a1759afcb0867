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
