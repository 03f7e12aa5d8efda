#!/usr/bin/env bash
# Make PostgreSQL, Redis, OpenFGA and the demo directory (a Samba AD domain controller) available on
# loopback and print their settings as `export` lines.
#
# Reuses a configured or reachable service (DATABASE_URL/DATABASE_OWNER_URL/AUTH_DATABASE_URL (+ JOBS_DATABASE_URL),
# REDIS_URL, OPENFGA_API_URL, DIRECTORY_URL); otherwise installs Debian packages and starts private
# instances under .data/. OpenFGA is built with `go install` into tools/cache/bin (reused when
# present) and uses PostgreSQL as its datastore, prepared with `openfga migrate`. The directory is
# provisioned once under .data/samba (realm CORP.EXAMPLE.TEST, LDAPS on 127.0.0.1:636 with a
# certificate from a private CA in .data/samba/tls, random administrator and service passwords kept
# in .data/samba/*-password) and started with only its LDAP service.
# The domain events' SQS FIFO queue (catalog-events.fifo) lives in goaws (tools/goaws, built with
# `go install` into tools/cache/bin) on 127.0.0.1:${SQS_PORT:-9324}, files under .data/goaws; a
# configured SQS_ENDPOINT_URL (and SQS_QUEUE_URL) is used instead.
#
# Usage: scripts/services.sh [--db NAME] [--fresh]   (default database name: publishing; --fresh drops it first)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DB_NAME="publishing"
FRESH=0
while [ $# -gt 0 ]; do
  case "$1" in
    --db) DB_NAME="$2"; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    *) echo "usage: scripts/services.sh [--db NAME] [--fresh]" >&2; exit 2 ;;
  esac
done


# apt_install: scripts/lib.sh

# ---------- PostgreSQL ----------
PG_HOST=127.0.0.1 PG_PORT="${PG_PORT:-5432}"
ensure_postgres() {
  if [ -n "${DATABASE_URL:-}" ] && [ -n "${DATABASE_OWNER_URL:-}" ] && [ -n "${AUTH_DATABASE_URL:-}" ]; then
    # a configured database: its relays' role (catalog_jobs) is configured too, or the catalog API refuses to start
    [ -n "${JOBS_DATABASE_URL:-}" ] || log "JOBS_DATABASE_URL is not set (the role catalog_jobs of the relays and jobs): the catalog API will not start without it"
    return 0
  fi
  if ! port_open "$PG_HOST" "$PG_PORT"; then
    command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
    if pg_lsclusters -h 2>/dev/null | grep -q .; then
      log "starting the system PostgreSQL cluster"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
    fi
    if ! port_open "$PG_HOST" "$PG_PORT"; then
      PG_PORT=55432
      local bin; bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
      local dir="$DATA/postgres"
      if [ ! -f "$dir/PG_VERSION" ]; then
        log "initialising a private PostgreSQL cluster in $dir"
        mkdir -p "$dir"
        chown postgres "$dir"   # only the cluster: the key files in $DATA stay the caller's
        su postgres -c "$bin/initdb -D '$dir' -A trust -U postgres" >/dev/null
      fi
      port_open "$PG_HOST" "$PG_PORT" || su postgres -c "$bin/pg_ctl -D '$dir' -o '-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1' -l '$dir/log' -w start" >/dev/null
    fi
  fi
  local su="psql -h $PG_HOST -p $PG_PORT -U postgres -v ON_ERROR_STOP=1 -qtA"
  $su -d postgres <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'catalog_owner') THEN CREATE ROLE catalog_owner LOGIN PASSWORD 'catalog_owner' NOSUPERUSER NOBYPASSRLS; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'catalog_app') THEN CREATE ROLE catalog_app LOGIN PASSWORD 'catalog_app' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'catalog_auth') THEN CREATE ROLE catalog_auth LOGIN PASSWORD 'catalog_auth' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'catalog_jobs') THEN CREATE ROLE catalog_jobs LOGIN PASSWORD 'catalog_jobs' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'openfga') THEN CREATE ROLE openfga LOGIN PASSWORD 'openfga'; END IF;
