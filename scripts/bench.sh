#!/usr/bin/env bash
# `npm run bench [-- sidecar|sign-in]`: the benchmarks in bench/ against real OpenFGA, Redis,
# PostgreSQL (database publishing_bench) and the demo directory; both when none is named.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_node
ensure_deps
use_services --db publishing_bench
export ISSUER_KEK_FILE="${ISSUER_KEK_FILE:-$DATA/issuer-kek.key}"
node scripts/keys.ts init "$DATA" >/dev/null
node migrations/seed/directory.ts >/dev/null
benches=("${@:-sidecar sign-in}")
rc=0
for b in ${benches[@]}; do
  [ -f "bench/$b.bench.ts" ] || { echo "no benchmark bench/$b.bench.ts" >&2; exit 2; }
  log "bench/$b.bench.ts"
  node "bench/$b.bench.ts" || rc=$?
done
exit "$rc"
