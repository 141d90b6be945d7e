#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: installs the Debian packages, builds
# pgderive and installs it as /usr/local/bin/pgderive (`cmake --install`, with sudo when
# not root), brings up the real local stack (PostgreSQL 15, Redis 7, OpenSearch 2.19) in
# DIR (default /tmp/pgderive-demo), loads a sample shop (compose/shop.sql) into the
# database `shop`, and runs the example pipeline of docs/configuration.md on it
# (compose/local/demo.yml): a Redis cache, an OpenSearch index and a materialized-view
# table. It then changes a few rows, rebuilds one view while the stream flows, proves
# every view with `pgderive verify`, shows a sample of each store, and leaves the
# pipeline running (log: DIR/pgderive.log).
#
# It writes DIR/demo.env (mode 600; it holds the database password): after
#   set -a; . DIR/demo.env; set +a
# `pgderive status|verify|tail|backfill -c compose/local/demo.yml`, plain `psql` (the
# shop database), `redis-cli -p "$PGDERIVE_REDIS_PORT"` and
# `curl "$PGDERIVE_OPENSEARCH_URL"` reach the demo's servers.
#
# Running it again is harmless: it keeps the running stack and pipeline and the shop's
# data, and does not apply the sample changes a second time.
#
#   scripts/demo.sh [--binary PATH] [DIR]   start the demo (or find it running)
#   scripts/demo.sh --stop [DIR]            stop the pipeline and the stack (the data
#                                           stays in DIR; a later start resumes it)
#   scripts/demo.sh --stop-pipeline [DIR]   stop only the pipeline (e.g. before
#                                           `pgderive teardown`)
#
#   --binary PATH   use this pgderive, already built: installs no packages and builds
#                   and installs nothing (the walkthrough test uses it)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
caller_dir=$PWD
cd "$root"

usage() { sed -n '21,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "demo: $*" >&2; exit 1; }

mode=start
binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --stop) mode=stop; shift ;;
    --stop-pipeline) mode=stop-pipeline; shift ;;
    --binary) [ $# -ge 2 ] || usage; binary=$(realpath "$2"); shift 2 ;;
    -h|--help) usage ;;
    -*) echo "demo: unknown option '$1'" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -le 1 ] || usage
dir=$(realpath -m "${1:-/tmp/pgderive-demo}")
pidfile="$dir/pgderive.pid"
envfile="$dir/demo.env"
config=compose/local/demo.yml

# The pid of the demo's `pgderive run` if it is alive (a recycled pid of another
# program does not count), else nothing.
running_pid() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null || true)
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 0
  if tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "pgderive run -c $config"; then echo "$pid"; fi
}

