#!/usr/bin/env bash
# `npm run bench`: the sidecar-vs-direct benchmark (bench/sidecar.bench.ts) against real OpenFGA and Redis.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_node
ensure_deps
eval "$(bash scripts/services.sh)"
exec node bench/sidecar.bench.ts "$@"
