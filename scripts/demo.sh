#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: installs the Debian packages, builds
# pgderive, and brings up the real local stack (PostgreSQL 15, Redis 7, OpenSearch 2.19)
# in DIR (default /tmp/pgderive-demo), where it keeps running until
# `compose/local/stack down DIR`. Later issues turn this into a demo pipeline on a
# sample database.
#
#   scripts/demo.sh [DIR]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
dir=${1:-/tmp/pgderive-demo}

scripts/install-deps.sh
cmake -S . -B build/release -G Ninja -Wno-dev -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
ninja -C build/release pgderive
if compose/local/stack status "$dir" > /dev/null 2>&1; then
  echo "demo: the stack in $dir is already running"
else
  compose/local/stack down "$dir" > /dev/null 2>&1 || true
  compose/local/stack up "$dir" > /dev/null
fi
set -a
. "$dir/stack.env"
set +a

echo
build/release/cdc/pgderive --version
echo "PostgreSQL: $(psql "$PGDERIVE_PG_DSN" -XAtc 'select version()' | cut -d, -f1)" \
  "(wal_level=$(psql "$PGDERIVE_PG_DSN" -XAtc 'show wal_level'))"
echo "            psql \"\$(sed -n 's/^PGDERIVE_PG_DSN=//p' $dir/stack.env)\""
echo "Redis:      $(redis-cli -p "$PGDERIVE_REDIS_PORT" info server | sed -n 's/^redis_version:/redis /p' | tr -d '\r') at $PGDERIVE_REDIS_URL"
echo "OpenSearch: $(curl -s "$PGDERIVE_OPENSEARCH_URL" | sed -n 's/.*"number" : "\(.*\)".*/opensearch \1/p') at $PGDERIVE_OPENSEARCH_URL"
echo "env file:   $dir/stack.env"
echo "stop with:  compose/local/stack down $dir"