END \$\$;
SQL
  if [ "$FRESH" = 1 ]; then $su -d postgres -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null; fi
  for db in "$DB_NAME:catalog_owner" "openfga:openfga"; do
    local name="${db%%:*}" owner="${db##*:}"
    if [ -z "$($su -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$name'")" ]; then
      log "creating database $name"
      $su -d postgres -c "CREATE DATABASE \"$name\" OWNER $owner" >/dev/null
    fi
  done
  $su -d "$DB_NAME" -c "SET client_min_messages = warning; REVOKE ALL ON SCHEMA public FROM PUBLIC; ALTER SCHEMA public OWNER TO catalog_owner; GRANT USAGE ON SCHEMA public TO catalog_app, catalog_auth, catalog_jobs; CREATE EXTENSION IF NOT EXISTS pgcrypto" >/dev/null
  PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@$PG_HOST:$PG_PORT/postgres}"   # the tests create databases
  DATABASE_URL="postgres://catalog_app:catalog_app@$PG_HOST:$PG_PORT/$DB_NAME"
  DATABASE_OWNER_URL="postgres://catalog_owner:catalog_owner@$PG_HOST:$PG_PORT/$DB_NAME"
  AUTH_DATABASE_URL="postgres://catalog_auth:catalog_auth@$PG_HOST:$PG_PORT/$DB_NAME"
  JOBS_DATABASE_URL="postgres://catalog_jobs:catalog_jobs@$PG_HOST:$PG_PORT/$DB_NAME"   # the relays and jobs (migration 0011)
  OPENFGA_DATASTORE_URI="${OPENFGA_DATASTORE_URI:-postgres://openfga:openfga@$PG_HOST:$PG_PORT/openfga?sslmode=disable}"
}

# ---------- Redis ----------
ensure_redis() {
  if [ -n "${REDIS_URL:-}" ]; then return 0; fi
  if port_open 127.0.0.1 6379; then REDIS_URL="redis://127.0.0.1:6379/0"; return 0; fi
  command -v redis-server >/dev/null || apt_install redis-server
  if ! port_open 127.0.0.1 6380; then
    log "starting a private Redis on 127.0.0.1:6380"
    mkdir -p "$DATA/redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6380 --save '' --appendonly no --dir "$DATA/redis" --logfile "$DATA/redis/redis.log"
  fi
  REDIS_URL="redis://127.0.0.1:6380/0"
}

# ---------- OpenFGA ----------
ensure_openfga() {
  if [ -n "${OPENFGA_API_URL:-}" ]; then return 0; fi
  OPENFGA_API_URL="http://127.0.0.1:${OPENFGA_HTTP_PORT:-8080}"
  if curl -fsS "$OPENFGA_API_URL/healthz" >/dev/null 2>&1; then return 0; fi
  local bin; bin="$(ensure_openfga_bin)"
  "$bin" migrate --datastore-engine postgres --datastore-uri "$OPENFGA_DATASTORE_URI" >"$DATA/openfga-migrate.log" 2>&1 \
    || { cat "$DATA/openfga-migrate.log" >&2; exit 1; }
  log "starting OpenFGA on $OPENFGA_API_URL"
  # Datastore pool (issue 8): max idle = max open, so a burst never closes and re-forks PostgreSQL
  # backends (each new backend costs PostgreSQL CPU). Check query and iterator caches on, TTL 10 s,
  # request timeout 3 s — the values of policies/src/openfga-caches.ts: the sidecars bypass the
  # caches for OPENFGA_CACHE_BYPASS_MS [13000] after a decision's epochs change.
  OPENFGA_CHECK_QUERY_CACHE_ENABLED=true OPENFGA_CHECK_QUERY_CACHE_TTL=10s \
  OPENFGA_CHECK_ITERATOR_CACHE_ENABLED=true OPENFGA_CHECK_ITERATOR_CACHE_TTL=10s OPENFGA_REQUEST_TIMEOUT=3s \
  OPENFGA_DATASTORE_MAX_OPEN_CONNS="${OPENFGA_DATASTORE_MAX_OPEN_CONNS:-30}" OPENFGA_DATASTORE_MAX_IDLE_CONNS="${OPENFGA_DATASTORE_MAX_IDLE_CONNS:-30}" \
  OPENFGA_HTTP_ADDR="127.0.0.1:${OPENFGA_HTTP_PORT:-8080}" OPENFGA_GRPC_ADDR="127.0.0.1:${OPENFGA_GRPC_PORT:-8081}" \
    nohup "$bin" run --datastore-engine postgres --datastore-uri "$OPENFGA_DATASTORE_URI" \
      --playground-enabled=false --metrics-enabled=false --log-format json \
      >"$DATA/openfga.log" 2>&1 &
  echo $! >"$DATA/openfga.pid"
  for _ in $(seq 1 100); do curl -fsS "$OPENFGA_API_URL/healthz" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "OpenFGA did not become healthy; see $DATA/openfga.log" >&2; tail -20 "$DATA/openfga.log" >&2; exit 1
}

