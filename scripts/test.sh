#!/usr/bin/env bash
# `npm test`: set up everything the tests need on a fresh machine, then type-check and run the tap
# suites against real PostgreSQL, Redis, OpenFGA, goaws (SQS, the domain events' queue) and a Samba AD
# domain controller (SMTP servers are started by the suites that send mail; the OpenFGA model tests run
# as test/policies/fga-model-tests), with line coverage recorded and gated per folder at the end.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_node
ensure_deps
ensure_fga
# The failure suites start and stop private OpenFGA servers, also when a shared one is reused.
OPENFGA_BIN="$(ensure_openfga_bin)"
export OPENFGA_BIN PATH="$CACHE/bin:$PATH"
# A real client in front (test/e2e/nginx.test.ts, test/e2e/proxy-configs.test.ts): Debian's nginx
# and the Envoy configuration checker.
NGINX_BIN="$(ensure_nginx)"
ENVOY_VALIDATE_BIN="$(ensure_envoy_validate_bin)"
export NGINX_BIN ENVOY_VALIDATE_BIN
# The access explorer's browser test (test/e2e/explorer.test.ts): Debian's Chromium.
CHROMIUM_BIN="$(ensure_chromium)"
export CHROMIUM_BIN

log "type-check (tsc)"
node node_modules/typescript/bin/tsc -p tsconfig.json

if command -v docker-compose >/dev/null; then
  log "docker-compose.yml"; docker-compose config -q
fi

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