# Stops the demo's `pgderive run` (SIGTERM; it finishes the batch in flight and writes
# its checkpoints) and waits until it has exited.
stop_pipeline() {
  local pid deadline
  pid=$(running_pid)
  if [ -n "$pid" ]; then
    kill -TERM "$pid"
    deadline=$(( $(date +%s) + 60 ))
    while [ -n "$(running_pid)" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    if [ -n "$(running_pid)" ]; then
      echo "demo: pgderive run (pid $pid) did not stop within 60 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "demo: pgderive run (pid $pid) stopped"
  else
    echo "demo: pgderive run is not running"
  fi
  rm -f "$pidfile"
}

if [ "$mode" = stop-pipeline ]; then
  stop_pipeline
  if compose/local/stack status "$dir" > /dev/null 2>&1; then
    echo "demo: the servers still run (scripts/demo.sh $dir starts the pipeline again," \
      "scripts/demo.sh --stop $dir stops them)"
  fi
  exit 0
fi
if [ "$mode" = stop ]; then
  stop_pipeline
  compose/local/stack down "$dir"
  echo "demo: stopped; the data stays in $dir (scripts/demo.sh $dir starts the demo again," \
    "rm -rf $dir forgets it)"
  exit 0
fi

if [ -z "$binary" ]; then
  scripts/install-deps.sh
  cmake -S . -B build/release -G Ninja -Wno-dev -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
  ninja -C build/release pgderive
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" cmake --install build/release --prefix /usr/local > /dev/null
  binary=/usr/local/bin/pgderive
  if [ "$(command -v pgderive || true)" != "$binary" ]; then
    echo "demo: note: \`pgderive\` on your PATH is $(command -v pgderive || echo missing), not $binary" >&2
  fi
fi
[ -x "$binary" ] || die "$binary is not an executable"

if compose/local/stack status "$dir" > /dev/null 2>&1; then
  echo "demo: the stack in $dir is already running"
else
  compose/local/stack down "$dir" > /dev/null 2>&1 || true
  compose/local/stack up "$dir" > /dev/null
fi
set -a
. "$dir/stack.env"
set +a
PGDERIVE_SHOP_DSN="${PGDERIVE_PG_DSN%/*}/shop"

# The demo's HTTP endpoint: the one it had, else pgderive's default port when free,
# else a free one (a second demo in another DIR runs beside the first).
listen=$(sed -n 's/^PGDERIVE_HTTP_LISTEN=//p' "$envfile" 2>/dev/null || true)
if [ -z "$listen" ]; then
  listen=127.0.0.1:9187
  while (exec 3<> "/dev/tcp/${listen%:*}/${listen##*:}") 2> /dev/null; do
    listen=127.0.0.1:$((15000 + RANDOM % 17000))
  done
fi

# The user's own env file: written whole, then renamed; readable by its owner only.
(
  umask 077
  cat > "$envfile.tmp" <<EOF
# The demo's servers (scripts/demo.sh $dir). Load into a shell with
#   set -a; . $envfile; set +a
# then run pgderive, psql, redis-cli and curl as the README's walkthrough shows.
PGDERIVE_SHOP_DSN=$PGDERIVE_SHOP_DSN
PGDERIVE_REDIS_URL=$PGDERIVE_REDIS_URL
PGDERIVE_REDIS_PORT=$PGDERIVE_REDIS_PORT
PGDERIVE_OPENSEARCH_URL=$PGDERIVE_OPENSEARCH_URL
PGDERIVE_HTTP_LISTEN=$listen
PGHOST=$PGDERIVE_PG_HOST
PGPORT=$PGDERIVE_PG_PORT
PGUSER=$PGDERIVE_PG_USER
PGPASSWORD=$PGDERIVE_PG_PASSWORD
PGDATABASE=shop
EOF
  mv "$envfile.tmp" "$envfile"
)
set -a
. "$envfile"
set +a

echo
"$binary" --version
echo "PostgreSQL: $(psql -d postgres -XAtc 'select version()' | cut -d, -f1)" \
  "(wal_level=$(psql -d postgres -XAtc 'show wal_level')) at $PGHOST:$PGPORT"
echo "Redis:      $(redis-cli -p "$PGDERIVE_REDIS_PORT" info server | sed -n 's/^redis_version:/redis /p' | tr -d '\r') at $PGDERIVE_REDIS_URL"
echo "OpenSearch: $(curl -s "$PGDERIVE_OPENSEARCH_URL" | sed -n 's/.*"number" : "\(.*\)".*/opensearch \1/p') at $PGDERIVE_OPENSEARCH_URL"

# The sample database: loaded once, in one transaction; a later run keeps its data.
if [ "$(psql -d postgres -XAtc "select count(*) from pg_database where datname = 'shop'")" = 0 ]; then
  psql -d postgres -Xq -c "create database shop"
fi
if [ "$(psql -XAtc "select to_regclass('public.products') is not null and
                           to_regclass('public.customers') is not null and
                           to_regclass('public.orders') is not null")" = t ]; then
  echo "demo: the database shop is already loaded; keeping its data"
else
  psql -Xq -1 -v ON_ERROR_STOP=1 -f compose/shop.sql
  echo "demo: loaded compose/shop.sql into the database shop"
fi

pid=$(running_pid)
if [ -n "$pid" ]; then
  echo "demo: pgderive run is already running (pid $pid); keeping it"
else
  : > "$dir/pgderive.log"
  nohup "$binary" run -c "$config" >> "$dir/pgderive.log" 2>&1 &
  started=$!
  echo "$started" > "$pidfile"
  deadline=$(( $(date +%s) + 120 ))
  until grep -q "streaming from slot" "$dir/pgderive.log"; do
    # Alive by its pid: until nohup has exec'd pgderive, the process's command line is
    # still the shell's, which running_pid would not recognise.
    if ! kill -0 "$started" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
      cat "$dir/pgderive.log" >&2
      die "pgderive run did not reach streaming"
    fi
    sleep 0.2
  done
  sed 's/^/  /' "$dir/pgderive.log"
fi

# The sample changes, once: order 5001 is their mark (the shop's orders are 1..5000).
echo
if [ "$(psql -XAtc 'select count(*) from orders where id = 5001')" != 0 ]; then
  echo "demo: the sample changes are already applied (order 5001 exists); not applying them again"
else
  echo "demo: changing a few rows"
  psql -Xq -1 -v ON_ERROR_STOP=1 <<'SQL'
update products set price = price + 1, tags = tags || 'sale'::text, updated_at = now() where id <= 3;
delete from products where id = 1000;
insert into orders (id, customer_id, amount) values (5001, 7, 99.99);
update customers set name = 'Customer Seven' where id = 7;
SQL
  echo "demo: pgderive backfill --view product_search (rebuilt while the stream flows)"
  "$binary" backfill -c "$config" --view product_search --timeout 120
fi
echo "demo: pgderive verify"
"$binary" verify -c "$config"

echo
echo "Redis      GET product:1 -> $(redis-cli -p "$PGDERIVE_REDIS_PORT" GET product:1)"
echo "OpenSearch products/_source/1 -> $(curl -s "$PGDERIVE_OPENSEARCH_URL/products/_source/1")"
echo "PostgreSQL analytics.customer_totals (customer 7):"
psql -X -c "select * from analytics.customer_totals where customer_id = 7"

echo "demo: ready"
echo "  pipeline  shop, running (pid $(running_pid)), log $dir/pgderive.log, http://$PGDERIVE_HTTP_LISTEN"
echo "  binary    $binary"
echo "  env file  $envfile (the servers and the database password; yours only)"
echo
echo "Drive it (README.md, \"Five-minute walkthrough\"):"
[ "$caller_dir" = "$root" ] || echo "  cd $root"
cat <<EOF
  set -a; . $envfile; set +a
  pgderive status -c $config
  psql -c 'select id, price from products where id <= 3'
  redis-cli -p "\$PGDERIVE_REDIS_PORT" GET product:1
  curl -s "\$PGDERIVE_OPENSEARCH_URL/products/_source/1?pretty"
  psql -c 'select * from analytics.customer_totals where customer_id = 7'
Stop it:
  scripts/demo.sh --stop $dir
EOF