# ---------- Directory (Samba AD DC) ----------
SAMBA_DIR="$DATA/samba"
# Each checkout's Samba keeps its pid file in its own folder, so a directory started by another
# checkout (another CA, other passwords) is never mistaken for this one's.
SAMBA_PID="$SAMBA_DIR/run/samba.pid"
samba_running() { [ -f "$SAMBA_PID" ] && kill -0 "$(cat "$SAMBA_PID")" 2>/dev/null; }
# Point an existing provisioning's pid directory at $SAMBA_DIR/run (idempotent).
samba_own_pid_dir() {
  local conf="$SAMBA_DIR/dc/etc/smb.conf"
  mkdir -p "$SAMBA_DIR/run"
  grep -q '^\s*pid directory' "$conf" && return 0
  awk -v dir="$SAMBA_DIR/run" '{ print } /^\[global\]/ { print "\tpid directory = " dir }' "$conf" >"$conf.new"
  mv "$conf.new" "$conf"
}
# A password that satisfies AD's complexity rule (three of: upper, lower, digit, symbol).
new_password() { printf 'Mp-%s-9x' "$(head -c 15 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"; }

make_directory_tls() {
  local tls="$SAMBA_DIR/tls"
  mkdir -p "$tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout "$tls/ca.key" -out "$tls/ca.pem" \
    -subj "/CN=Music Publishing demo directory CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$tls/key.pem" -out "$tls/server.csr" -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' >"$tls/ext.cnf"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 825 \
    -extfile "$tls/ext.cnf" -out "$tls/cert.pem" 2>/dev/null
  chmod 600 "$tls/key.pem" "$tls/ca.key"
}

provision_directory() {
  command -v samba-tool >/dev/null || apt_install samba samba-ad-dc samba-ad-provision samba-dsdb-modules samba-vfs-modules openssl
  log "provisioning the demo directory (Samba AD DC, realm CORP.EXAMPLE.TEST) in $SAMBA_DIR"
  rm -rf "$SAMBA_DIR/dc" && mkdir -p "$SAMBA_DIR/log"
  [ -s "$SAMBA_DIR/admin-password" ] || new_password >"$SAMBA_DIR/admin-password"
  samba-tool domain provision --targetdir="$SAMBA_DIR/dc" --realm=CORP.EXAMPLE.TEST --domain=CORP \
    --adminpass="$(cat "$SAMBA_DIR/admin-password")" --server-role=dc --dns-backend=NONE --use-rfc2307 \
    --option="interfaces=lo" --option="bind interfaces only=yes" >"$SAMBA_DIR/log/provision.log" 2>&1 \
    || { tail -20 "$SAMBA_DIR/log/provision.log" >&2; exit 1; }
  make_directory_tls
  local conf="$SAMBA_DIR/dc/etc/smb.conf"
  local extra
  extra="$(printf '\ttls enabled = yes\n\ttls keyfile = %s\n\ttls certfile = %s\n\ttls cafile = %s\n\tprefork children = 2' \
    "$SAMBA_DIR/tls/key.pem" "$SAMBA_DIR/tls/cert.pem" "$SAMBA_DIR/tls/ca.pem")"
  awk -v logs="$SAMBA_DIR/log/samba.log" -v extra="$extra" '
    /^\tserver services = / { print "\tserver services = ldap"; next }
    /^\tlog file = / { print "\tlog file = " logs; next }
    { print }
    /^\[global\]/ { print extra }' "$conf" >"$conf.new"
  mv "$conf.new" "$conf"
  # Demo passwords never expire and are never reused-checked; 20 bad binds lock an account (AD's 775).
  samba-tool domain passwordsettings set --configfile="$conf" --history-length=0 --min-pwd-age=0 --max-pwd-age=0 \
    --account-lockout-threshold=20 --account-lockout-duration=1 --reset-account-lockout-after=1 >/dev/null
  touch "$SAMBA_DIR/provisioned"
}

