#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: installs the Debian packages, builds
# pgderive, brings up the real local stack (PostgreSQL 15, Redis 7, OpenSearch 2.19) in
# DIR (default /tmp/pgderive-demo), loads a sample shop database (compose/shop.sql),
# and runs the example pipeline of docs/configuration.md on it (compose/local/demo.yml): a Redis cache,
# an OpenSearch index and a materialized-view table. It then changes a few rows,
# proves every view with `pgderive verify`, shows a sample of each, and leaves the
# pipeline running (log: DIR/pgderive.log).
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
build/release/app/pgderive --version
echo "PostgreSQL: $(psql "$PGDERIVE_PG_DSN" -XAtc 'select version()' | cut -d, -f1)" \
  "(wal_level=$(psql "$PGDERIVE_PG_DSN" -XAtc 'show wal_level'))"
echo "            psql \"\$(sed -n 's/^PGDERIVE_PG_DSN=//p' $dir/stack.env)\""
echo "Redis:      $(redis-cli -p "$PGDERIVE_REDIS_PORT" info server | sed -n 's/^redis_version:/redis /p' | tr -d '\r') at $PGDERIVE_REDIS_URL"
echo "OpenSearch: $(curl -s "$PGDERIVE_OPENSEARCH_URL" | sed -n 's/.*"number" : "\(.*\)".*/opensearch \1/p') at $PGDERIVE_OPENSEARCH_URL"
echo "env file:   $dir/stack.env"

# The sample database and the pipeline.
if [ "$(psql "$PGDERIVE_PG_DSN" -XAtc "select count(*) from pg_database where datname = 'shop'")" = 0 ]; then
  psql "$PGDERIVE_PG_DSN" -Xq -c "create database shop"
fi
export PGDERIVE_SHOP_DSN="${PGDERIVE_PG_DSN%/*}/shop"
psql "$PGDERIVE_SHOP_DSN" -Xq -v ON_ERROR_STOP=1 -f compose/shop.sql
pidfile="$dir/pgderive.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "demo: pgderive run is already running (pid $(cat "$pidfile"))"
else
  : > "$dir/pgderive.log"
  nohup build/release/app/pgderive run -c compose/local/demo.yml >> "$dir/pgderive.log" 2>&1 &
  echo $! > "$pidfile"
  deadline=$(( $(date +%s) + 120 ))
  until grep -q "streaming from slot" "$dir/pgderive.log"; do
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
      cat "$dir/pgderive.log" >&2
      echo "demo: pgderive run did not reach streaming" >&2
      exit 1
    fi
    sleep 0.2
  done
fi
sed 's/^/  /' "$dir/pgderive.log"

echo
echo "demo: changing a few rows"
psql "$PGDERIVE_SHOP_DSN" -Xq -v ON_ERROR_STOP=1 <<'SQL'
update products set price = price + 1, tags = tags || 'sale'::text, updated_at = now() where id <= 3;
delete from products where id = 1000;
insert into orders (id, customer_id, amount) select coalesce(max(id), 0) + 1, 7, 99.99 from orders;
update customers set name = 'Customer Seven' where id = 7;
SQL
echo "demo: pgderive backfill --view product_search (rebuilt while the stream flows)"
build/release/app/pgderive backfill -c compose/local/demo.yml --view product_search --timeout 120
echo "demo: pgderive verify"
build/release/app/pgderive verify -c compose/local/demo.yml

echo
echo "Redis      GET product:1 -> $(redis-cli -p "$PGDERIVE_REDIS_PORT" get product:1)"
echo "OpenSearch products/_doc/1 -> $(curl -s "$PGDERIVE_OPENSEARCH_URL/products/_doc/1" | sed -n 's/.*"_source":\(.*\)}$/\1/p')"
echo "PostgreSQL analytics.customer_totals (customer 7):"
psql "$PGDERIVE_SHOP_DSN" -X -c "select * from analytics.customer_totals where customer_id = 7"
echo "pipeline:   running (pid $(cat "$pidfile")), log $dir/pgderive.log"
echo "stop with:  kill \$(cat $pidfile); compose/local/stack down $dir"
