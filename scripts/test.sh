#!/usr/bin/env bash
# `npm test`: set up everything the tests need on a fresh machine, then type-check and run the tap
# suites against real PostgreSQL, Redis, OpenFGA, goaws (SQS, the domain events' queue) and a Samba AD
# domain controller (SMTP servers are started by the suites that send mail; the OpenFGA model tests run
# as test/policies/fga-model-tests), with line coverage recorded and gated per folder at the end.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
# The Go-built tools compile in the background while Node, npm and the Debian packages are set up
# (minutes saved on a fresh machine); each is built once into tools/cache/bin and reused afterwards.
# Two chains, one tool after another in each: tools that share packages follow the one that compiled
# them (fga and the Envoy checker reuse most of OpenFGA's build), where eight builds at once compiled
# the shared packages several times over. From an empty Go build cache: OpenFGA
# ready after 339 s instead of 411 s, all eight after 366 s instead of 411 s (2 cores).
GO_CHAINS=("ensure_openfga_bin ensure_fga ensure_envoy_validate_bin" "ensure_goaws_bin ensure_vegeta_bin ensure_kustomize_bin ensure_k8s_validate_bin ensure_opa_bin")
go_pids=()
for chain in "${GO_CHAINS[@]}"; do
  (for tool in $chain; do "$tool" >/dev/null || { log "$tool failed (see above)"; exit 1; }; done) & go_pids+=($!)
done
ensure_node
ensure_deps
# A real client in front (test/e2e/nginx.test.ts, test/e2e/proxy-configs.test.ts): Debian's nginx.
NGINX_BIN="$(ensure_nginx)"
# The access explorer's browser test (test/e2e/explorer.test.ts): Debian's Chromium.
CHROMIUM_BIN="$(ensure_chromium)"
# the type-check and the compose file's check while the Go tools may still be compiling
log "type-check (tsc)"
node node_modules/typescript/bin/tsc -p tsconfig.json
if command -v docker-compose >/dev/null; then
  log "docker-compose.yml"; docker-compose config -q
fi
for pid in "${go_pids[@]}"; do wait "$pid" || exit 1; done
# The failure suites start and stop private OpenFGA servers, also when a shared one is reused;
# the Envoy configuration checker (proxy-configs); vegeta and OPA for the benchmarks' smoke runs
# (test/bench/); kustomize and the manifest checker (test/deploy/k8s.test.ts).
OPENFGA_BIN="$(ensure_openfga_bin)"
ENVOY_VALIDATE_BIN="$(ensure_envoy_validate_bin)"
VEGETA_BIN="$(ensure_vegeta_bin)"
OPA_BIN="$(ensure_opa_bin)"
KUSTOMIZE_BIN="$(ensure_kustomize_bin)"
K8S_VALIDATE_BIN="$(ensure_k8s_validate_bin)"
export OPENFGA_BIN NGINX_BIN CHROMIUM_BIN ENVOY_VALIDATE_BIN VEGETA_BIN OPA_BIN KUSTOMIZE_BIN K8S_VALIDATE_BIN PATH="$CACHE/bin:$PATH"

use_services --db publishing_test --fresh
export OPENFGA_STORE_NAME="test-${OPENFGA_STORE_NAME:-music-publishing}"
# Metering counts in Redis are per publisher id, and the tests use the demo's ids: keep them apart
# from a running `npm start` on the same Redis.
export METERING_KEY_PREFIX="test-${METERING_KEY_PREFIX:-metering}"
export PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"   # services.sh names it when it runs PostgreSQL
ensure_key_files
log "demo directory"; node migrations/seed/directory.ts

log "tap suites"
# tap would rebuild itself for our plugin list (no ts-node: Node strips the types) on the first
# run after `npm ci`, but that first run still loads the old build; build it explicitly once.
if [ "$(cat node_modules/.tap-plugins 2>/dev/null)" != "$(node -p 'JSON.stringify(require("./package.json").tap.plugin)')" ]; then
  node node_modules/.bin/tap build >/dev/null
  node -p 'JSON.stringify(require("./package.json").tap.plugin)' >node_modules/.tap-plugins
fi
set +e
node node_modules/.bin/tap "$@" 2>&1 | tee "$DATA/tap.log"
rc=${PIPESTATUS[0]}
# Line coverage of sidecar/, catalog-api/ and policies/ from tap's coverage (scripts/coverage.ts): each
# must reach 90 % when the whole suite ran; with suites named on the command line it is only printed.
check=--check
for a in "$@"; do [ -e "$a" ] && check=; done
node scripts/coverage.ts $check
cov=$?
set -e
node scripts/tap-summary.ts "$DATA/tap.log"
[ "$rc" -ne 0 ] || rc=$cov
exit "$rc"