ensure_directory() {
  if [ -n "${DIRECTORY_URL:-}" ]; then return 0; fi
  DIRECTORY_URL="ldaps://127.0.0.1:636"
  DIRECTORY_CA_FILE="$SAMBA_DIR/tls/ca.pem"
  if ! samba_running; then
    if port_open 127.0.0.1 636; then
      echo "something else listens on 127.0.0.1:636 (another checkout's demo directory?); stop it, or set DIRECTORY_URL, DIRECTORY_CA_FILE, DIRECTORY_ADMIN_PASSWORD and DIRECTORY_BIND_PASSWORD to use it" >&2
      exit 1
    fi
    [ -f "$SAMBA_DIR/provisioned" ] || provision_directory
    samba_own_pid_dir
    log "starting the demo directory (LDAPS on 127.0.0.1:636)"
    samba -s "$SAMBA_DIR/dc/etc/smb.conf"
  fi
  for _ in $(seq 1 150); do port_open 127.0.0.1 636 && break; sleep 0.2; done
  port_open 127.0.0.1 636 || { echo "the directory did not start; see $SAMBA_DIR/log" >&2; exit 1; }
  [ -s "$SAMBA_DIR/bind-password" ] || new_password >"$SAMBA_DIR/bind-password"
  DIRECTORY_ADMIN_PASSWORD="$(cat "$SAMBA_DIR/admin-password")"
  DIRECTORY_BIND_PASSWORD="$(cat "$SAMBA_DIR/bind-password")"
}

# ---------- SQS (goaws: the FIFO queue of the domain events) ----------
# goaws keeps queues in memory, so the queue is created on every run (CreateQueue is idempotent).
# Its settings are printed only when this script runs it; a configured SQS_ENDPOINT_URL is left alone.
SQS_QUEUE_NAME="catalog-events.fifo"
SQS_EXPORTS=""
ensure_sqs() {
  if [ -n "${SQS_ENDPOINT_URL:-}" ]; then return 0; fi
  local port="${SQS_PORT:-9324}" dir="$DATA/goaws"
  SQS_ENDPOINT_URL="http://127.0.0.1:$port"
  if ! curl -fsS "$SQS_ENDPOINT_URL/health" >/dev/null 2>&1; then
    if port_open 127.0.0.1 "$port"; then
      echo "something else listens on 127.0.0.1:$port; stop it, or set SQS_PORT, or SQS_ENDPOINT_URL and SQS_QUEUE_URL to use it" >&2
      exit 1
    fi
    local bin; bin="$(ensure_goaws_bin)"
    mkdir -p "$dir"
    # EnableDuplicates: MessageDeduplicationId de-duplication (off by default in goaws)
    cat >"$dir/goaws.yaml" <<YAML
Local:
  Host: 127.0.0.1
  Port: "$port"
  AccountId: "000000000000"
  EnableDuplicates: true
  QueueAttributeDefaults:
    VisibilityTimeout: 30
    ReceiveMessageWaitTimeSeconds: 0
    MaximumMessageSize: 262144
YAML
    log "starting goaws (SQS) on $SQS_ENDPOINT_URL"
    nohup "$bin" -config "$dir/goaws.yaml" -listen "127.0.0.1:$port" >"$dir/goaws.log" 2>&1 &
    echo $! >"$dir/goaws.pid"
    for _ in $(seq 1 100); do curl -fsS "$SQS_ENDPOINT_URL/health" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fsS "$SQS_ENDPOINT_URL/health" >/dev/null 2>&1 || { echo "goaws did not start; see $dir/goaws.log" >&2; tail -20 "$dir/goaws.log" >&2; exit 1; }
  fi
  curl -fsS -o /dev/null "$SQS_ENDPOINT_URL/" --data-urlencode Action=CreateQueue --data-urlencode "QueueName=$SQS_QUEUE_NAME" \
    --data-urlencode Attribute.1.Name=FifoQueue --data-urlencode Attribute.1.Value=true --data-urlencode Version=2012-11-05 \
    || { echo "could not create the SQS queue $SQS_QUEUE_NAME on $SQS_ENDPOINT_URL" >&2; exit 1; }
  SQS_QUEUE_URL="$SQS_ENDPOINT_URL/000000000000/$SQS_QUEUE_NAME"
  SQS_PROTOCOL=query   # goaws v0.4.5 speaks only the Query protocol
  AWS_REGION="${AWS_REGION:-us-east-1}"
  AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"   # goaws checks no signature
  SQS_EXPORTS="SQS_ENDPOINT_URL SQS_QUEUE_URL SQS_PROTOCOL AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY"
}

ensure_postgres
ensure_redis
ensure_openfga
ensure_directory
ensure_sqs
# %q: a configured value with quotes or spaces survives the caller's eval
for name in DATABASE_URL DATABASE_OWNER_URL AUTH_DATABASE_URL JOBS_DATABASE_URL PG_ADMIN_URL REDIS_URL OPENFGA_API_URL OPENFGA_DATASTORE_URI \
            DIRECTORY_URL DIRECTORY_CA_FILE DIRECTORY_ADMIN_PASSWORD DIRECTORY_BIND_PASSWORD $SQS_EXPORTS; do
  printf 'export %s=%q\n' "$name" "${!name:-}"
done
