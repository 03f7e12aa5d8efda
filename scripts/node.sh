#!/usr/bin/env bash
# Run a script with the project's Node (>= 22.18, fetched when the system one is older).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_node
ensure_deps >&2
exec node "$@"
