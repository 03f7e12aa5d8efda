#!/usr/bin/env bash
# `npm run bench [-- sidecar|peer|latency|sign-in|fuzz|soak|db]`: the benchmarks in bench/ against real OpenFGA, Redis,
# PostgreSQL (database publishing_bench) and the demo directory; sidecar, peer (side by side with
# nginx auth_request → OPA), latency (open loop, vegeta) and sign-in when none is named (fuzz: 100,000
# cases per transport, soak: 10 minutes, db: the database at a million works, 10–20 minutes —
# run them by name).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_node
ensure_deps
# --fresh: the bench stack migrates and seeds its own data (and a database keyed by another
# checkout's key-encryption key could not sign in)
use_services --db publishing_bench --fresh
ensure_key_files >/dev/null
node migrations/seed/directory.ts >/dev/null
benches=("$@")
[ $# -gt 0 ] || benches=(sidecar peer latency sign-in)
# the peer's and the open-loop generator's binaries (built once into tools/cache/bin; OPA takes minutes)
for b in "${benches[@]}"; do
  case "$b" in
    peer) [ -n "${OPA_BIN:-}" ] || OPA_BIN="$(ensure_opa_bin)"; [ -n "${NGINX_BIN:-}" ] || NGINX_BIN="$(ensure_nginx)"; export OPA_BIN NGINX_BIN ;;
    latency) [ -n "${VEGETA_BIN:-}" ] || VEGETA_BIN="$(ensure_vegeta_bin)"; export VEGETA_BIN ;;
  esac
done
rc=0
for b in "${benches[@]}"; do
  [ -f "bench/$b.bench.ts" ] || { echo "no benchmark bench/$b.bench.ts" >&2; exit 2; }
  log "bench/$b.bench.ts"
  node "bench/$b.bench.ts" || rc=$?
done
exit "$rc"
