#!/usr/bin/env bash
# `npm start`: set up and start the whole stack with demo data on loopback, then keep the catalog
# API and the sidecar running in the foreground (Ctrl-C stops both; PostgreSQL, Redis and OpenFGA
# keep running for the next start).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_node
ensure_deps
eval "$(bash scripts/services.sh)"
export OPENFGA_STORE_NAME="${OPENFGA_STORE_NAME:-music-publishing}"
export SIDECAR_PORT="${SIDECAR_PORT:-8000}" CATALOG_PORT="${CATALOG_PORT:-8001}"
export UPSTREAM_URL="${UPSTREAM_URL:-http://127.0.0.1:$CATALOG_PORT}"
export SIDECAR_JWKS_URL="${SIDECAR_JWKS_URL:-http://127.0.0.1:$SIDECAR_PORT/.well-known/jwks.json}"
export SIDECAR_SIGNING_KEY_FILE="${SIDECAR_SIGNING_KEY_FILE:-$DATA/sidecar-signing-key.pem}"
export JWT_JWKS_FILE="${JWT_JWKS_FILE:-$DATA/dev-issuer/jwks.json}"

node scripts/keys.ts "$DATA"
log "authorization model"; node policies/src/cli.ts deploy
log "migrations"; node migrations/migrate.ts up
log "demo data"; node migrations/seed/run.ts
log "relationships: delivering the outbox to OpenFGA"; node catalog-api/src/outbox/drain.ts

pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM
node catalog-api/src/main.ts & pids+=($!)
node sidecar/src/main.ts & pids+=($!)
wait_http() { for _ in $(seq 1 150); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "$1 did not come up" >&2; exit 1; }
wait_http "http://127.0.0.1:$CATALOG_PORT/healthz"
wait_http "http://127.0.0.1:$SIDECAR_PORT/healthz"

DMP=10000000-0000-4000-8000-000000000001 SONGTRUST=10000000-0000-4000-8000-000000000003
cat <<MSG

  Sidecar (PEP):  http://127.0.0.1:$SIDECAR_PORT      catalog API behind it: $UPSTREAM_URL
  API docs:       http://127.0.0.1:$SIDECAR_PORT/docs

  TOKEN=\$(npm run -s token -- viewer@dmp.example)
  curl -H "Authorization: Bearer \$TOKEN" -H "X-Publisher-Id: $DMP" http://127.0.0.1:$SIDECAR_PORT/api/v1/works
  curl -H "Authorization: Bearer \$TOKEN" -H "X-Publisher-Id: $SONGTRUST" http://127.0.0.1:$SIDECAR_PORT/api/v1/works   # 403
  curl -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:$SIDECAR_PORT/api/v1/users/me

  Ctrl-C stops the catalog API and the sidecar.
MSG
wait -n "${pids[@]}"
