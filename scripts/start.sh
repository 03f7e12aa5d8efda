#!/usr/bin/env bash
# `npm start`: set up and start the whole stack with demo data on loopback, then keep the catalog
# API, the sidecar and the mail catcher running in the foreground (Ctrl-C stops them; PostgreSQL,
# Redis, OpenFGA and the demo directory keep running for the next start).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_node
ensure_deps
# a configured database (services.sh reuses it when all three URLs are set) is never recreated
OWN_DB=1; [ -n "${DATABASE_URL:-}" ] && [ -n "${DATABASE_OWNER_URL:-}" ] && [ -n "${AUTH_DATABASE_URL:-}" ] && OWN_DB=0
use_services
export OPENFGA_STORE_NAME="${OPENFGA_STORE_NAME:-music-publishing}"
export SIDECAR_PORT="${SIDECAR_PORT:-8000}" CATALOG_PORT="${CATALOG_PORT:-8001}" SMTP_PORT="${SMTP_PORT:-2525}"
export ADMIN_PORT="${ADMIN_PORT:-9464}"   # the sidecar's admin listener (/metrics), loopback only
export UPSTREAM_URL="${UPSTREAM_URL:-http://127.0.0.1:$CATALOG_PORT}"
export SIDECAR_JWKS_URL="${SIDECAR_JWKS_URL:-http://127.0.0.1:$SIDECAR_PORT/.well-known/jwks.json}"
export SIDECAR_SIGNING_KEY_FILE="${SIDECAR_SIGNING_KEY_FILE:-$DATA/sidecar-signing-key.pem}"
# The issuer is the sidecar's public URL; the sidecar fetches the issuer's keys from the API directly.
export JWT_ISSUER="${JWT_ISSUER:-http://127.0.0.1:$SIDECAR_PORT}" APP_BASE_URL="${APP_BASE_URL:-http://127.0.0.1:$SIDECAR_PORT}"
export JWT_JWKS_URL="${JWT_JWKS_URL:-http://127.0.0.1:$CATALOG_PORT/api/v1/auth/jwks.json}"
export SMTP_URL="${SMTP_URL:-smtp://127.0.0.1:$SMTP_PORT}"
OWN_SMTP=0; [ "$SMTP_URL" = "smtp://127.0.0.1:$SMTP_PORT" ] && OWN_SMTP=1   # else mail goes to the configured server
# Another `npm start` still running would answer the health checks below in place of this one.
for port in "$CATALOG_PORT" "$SIDECAR_PORT" "$ADMIN_PORT" $([ "$OWN_SMTP" = 1 ] && echo "$SMTP_PORT"); do
  if port_open 127.0.0.1 "$port"; then echo "127.0.0.1:$port is already in use (another npm start?); stop it, or set CATALOG_PORT, SIDECAR_PORT, ADMIN_PORT and SMTP_PORT" >&2; exit 1; fi
done

ensure_key_files
log "authorization model"; node policies/src/cli.ts deploy --accept-changes   # shadow report shown; a running stack switches within 1 s
log "migrations"; node migrations/migrate.ts up
# A demo database set up by another checkout (or before .data/ was deleted) holds keys and TOTP
# secrets sealed under another key-encryption key, and that checkout's directory settings: sign-in
# could not work, so the demo database starts over.
rc=0; node scripts/keys.ts check >/dev/null 2>&1 || rc=$?
if [ "$rc" = 3 ] && [ "$OWN_DB" = 1 ]; then
  log "the demo database was set up under another key-encryption key (another checkout, or .data/ was deleted): recreating it"
  unset DATABASE_URL DATABASE_OWNER_URL AUTH_DATABASE_URL JOBS_DATABASE_URL
  use_services --fresh
  node migrations/migrate.ts up
elif [ "$rc" != 0 ]; then
  node scripts/keys.ts check; exit 1
fi
node scripts/keys.ts ensure >/dev/null   # before the seed seals a TOTP secret under the same KEK
log "demo data"; node migrations/seed/run.ts
log "demo directory"; node migrations/seed/directory.ts
log "relationships: delivering the outbox to OpenFGA"; node catalog-api/src/outbox/drain.ts

pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM
if [ "$OWN_SMTP" = 1 ]; then
  node scripts/mail-catcher.ts --port "$SMTP_PORT" --dir "$DATA/mail" & pids+=($!)
fi
node catalog-api/src/main.ts & pids+=($!)
node --max-semi-space-size=8 sidecar/src/main.ts & pids+=($!) # semi-space: sidecar/src/workers.ts WORKER_SEMI_SPACE_MIB
wait_http() { for _ in $(seq 1 150); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "$1 did not come up" >&2; exit 1; }
wait_http "http://127.0.0.1:$CATALOG_PORT/healthz"
wait_http "http://127.0.0.1:$SIDECAR_PORT/healthz"

DMP=10000000-0000-4000-8000-000000000001 SONGTRUST=10000000-0000-4000-8000-000000000003
TOTP_SECRET="$(node -e "import('./migrations/seed/demo.ts').then(m => console.log(m.DEMO_TOTP_SECRETS['creator1@songtrust.example']))")"
S="http://127.0.0.1:$SIDECAR_PORT"
TOKEN_ENV=""; [ "$SIDECAR_PORT" = 8000 ] || TOKEN_ENV="SIDECAR_URL=$S "   # npm run token's default is :8000
cat <<MSG

  Sidecar (PEP):  $S      catalog API behind it: $UPSTREAM_URL
  API docs:       $S/docs        issuer: $S/.well-known/openid-configuration
  Explorer:       $S/explorer/   the access explorer for security admins: sign in as
                  sysadmin@example.com, or owner@spirit.example (a publisher admin); password below
  Metrics:        http://127.0.0.1:$ADMIN_PORT/metrics (the sidecar's admin listener, loopback only)
                  $UPSTREAM_URL/metrics (the catalog API's own port, not public)
  Mail:           every message the stack sends is stored in $DATA/mail/ (one .eml each)
  Events:         domain events go to the SQS queue ${SQS_QUEUE_URL:-(none: SQS_QUEUE_URL is not set)}
                  (npm run events -- status | dead-letters)

  Demo password for every seeded and directory user: music-demo-2026 (development only)
  creator1@songtrust.example has TOTP enrolled; secret $TOTP_SECRET
    (otpauth://totp/Music%20Publishing:creator1%40songtrust.example?issuer=Music%20Publishing&secret=$TOTP_SECRET)

  # an Active Directory user (nested group DMP-Catalog-Team → DMP-Editors → editor at DMP)
  curl -s -X POST $S/api/v1/auth/login -H 'content-type: application/json' \\
       -d '{"email":"ad.editor@dmp.example","password":"music-demo-2026"}'
  # an internal user
  curl -s -X POST $S/api/v1/auth/login -H 'content-type: application/json' \\
       -d '{"email":"viewer@dmp.example","password":"music-demo-2026"}'

  TOKEN=\$(${TOKEN_ENV}npm run -s token -- ad.editor@dmp.example)    # signs in the same way, prints the access token
  curl -H "Authorization: Bearer \$TOKEN" -H "X-Publisher-Id: $DMP" $S/api/v1/works
  curl -H "Authorization: Bearer \$TOKEN" -H "X-Publisher-Id: $SONGTRUST" $S/api/v1/works   # 403
  curl -X POST -H "Authorization: Bearer \$TOKEN" $S/api/v1/auth/logout                     # 204; the token is refused from now on

  Ctrl-C stops the catalog API, the sidecar and the mail catcher.
MSG
wait -n "${pids[@]}"
