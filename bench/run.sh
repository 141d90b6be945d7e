#!/usr/bin/env bash
# The pipeline's benchmark (issue 4): `pgderive run` into each store alone and into all
# three at once, against PostgreSQL's walsender ceiling and each store's own ceiling,
# on the same WAL and payloads, in the same run; then commit-to-visible latency at a
# steady transaction rate.
#
#   bench/run.sh [--txns N] [--rate TX_PER_S] [--seconds S] [--only "redis opensearch ..."]
#                [--catchup-rows N] [--catchup-txns N] [--backfill-rows N] [--version-rows N]
#                [--verify-rows N] [--backfill-writer-txns N]
#
# --only runs a subset of the configurations (redis, opensearch, projection, groupby, backfill,
# backfill-opensearch, all, catchup-redis, catchup-opensearch, version-opensearch, verify,
# redis-noverify, redis-log, all-log) and of the latency runs (latency, latency-log), with
# the store ceilings they need; a name not among these is refused before anything starts.
# The background verifier's cost: redis-noverify is redis with `verify: off`, reported
# beside it (redis runs with the default, `verify` on at 1,000 rows/s).
# Verification (verify): a table of --verify-rows rows (1,000,000) in a Redis, an
# OpenSearch and a postgres view, filled and live (the background verifier off), then
# `pgderive verify --view` of each at full speed: rows/s as a ratio to `COPY TO STDOUT`
# of the same table, and verify's peak memory. The postgres view twice: on the digest
# path (its digests equal: only the buckets' digests computed) and on the row path
# (every row of its table changed behind pgderive's back: every bucket read and compared
# entry by entry, `--reads 1`).
# The change log: redis-log and all-log are redis and all with `spool` on (the log on this
# machine's disk), latency-log the latency run with it; each is reported beside its
# log-off twin, same WAL sizes, same run, with the log's write rate and its bytes per
# million changes.
#
# Throughput is measured as catch-up: for each configuration, pgderive is started once
# (creating its slot and empty views) and stopped; a ceiling slot is created at the same
# point; the workload runs (N transactions of 100 changes: 50 inserts, 30 updates, 20
# deletes, like the capture benchmark's (c)); then pg_recvlogical reads the ceiling slot
# to the workload's end (protocol 2, streaming) and pgderive is started again and timed
# until its stores' checkpoints pass the end. Store ceilings replay the same final rows:
# `redis-cli --pipe` of SETs, a plain `_bulk` loader (curl, 5,000 documents a request),
# and `COPY` into a table of the projection's shape.
# Catch-up into Redis (catchup-redis): while pgderive is stopped, one transaction inserting
# N rows (--catchup-rows, 300,000) and then M single-row update transactions
# (--catchup-txns, 50,000) queue in its slot; `pgderive run` is started and timed until its
# Redis checkpoint passes the workload's end. Ceiling: pg_recvlogical on copies of
# pgderive's own slot (pg_copy_logical_replication_slot, taken while it was stopped), the
# same WAL to the same end; the faster of protocol 1 and protocol 2 with streaming.
# Latency: pgbench drives single-row updates of a 100,000-row table at TX_PER_S for S
# seconds while pgderive streams it into Redis; pgderive reports source commit to visible in the store (the
# time its write returned minus the commit timestamp), p50 and p99.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage() {
  sed -n 's/^#   \(bench\/run.sh .*\)/\1/p; s/^#                \(\[.*\)/               \1/p' "${BASH_SOURCE[0]}"
}
known_items="redis opensearch projection groupby all latency backfill backfill-opensearch catchup-redis catchup-opensearch version-opensearch verify redis-noverify redis-log all-log latency-log"
txns=2000 rate=5000 seconds=20 only="" catchup_rows=300000 catchup_txns=50000 backfill_rows=1000000 version_rows=1000000 verify_rows=1000000 backfill_writer_txns=
while [ $# -gt 0 ]; do
  case "$1" in
    --txns) txns=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --catchup-rows) catchup_rows=$2; shift 2 ;;
    --catchup-txns) catchup_txns=$2; shift 2 ;;
    --backfill-rows) backfill_rows=$2; shift 2 ;;
    --version-rows) version_rows=$2; shift 2 ;;
    --verify-rows) verify_rows=$2; shift 2 ;;
    --backfill-writer-txns) backfill_writer_txns=$2; shift 2 ;;
    -h|--help) usage; echo "  --only: $known_items"; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
for item in $only; do
  [[ " $known_items " == *" $item "* ]] || { echo "--only: unknown item '$item' (known: $known_items)" >&2; exit 2; }
done
# Counts of transactions go into SQL (an int) and shell arithmetic (no leading 0: octal).
for count in "txns=$txns" "backfill-writer-txns=$backfill_writer_txns"; do
  name=${count%%=*} value=${count#*=}
  [ "$name" = backfill-writer-txns ] && [ -z "$value" ] && continue
  if [[ ! "$value" =~ ^(0|[1-9][0-9]{0,8})$ ]]; then
    echo "--$name: '$value' is not a number of transactions (0 to 999999999)" >&2
    exit 2
  fi
done
binary="${PGDERIVE_BINARY:-$root/build/release/app/pgderive}"  # PGDERIVE_BINARY: another build to compare
[ -x "$binary" ] || { echo "build first: cmake -S . -B build/release -G Ninja && ninja -C build/release" >&2; exit 2; }

dir=$(mktemp -d /tmp/pgderive-runbench.XXXXXX)
cleanup() {
  pkill -f "pgderive run -c $dir" 2>/dev/null || true
  "$root/compose/local/stack" down "$dir" > /dev/null 2>&1 || true
  # Belt and braces: whatever the stack's pid files still name (Redis renames its
  # process, so a pattern would miss it), and anything started from this directory.
  local f p
  for f in "$dir"/pg.pid "$dir"/redis.pid "$dir"/opensearch.pid "$dir"/redis/redis.pid; do
    p=$(cat "$f" 2>/dev/null) && kill -KILL "$p" 2>/dev/null || true
  done
  pkill -KILL -f "$dir/" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
want() { [ -z "$only" ] || [[ " $only " == *" $1 "* ]]; }
# OpenSearch only for the configurations that write to it.
services=pg,redis
if want opensearch || want all || want all-log || want catchup-opensearch || want backfill-opensearch || want version-opensearch || want verify; then services=pg,redis,opensearch; fi
"$root/compose/local/stack" up "$dir" --services "$services" >/dev/null
set -a; . "$dir/stack.env"; set +a
search_url=${PGDERIVE_OPENSEARCH_URL:-}
dsn=$PGDERIVE_PG_DSN
bindir=$PGDERIVE_PG_BINDIR
q() { psql "$dsn" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }

# OpenSearch's JVM compiles its indexing path on first use: a scratch index of 50,000
# documents first, so that pgderive and the plain loader are both measured warm.
if [ -n "$search_url" ]; then
mkdir -p "$dir/warmup"
q -c "select '{\"index\":{\"_index\":\"warmup\",\"_id\":\"' || g || '\"}}' || chr(10) || json_build_object('id', g, 'title', md5(g::text) || ' lorem ipsum', 'price', g / 100.0)::text from generate_series(1, 50000) g" \
  | split -l 10000 - "$dir/warmup/part."
for f in "$dir"/warmup/part.*; do
  curl -s -XPOST "$PGDERIVE_OPENSEARCH_URL/_bulk" -H 'Content-Type: application/x-ndjson' --data-binary @"$f" > /dev/null
done
curl -s -XDELETE "$PGDERIVE_OPENSEARCH_URL/warmup" > /dev/null
fi

q <<'SQL'
create table items (id bigint primary key, title text, price numeric, attrs jsonb, tags int[], updated_at timestamptz);
create table customers (id bigint primary key, name text);
create table orders (id bigint primary key, customer_id bigint, amount numeric);
insert into customers select g, 'customer ' || g from generate_series(1, 1000) g;
create function item_row(g bigint) returns items language sql as $$
  select g, md5(g::text) || ' ' || repeat('lorem ipsum ', 12), (g % 100000)::numeric / 100,
         jsonb_build_object('sku', 'SKU-' || g, 'color', 'blue', 'size', g % 50),
         array[g % 7, g % 11, g % 13]::int[], timestamptz '2024-02-29 12:00:00+00' + g * interval '1 second' $$;
create procedure items_mixed(first int, n int) language plpgsql as $$
declare base bigint;
begin
  for i in first..first + n - 1 loop
    base := i * 1000;
    insert into items select (item_row(g)).* from generate_series(base, base + 49) g;
    update items set price = price + 1 where id between base - 1000 and base - 1000 + 29;
    delete from items where id between base - 1000 + 30 and base - 1000 + 49;
    commit;
  end loop;
end $$;
create procedure orders_mixed(first int, n int) language plpgsql as $$
declare base bigint;
begin
  for i in first..first + n - 1 loop
    base := i * 1000;
    insert into orders select g, 1 + g % 1000, (g % 500) + 0.25 from generate_series(base, base + 49) g;
    update orders set amount = amount + 1 where id between base - 1000 and base - 1000 + 29;
    delete from orders where id between base - 1000 + 30 and base - 1000 + 49;
    commit;
  end loop;
end $$;
create schema out;
create table hot (id int primary key, v int, updated_at timestamptz);
insert into hot select g, 0, now() from generate_series(1, 100000) g;
SQL

# A port nobody listens on, for pgderive's HTTP endpoint (its default may be taken by
# another pgderive on this machine).
free_port() {
  local port
  while true; do
    port=$((15000 + RANDOM % 17000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}
http_port=$(free_port)

# config NAME VIEWS...: stores are always declared; views pick them. A NAME ending in
# _log has the change log on (spool.dir below the run's directory).
config() {
  local name=$1; shift
  local file="$dir/$name.yml"
  {
    if [[ "$name" == *_log ]]; then printf 'spool: {dir: "%s/spool-%s"}\n' "$dir" "$name"; else printf 'spool: off\n'; fi
    if [[ "$name" == *_noverify || "$name" == verified ]]; then printf 'verify: off\n'; fi
    printf 'pipeline: %s\nhttp: {listen: "127.0.0.1:%s"}\nsource:\n  dsn: %s\nstores:\n' "$name" "$http_port" "$dsn"
    printf '  cache: {type: redis, url: "%s"}\n' "$PGDERIVE_REDIS_URL"
    [ -z "$search_url" ] || printf '  search: {type: opensearch, url: "%s"}\n' "$search_url"
    printf '  warehouse: {type: postgres, dsn: "%s"}\nviews:\n' "$dsn"
    for v in "$@"; do
      case "$v" in
        redis) printf '  - {name: %s_cache, store: cache, from: items, key: "%s:{id}"}\n' "$name" "$name" ;;
        redis2) printf '  - {name: %s_cache2, store: cache, from: items, key: "%s2:{id}"}\n' "$name" "$name" ;;
        hot) printf '  - {name: %s_hot, store: cache, from: hot, key: "%s:{id}"}\n' "$name" "$name" ;;
        hotsearch) printf '  - {name: %s_hotsearch, store: search, from: hot, index: %s-hot}\n' "$name" "$name" ;;
        opensearch) printf '  - {name: %s_search, store: search, from: items, index: %s}\n' "$name" "$name" ;;
        oscatchup) printf '  - {name: %s_search, store: search, from: oscatchup, index: %s}\n' "$name" "$name" ;;
        vcache) printf '  - {name: %s_cache, store: cache, from: verified, key: "%s:{id}"}\n' "$name" "$name" ;;
        vsearch) printf '  - {name: %s_search, store: search, from: verified, index: %s}\n' "$name" "$name" ;;
        vproj) printf '  - {name: %s_proj, store: warehouse, table: out.%s_proj, key: [id], query: "select id, title, price, updated_at from public.verified"}\n' "$name" "$name" ;;
        projection) printf '  - {name: %s_proj, store: warehouse, table: out.%s_proj, key: [id], query: "select id, title, price, updated_at from public.items"}\n' "$name" "$name" ;;
        groupby) printf '  - {name: %s_totals, store: warehouse, table: out.%s_totals, key: [customer_id], query: "select o.customer_id, c.name, count(*) as n, sum(o.amount) as total from public.orders o join public.customers c on c.id = o.customer_id group by o.customer_id, c.name"}\n' "$name" "$name" ;;
      esac
    done
  } > "$file"
  echo "$file"
}

# Polling a store's checkpoint while pgderive is timed must not take the CPU pgderive
# is timed on: a psql per poll (a new connection, a backend forked) took 56 ms of CPU,
# 20 times a second, over a third of a core. So the Redis and OpenSearch checkpoints are
# read over one kept-alive connection each with bash built-ins (about 2 ms of CPU a poll,
# most of it the server's), and LSNs are compared as numbers in the shell.
# A connection the server closed (a restart, a dropped client) is opened again at the
# next poll: the request is written with SIGPIPE ignored (a write to a closed socket
# then fails instead of ending the script), and any answer not read whole closes it.
# Bodies are read as bytes (LC_ALL=C: `read -N` counts characters otherwise).
lsn_number() {  # lsn_number X/Y: `number` is the LSN as one integer
  local hi=${1%/*} lo=${1#*/}
  number=$(( (16#$hi << 32) | 16#$lo ))
}
# poll_request FD_VARIABLE PORT TEXT: the connection in FD_VARIABLE (opened to PORT if
# none) has TEXT written and the first line of its answer read into `line`; false, and
# the connection closed, when that fails.
poll_request() {
  local -n fd=$1
  line=""
  if [ -z "$fd" ]; then { exec {fd}<>"/dev/tcp/127.0.0.1/$2"; } 2>/dev/null || { fd=""; return 1; }; fi
  trap '' PIPE
  if printf '%s' "$3" >&"$fd" 2>/dev/null && IFS= read -r -t 5 line <&"$fd"; then
    trap - PIPE
    line=${line%$'\r'}
    return 0
  fi
  trap - PIPE
  poll_close fd
  return 1
}
poll_close() { local -n fd_=$1; [ -z "$fd_" ] || exec {fd_}>&-; fd_=""; }
os_fd=""
os_get() {  # os_get PATH: `reply` is the body of a GET on OpenSearch (empty on a failure)
  local LC_ALL=C line length="" chunked="" close="" size part
  reply=""
  poll_request os_fd "$PGDERIVE_OPENSEARCH_PORT" "GET $1 HTTP/1.1"$'\r\n'"Host: 127.0.0.1"$'\r\n\r\n' || return 0
  while IFS= read -r -t 5 line <&"$os_fd"; do
    line=${line%$'\r'}
    [ -z "$line" ] && break
    case "${line,,}" in
      content-length:*) length=${line#*:}; length=${length// /} ;;
      transfer-encoding:*chunked*) chunked=1 ;;
      connection:*close*) close=1 ;;
    esac
  done
  if [[ "$length" =~ ^[0-9]+$ ]]; then
    [ "$length" = 0 ] || IFS= read -r -N "$length" -t 5 reply <&"$os_fd" || close=1
  elif [ -n "$chunked" ]; then
    while IFS= read -r -t 5 size <&"$os_fd"; do
      size=${size%$'\r'}; size=${size%%;*}
      [[ "$size" =~ ^[0-9A-Fa-f]+$ ]] || { close=1; break; }
      if [ $((16#$size)) -eq 0 ]; then IFS= read -r -t 5 line <&"$os_fd"; break; fi
      IFS= read -r -N $((16#$size)) -t 5 part <&"$os_fd" || { close=1; break; }
      reply+=$part
      IFS= read -r -t 5 line <&"$os_fd"
    done
  else
    IFS= read -r -d '' -t 5 reply <&"$os_fd" || true  # the body ends with the connection
    close=1
  fi
  [ -z "$close" ] || poll_close os_fd
}
redis_fd=""
redis_get() {  # redis_get KEY: `reply` is the string value (empty when nil or on a failure)
  local LC_ALL=C line
  reply=""
  poll_request redis_fd "$PGDERIVE_REDIS_PORT" "*2"$'\r\n'"\$3"$'\r\n'"GET"$'\r\n'"\$${#1}"$'\r\n'"$1"$'\r\n' || return 0
  case "$line" in
    '$-1') ;;
    '$'[0-9]*)
      if ! IFS= read -r -N "${line#\$}" -t 5 reply <&"$redis_fd" || ! IFS= read -r -t 5 line <&"$redis_fd"; then
        reply=""; poll_close redis_fd
      fi ;;
    *) poll_close redis_fd ;;  # an error or anything unexpected: start afresh
  esac
}
# checkpoints_past NAME LSN STORES...: every store's checkpoint is past LSN.
checkpoints_past() {
  local name=$1 lsn=$2; shift 2
  local s c number want
  lsn_number "$lsn"; want=$number
  for s in "$@"; do
    case "$s" in
      redis) redis_get "pgderive:$name:checkpoint"; c=$reply ;;
      opensearch)
        os_get "/pgderive-checkpoints/_doc/$name.search"
        c=""; [[ "$reply" == *'"lsn":"'* ]] && { c=${reply#*\"lsn\":\"}; c=${c%%\"*}; } ;;
      *) c=$(q -c "select lsn from pgderive.checkpoints where pipeline = '$name' and store = 'warehouse'") ;;
    esac
    [[ "$c" =~ ^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$ ]] || return 1
    lsn_number "$c"
    [ "$number" -gt "$want" ] || return 1
  done
}

start_run() {  # start_run NAME CONFIG: until it streams (this start's own log lines)
  local log="$dir/$1.log" from
  touch "$log"; from=$(($(wc -l < "$log") + 1))
  "$binary" run -c "$2" >> "$log" 2>&1 &
  echo $! > "$dir/$1.pid"
  until tail -n "+$from" "$log" | grep -q "streaming from slot"; do
    kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null || { tail -n "+$from" "$log" >&2; exit 1; }
    sleep 0.05
  done
}
stop_run() { kill -TERM "$(cat "$dir/$1.pid")"; wait "$(cat "$dir/$1.pid")" 2>/dev/null || true; }
# start_live NAME CONFIG VIEW: started, and stopped once VIEW's first fill is done (the
# view live): a catch-up is then of a live view alone, with no fill left to resume beside it.
start_live() {
  local log="$dir/$1.log" from
  touch "$log"; from=$(($(wc -l < "$log") + 1))
  start_run "$1" "$2"
  until tail -n "+$from" "$log" | grep -q "\"msg\":\"backfill done\".*\"views\":\"$3\""; do
    kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null || { tail -n "+$from" "$log" >&2; exit 1; }
    sleep 0.05
  done
  stop_run "$1"
}

results=()
offset=1
measure() {  # measure NAME TABLE STORES...
  local name=$1 table=$2; shift 2
  want "${name//_/-}" || return 0
  local stores=("$@") views=() file
  for s in "${stores[@]}"; do views+=("$s"); done
  file=$(config "$name" "${views[@]}")
  start_run "$name" "$file"; stop_run "$name"
  q -c "select pg_create_logical_replication_slot('ceil_$name', 'pgoutput')" > /dev/null
  if [ "$table" = items ]; then q -c "call items_mixed($offset, $txns)"; else q -c "call orders_mixed($offset, $txns)"; fi
  offset=$((offset + txns + 2))
  local end
  end=$(q -c "select pg_current_wal_insert_lsn()")
  q -c "select pg_logical_emit_message(true, 'pgderive-bench', 'end')" > /dev/null
  local t0 t1 ceiling ours
  t0=$(now)
  "$bindir/pg_recvlogical" -d "$dsn" --slot "ceil_$name" --start --endpos "$end" --no-loop -f /dev/null \
    -o proto_version=2 -o streaming=on -o "publication_names=pgderive_$name"
  t1=$(now); ceiling=$(echo "$t1 - $t0" | bc -l)
  q -c "select pg_drop_replication_slot('ceil_$name')" > /dev/null
  t0=$(now)
  "$binary" run -c "$file" >> "$dir/$name.log" 2>&1 &
  local pid=$!
  echo "$pid" > "$dir/$name.pid"
  until checkpoints_past "$name" "$end" "${stores[@]}"; do
    kill -0 "$pid" 2>/dev/null || { tail -3 "$dir/$name.log" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(now); ours=$(echo "$t1 - $t0" | bc -l)
  local rss
  rss=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$(cat "$dir/$name.pid")/status")
  # With the log: what it wrote (/proc's write_bytes of the run: the segments, fsynced).
  local logged=""
  if [[ "$name" == *_log ]]; then
    logged=$(awk '/^write_bytes/ {print $2}' "/proc/$(cat "$dir/$name.pid")/io")
  fi
  stop_run "$name"
  local rows=$((txns * 100))
  if [ -n "$logged" ]; then
    log_lines+=("$(printf '| %s | %d | %.1f MB | %.1f MB/s | %.0f MB |' "$name" "$rows" \
      "$(echo "$logged / 1048576" | bc -l)" "$(echo "$logged / 1048576 / $ours" | bc -l)" \
      "$(echo "$logged / 1048576 * 1000000 / $rows" | bc -l)")")
  fi
  results+=("$(printf '| %s | %d | %.0f | %.2f s | %.0f | %.2f s | **%.2f×** | %s MB |' "$name (${stores[*]})" "$rows" \
    "$(echo "$rows / $ceiling" | bc -l)" "$ceiling" "$(echo "$rows / $ours" | bc -l)" "$ours" \
    "$(echo "$ceiling / $ours" | bc -l)" "$rss")")
  echo "${results[-1]}" >&2
}

log_lines=()
measure redis items redis
measure redis_noverify items redis
measure redis_log items redis
measure opensearch items opensearch
measure projection items projection
measure groupby orders groupby
measure all items redis opensearch projection
measure all_log items redis opensearch projection

# cpu_ticks PID: the process's user + system CPU so far, in clock ticks (proc(5) stat).
cpu_ticks() {
  if [[ "$1" =~ ^[0-9]+$ ]] && [ -r "/proc/$1/stat" ]; then awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
  else echo 0; fi
}
ticks_per_s=$(getconf CLK_TCK)
cpu_s() { echo "$1 / $ticks_per_s" | bc -l; }  # cpu_s TICKS: CPU-seconds
cpu_seconds() { printf '%.2f' "$(cpu_s "$(cpu_ticks "$1")")"; }  # utime + stime so far, in seconds
catchup_line="not measured"
if want catchup-redis; then
  name=catchup
  q -c "create table catchup (like items including all)"
  q -c "insert into catchup select (item_row(g)).* from generate_series(1, $catchup_txns) g"
  file="$dir/$name.yml"
  printf 'pipeline: %s\nhttp: {listen: "127.0.0.1:%s"}\nsource:\n  dsn: %s\nstores:\n  cache: {type: redis, url: "%s"}\nviews:\n  - {name: catchup_cache, store: cache, from: catchup, key: "catchup:{id}"}\n' \
    "$name" "$http_port" "$dsn" "$PGDERIVE_REDIS_URL" > "$file"
  start_live "$name" "$file" catchup_cache
  for v in v1 v2; do
    q -c "select pg_copy_logical_replication_slot('pgderive_$name', 'ceil_${name}_$v')" > /dev/null
  done
  q -c "set synchronous_commit = off" -c "insert into catchup select (item_row(g)).* from generate_series(1000001, 1000000 + $catchup_rows) g"
  q -c "create procedure catchup_updates(n int) language plpgsql as \$\$
begin
  for i in 1..n loop
    update catchup set price = price + 1, updated_at = updated_at + interval '1 second' where id = 1 + (i * 7919) % $catchup_txns;
    commit;
  end loop;
end \$\$"
  q -c "set synchronous_commit = off" -c "call catchup_updates($catchup_txns)"
  end=$(q -c "select pg_current_wal_insert_lsn()")
  q -c "select pg_logical_emit_message(true, 'pgderive-bench', 'end')" > /dev/null
  declare -A ceil
  for v in v1 v2; do
    opts=(-o proto_version=1)
    [ "$v" = v2 ] && opts=(-o proto_version=2 -o streaming=on)
    t0=$(now)
    "$bindir/pg_recvlogical" -d "$dsn" --slot "ceil_${name}_$v" --start --endpos "$end" --no-loop -f /dev/null \
      "${opts[@]}" -o "publication_names=pgderive_$name"
    t1=$(now); ceil[$v]=$(echo "$t1 - $t0" | bc -l)
    q -c "select pg_drop_replication_slot('ceil_${name}_$v')" > /dev/null
  done
  ceiling=$(echo "if (${ceil[v1]} < ${ceil[v2]}) ${ceil[v1]} else ${ceil[v2]}" | bc -l)
  t0=$(now)
  "$binary" run -c "$file" >> "$dir/$name.log" 2>&1 &
  pid=$!; echo "$pid" > "$dir/$name.pid"
  until checkpoints_past "$name" "$end" redis; do
    kill -0 "$pid" 2>/dev/null || { tail -3 "$dir/$name.log" >&2; exit 1; }
    sleep 0.02
  done
  t1=$(now); ours=$(echo "$t1 - $t0" | bc -l)
  rss=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$pid/status")
  cpu=$(cpu_seconds "$pid")
  stop_run "$name"
  # What the view holds: one key per row, the updated rows' last prices.
  keys=$(redis-cli -p "$PGDERIVE_REDIS_PORT" --scan --pattern 'catchup:*' | wc -l)
  want_keys=$(q -c "select count(*) from catchup")
  [ "$keys" = "$want_keys" ] || { echo "catchup-redis: $keys keys in Redis, $want_keys rows in the table" >&2; exit 1; }
  for id in 1 7919 $catchup_txns 1000001 $((1000000 + catchup_rows)); do
    got=$(redis-cli -p "$PGDERIVE_REDIS_PORT" get "catchup:$id" | sed -n 's/.*"price":"\([^"]*\)".*/\1/p')
    exp=$(q -c "select price from catchup where id = $id")
    [ "$got" = "$exp" ] || { echo "catchup-redis: key catchup:$id has price '$got', the table $exp" >&2; exit 1; }
  done
  rows=$((catchup_rows + catchup_txns))
  catchup_line=$(printf '| catch-up into Redis (1 × %d-row insert + %d single-row updates) | %d | %.0f | %.2f s (v1 %.2f, v2 %.2f) | %.0f | %.2f s (CPU %s s) | **%.2f×** | %s MB |' \
    "$catchup_rows" "$catchup_txns" "$rows" "$(echo "$rows / $ceiling" | bc -l)" "$ceiling" "${ceil[v1]}" "${ceil[v2]}" \
    "$(echo "$rows / $ours" | bc -l)" "$ours" "$cpu" "$(echo "$ceiling / $ours" | bc -l)" "$rss")
  echo "$catchup_line" >&2
fi

# Catch-up into OpenSearch (issue 12): while pgderive is stopped, a backlog of one
# 100,000-row insert transaction; then, stopped again, one of 100,000 single-row update
# transactions. Each phase is timed from `run` until the view's checkpoint passes the
# backlog's end. Ceiling: the same final documents (row_to_json of the rows after the
# phase, the view's mapping) sent by a plain loader as versioned `_bulk` (external_gte,
# 5,000 documents a request, one request at a time) into an index of its own, right
# after pgderive's phase: phase 1 into an empty index, phase 2 over those documents.
# Both indexes as a view with readers: each is searched right before its load. An index
# nobody searched for 30 s is "search idle" and skips its scheduled refreshes, so an
# untouched ceiling index would be timed without the refreshes (a segment written each
# second) that the view's index, created moments earlier, makes. The refreshes each
# index made during its load are reported.
# The node's JIT compiles its indexing path for these documents on their first use: on a
# node warmed only by the scratch index above, the first 100,000 of them took 3.6x as long
# as the same load right after (23.4 s, then 6.5 s), so whichever load runs first would be
# timed cold. os_warm MAPPING: an index of MAPPING (the view's) gets versioned documents of
# both shapes (pgderive's: numeric as text, timestamps in UTC; row_to_json's), 100,000 of
# each, and is deleted; then pgderive's load and the loader's are both timed warm.
os_warm() {
  local f
  rm -rf "$dir/oswarm"; mkdir -p "$dir/oswarm"
  q -c "select '{\"index\":{\"_index\":\"oswarm\",\"_id\":\"' || id || '\",\"version\":1,\"version_type\":\"external_gte\"}}' || chr(10) || json_build_object('id', id, 'title', title, 'price', price::text, 'attrs', attrs, 'tags', tags, 'updated_at', to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))::text from (select (item_row(g)).* from generate_series(1, 100000) g) c" \
    | split -l 10000 - "$dir/oswarm/a."
  q -c "select '{\"index\":{\"_index\":\"oswarm\",\"_id\":\"' || id || '\",\"version\":2,\"version_type\":\"external_gte\"}}' || chr(10) || row_to_json(c)::text from (select (item_row(g)).* from generate_series(1, 100000) g) c" \
    | split -l 10000 - "$dir/oswarm/b."
  curl -s -XPUT "$PGDERIVE_OPENSEARCH_URL/oswarm" -H 'Content-Type: application/json' -d "$1" \
    | grep -q '"acknowledged":true' || { echo "index oswarm not created with the view's mapping" >&2; exit 1; }
  for f in "$dir"/oswarm/a.* "$dir"/oswarm/b.*; do
    curl -s -XPOST "$PGDERIVE_OPENSEARCH_URL/_bulk" -H 'Content-Type: application/x-ndjson' --data-binary @"$f" > /dev/null
  done
  curl -s -XDELETE "$PGDERIVE_OPENSEARCH_URL/oswarm" > /dev/null
  rm -rf "$dir/oswarm"
}
oscatchup_rows=100000 oscatchup_lines=()
touch_index() { curl -s "$PGDERIVE_OPENSEARCH_URL/$1/_search?size=0" > /dev/null; }
refreshes() {  # refreshes INDEX: scheduled and explicit refreshes so far
  curl -s "$PGDERIVE_OPENSEARCH_URL/$1/_stats/refresh" | sed -n 's/.*"primaries":{"refresh":{"total":[0-9]*,"total_time_in_millis":[0-9]*,"external_total":\([0-9]*\).*/\1/p'
}
# node_quiet: waits (up to 60 s) until the OpenSearch node is idle - at most 4% of a
# core over half a second - so that a timed load does not pay for the merges and flushes
# the load before it left running. Called before an index is searched for its load (an
# index nobody searched for 30 s skips its scheduled refreshes).
node_quiet() {
  local pid a b i
  pid=$(cat "$dir/opensearch.pid")
  for i in $(seq 120); do
    a=$(cpu_ticks "$pid"); sleep 0.5; b=$(cpu_ticks "$pid")
    [ $((b - a)) -le $((ticks_per_s / 40)) ] && return 0
  done
  echo "the OpenSearch node is still busy after 60 s; timing the next load anyway" >&2
}
oscatchup_ceiling() {  # oscatchup_ceiling VERSION: seconds to load the catchup rows' documents
  rm -rf "$dir/cbulk"; mkdir -p "$dir/cbulk"
  q -c "select '{\"index\":{\"_index\":\"oscatchup_ceiling\",\"_id\":\"' || id || '\",\"version\":$1,\"version_type\":\"external_gte\"}}' || chr(10) || row_to_json(c)::text from oscatchup c" \
    | split -l 10000 - "$dir/cbulk/part."
  local t0 t1 f r0
  node_quiet
  touch_index oscatchup_ceiling
  r0=$(refreshes oscatchup_ceiling)
  local node0; node0=$(cpu_ticks "$(cat "$dir/opensearch.pid")")
  t0=$(now)
  for f in "$dir"/cbulk/part.*; do
    curl -s -XPOST "$PGDERIVE_OPENSEARCH_URL/_bulk" -H 'Content-Type: application/x-ndjson' --data-binary @"$f" \
      | grep -q '^{"took":[0-9]*,"errors":false' || { echo "ceiling _bulk failed" >&2; exit 1; }
  done
  t1=$(now); echo "$t1 - $t0" | bc -l
  echo $(($(refreshes oscatchup_ceiling) - r0)) > "$dir/cbulk.refreshes"
  cpu_s $(($(cpu_ticks "$(cat "$dir/opensearch.pid")") - node0)) > "$dir/cbulk.node_cpu"
}
oscatchup_phase() {  # oscatchup_phase LABEL SQL VERSION
  local label=$1 sql=$2 version=$3 end t0 t1 ours ceiling rss r0 ours_refreshes walsender
  # The walsender alone on the same backlog: pg_recvlogical (protocol 2, streaming) on a
  # copy of pgderive's slot, to the same end, before pgderive's run. No row of a
  # transaction may be written before the walsender has decoded its commit; the loader
  # below does not pay that.
  q -c "select pg_copy_logical_replication_slot('pgderive_oscatchup', 'ceil_oscatchup')" > /dev/null
  q -c "$sql"
  end=$(q -c "select pg_current_wal_insert_lsn()")
  q -c "select pg_logical_emit_message(true, 'pgderive-bench', 'end')" > /dev/null
  t0=$(now)
  "$bindir/pg_recvlogical" -d "$dsn" --slot ceil_oscatchup --start --endpos "$end" --no-loop -f /dev/null \
    -o proto_version=2 -o streaming=on -o publication_names=pgderive_oscatchup
  t1=$(now); walsender=$(echo "$t1 - $t0" | bc -l)
  q -c "select pg_drop_replication_slot('ceil_oscatchup')" > /dev/null
  node_quiet
  touch_index oscatchup
  r0=$(refreshes oscatchup)
  # CPU: the node's over the catch-up; pgderive's and its walsender's whole lives (both
  # start with this run).
  local node0 node_cpu ours_cpu wal_cpu wal_pid
  node0=$(cpu_ticks "$(cat "$dir/opensearch.pid")")
  t0=$(now)
  "$binary" run -c "$file" >> "$dir/oscatchup.log" 2>&1 &
  local pid=$!
  echo "$pid" > "$dir/oscatchup.pid"
  until checkpoints_past oscatchup "$end" opensearch; do
    kill -0 "$pid" 2>/dev/null || { tail -3 "$dir/oscatchup.log" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(now); ours=$(echo "$t1 - $t0" | bc -l)
  node_cpu=$(cpu_s $(($(cpu_ticks "$(cat "$dir/opensearch.pid")") - node0)))
  ours_cpu=$(cpu_s "$(cpu_ticks "$(cat "$dir/oscatchup.pid")")")
  wal_pid=$(q -c "select active_pid from pg_replication_slots where slot_name = 'pgderive_oscatchup'")
  # No walsender on the slot at this moment (never while pgderive streams): not measured.
  if [ -n "$wal_pid" ]; then wal_cpu=$(cpu_seconds "$wal_pid"); else wal_cpu="–"; fi
  ours_refreshes=$(($(refreshes oscatchup) - r0))
  rss=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$(cat "$dir/oscatchup.pid")/status")
  stop_run oscatchup
  ceiling=$(oscatchup_ceiling "$version")
  oscatchup_lines+=("$(printf '| %s | %d | %.0f | %.2f s | %.2f s | %.0f | %.2f s | **%.2f×** | %.2f s | %.2f / %s / %.2f s | %s / %s | %s MB |' "$label" "$oscatchup_rows" \
    "$(echo "$oscatchup_rows / $ceiling" | bc -l)" "$ceiling" "$walsender" "$(echo "$oscatchup_rows / $ours" | bc -l)" "$ours" \
    "$(echo "$ceiling / $ours" | bc -l)" "$(cat "$dir/cbulk.node_cpu")" "$node_cpu" "$wal_cpu" "$ours_cpu" \
    "$(cat "$dir/cbulk.refreshes")" "$ours_refreshes" "$rss")")
  echo "${oscatchup_lines[-1]}" >&2
}
if want catchup-opensearch; then
  q <<'SQL'
create table oscatchup (like items including all);
create procedure oscatchup_updates(n int) language plpgsql as $$
begin
  for i in 1..n loop
    update oscatchup set price = price + 1, updated_at = updated_at + interval '1 day' where id = i;
    commit;
  end loop;
end $$;
SQL
  file=$(config oscatchup oscatchup)
  start_live oscatchup "$file" oscatchup_search
  # The alias's index (oscatchup-<n>) answers: its mapping is the value of its one key.
  mapping=$(curl -s "$PGDERIVE_OPENSEARCH_URL/oscatchup/_mapping" | sed 's/^{"[^"]*":\(.*\)}$/\1/')
  curl -s -XPUT "$PGDERIVE_OPENSEARCH_URL/oscatchup_ceiling" -H 'Content-Type: application/json' -d "$mapping" \
    | grep -q '"acknowledged":true' || { echo "index oscatchup_ceiling not created with the view's mapping" >&2; exit 1; }
  os_warm "$mapping"
  oscatchup_phase "insert: one transaction of $oscatchup_rows rows" \
    "insert into oscatchup select (item_row(g)).* from generate_series(1, $oscatchup_rows) g" 1000
  oscatchup_phase "update: $oscatchup_rows single-row transactions" "call oscatchup_updates($oscatchup_rows)" 2000
fi

# Backfill while streaming (backfill: Redis; backfill-opensearch: OpenSearch): the items
# table is grown to --backfill-rows rows; a deployment with one small view (`hot`) is
# started once and stopped, then started again with a view of items added, while a writer
# runs the workload's transactions on items; timed from the log's "backfill started" to
# its last chunk applied ("backfill done", filled_seconds). Against `COPY (select * from
# items) TO STDOUT` of the same table in the same run, and for OpenSearch against a plain
# loader sending the same documents as versioned `_bulk` (external_gte, 5,000 documents a
# request) into an index of the view's mapping, right after pgderive's fill. pgderive's CPU
# seconds (utime + stime of the process, its start and the hot view included) are given
# per 1,000,000 rows filled; the 1-minute load average is read when the fill ends.
backfill_lines=()
if want backfill || want backfill-opensearch; then
q -c "set synchronous_commit = off" -c "insert into items select (item_row(g)).* from generate_series(100000000, 100000000 + $backfill_rows - 1 - (select count(*) from items)) g"
q -c "vacuum analyze items"
rows=$(q -c "select count(*) from items")
# COPY's own server CPU: its backend's utime + stime, read before the session ends.
t0=$(now)
psql "$dsn" -X -q -At -v ON_ERROR_STOP=1 > /dev/null <<SQL
select pg_backend_pid() as backend \gset
\\setenv BACKEND :backend
copy (select * from items) to stdout;
\\! awk -v hz="\$(getconf CLK_TCK)" '{printf "%.2f", (\$14 + \$15) / hz}' /proc/\$BACKEND/stat > "$dir/copy_cpu"
SQL
t1=$(now)
copy_out=$(echo "$rows / ($t1 - $t0)" | bc -l)
copy_cpu=$(cat "$dir/copy_cpu")
bf_fill() {  # bf_fill NAME FIRSTVIEW VIEWKIND VIEWNAME: sets bf_rows bf_filled bf_seconds bf_rss bf_cpu bf_load
  # The first start has a view in the store already (a store new to the pipeline is
  # filled by the initial snapshot).
  local name=$1 first=$2 kind=$3 view=$4 file pid writer line
  file=$(config "$name" "$first")
  start_run "$name" "$file"; stop_run "$name"
  file=$(config "$name" "$first" "$kind")
  # The writer: --backfill-writer-txns transactions of the workload (default --txns); 0
  # times the fill alone.
  local writer_txns=${backfill_writer_txns:-$txns}
  bf_writer=$writer_txns
  q -c "call items_mixed($offset, $writer_txns)" &
  writer=$!
  redis_pid=$(cat "$dir/redis/redis.pid" 2>/dev/null || cat "$dir/redis.pid")
  redis_cpu0=$(cpu_seconds "$redis_pid")
  start_run "$name" "$file"
  pid=$(cat "$dir/$name.pid")
  until grep -q "\"msg\":\"backfill done\".*\"views\":\"$view\"" "$dir/$name.log"; do
    kill -0 "$pid" 2>/dev/null || { tail -3 "$dir/$name.log" >&2; exit 1; }
    sleep 0.05
  done
  bf_load=$(cut -d' ' -f1 /proc/loadavg)
  bf_cpu=$(cpu_seconds "$pid")
  # The server's CPU for the fill: the backfill's own backends (sizing and reading the
  # chunks, the watermarks), alive until pgderive stops; Redis's during the whole start.
  bf_pgcpu=0
  for p in $(q -c "select pid from pg_stat_activity where application_name = 'pgderive-backfill'"); do
    bf_pgcpu=$(echo "$bf_pgcpu + $(cpu_seconds "$p" 2>/dev/null || echo 0)" | bc -l)
  done
  bf_rediscpu=$(echo "$(cpu_seconds "$redis_pid") - $redis_cpu0" | bc -l)
  bf_rss=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$pid/status")
  wait "$writer"; offset=$((offset + writer_txns + 2))
  stop_run "$name"
  line=$(grep "\"msg\":\"backfill done\".*\"views\":\"$view\"" "$dir/$name.log" | tail -1)
  bf_rows=$(echo "$line" | sed -n 's/.*"rows":"\([0-9]*\)".*/\1/p')
  bf_filled=$(echo "$line" | sed -n 's/.*"filled_seconds":"\([0-9.]*\)".*/\1/p')
  bf_seconds=$(echo "$line" | sed -n 's/.*"seconds":"\([0-9.]*\)".*/\1/p')
  # Where the job's time went: reading chunks, waiting for the store to apply the oldest.
  bf_split=$(printf '%.1f s / %.1f s' "$(echo "$line" | sed -n 's/.*"read_seconds":"\([0-9.]*\)".*/\1/p')" \
    "$(echo "$line" | sed -n 's/.*"apply_wait_seconds":"\([0-9.]*\)".*/\1/p')")
}
if want backfill; then
  bf_fill bfredis hot redis2 bfredis_cache2
  backfill_lines+=("$(printf '| Redis view, writer %d txns | %d | %.0f | %.2f s | %.0f | **%.2f×** | – | %.2f s | %s | %.2f s | %.2f s / %.2f s / %.2f s | %.1f | %s MB |' \
    "$bf_writer" "$bf_rows" "$copy_out" "$(echo "$bf_rows / $copy_out" | bc -l)" "$(echo "$bf_rows / $bf_filled" | bc -l)" \
    "$(echo "$bf_rows / $bf_filled / $copy_out" | bc -l)" "$bf_seconds" "$bf_split" "$(echo "$bf_cpu * 1000000 / $bf_rows" | bc -l)" \
    "$(echo "$copy_cpu * 1000000 / $rows" | bc -l)" "$(echo "$bf_pgcpu * 1000000 / $bf_rows" | bc -l)" \
    "$(echo "$bf_rediscpu * 1000000 / $bf_rows" | bc -l)" "$bf_load" "$bf_rss")")
  echo "${backfill_lines[-1]}" >&2
fi
if want backfill-opensearch && [ -n "$search_url" ]; then
  # The view's mapping, from a view of an empty table of the same shape, to warm the node
  # with (os_warm) before the fill and the loader are timed.
  q -c "create table bfwarm (like items including all)"
  printf 'spool: off\npipeline: bfwarm\nhttp: {listen: "127.0.0.1:%s"}\nsource:\n  dsn: %s\nstores:\n  search: {type: opensearch, url: "%s"}\nviews:\n  - {name: bfwarm_search, store: search, from: bfwarm, index: bfwarm}\n' \
    "$http_port" "$dsn" "$search_url" > "$dir/bfwarm.yml"
  start_live bfwarm "$dir/bfwarm.yml" bfwarm_search
  os_warm "$(curl -s "$PGDERIVE_OPENSEARCH_URL/bfwarm/_mapping" | sed 's/^{"[^"]*":\(.*\)}$/\1/')"
  # Its walsender may outlive the stopped run for a moment; teardown refuses while it does.
  until [ "$(q -c "select count(*) from pg_replication_slots where slot_name = 'pgderive_bfwarm' and active")" = 0 ]; do
    sleep 0.05
  done
  "$binary" teardown --views -c "$dir/bfwarm.yml" >> "$dir/bfwarm.log" 2>&1 \
    || { tail -3 "$dir/bfwarm.log" >&2; exit 1; }
  bf_fill bfsearch hotsearch opensearch bfsearch_search
  # The ceiling: the same table's documents, versioned, into an index of the view's mapping.
  rm -rf "$dir/bfbulk"; mkdir -p "$dir/bfbulk"
  q -c "select '{\"index\":{\"_index\":\"bfsearch_ceiling\",\"_id\":\"' || id || '\",\"version\":1,\"version_type\":\"external_gte\"}}' || chr(10) || row_to_json(i)::text from items i" \
    | split -l 10000 - "$dir/bfbulk/part."
  mapping=$(curl -s "$PGDERIVE_OPENSEARCH_URL/bfsearch/_mapping" | sed 's/^{"[^"]*":\(.*\)}$/\1/')
  curl -s -XPUT "$PGDERIVE_OPENSEARCH_URL/bfsearch_ceiling" -H 'Content-Type: application/json' -d "$mapping" \
    | grep -q '"acknowledged":true' || { echo "index bfsearch_ceiling not created with the view's mapping" >&2; exit 1; }
  touch_index bfsearch_ceiling
  t0=$(now)
  for f in "$dir"/bfbulk/part.*; do
    curl -s -XPOST "$PGDERIVE_OPENSEARCH_URL/_bulk" -H 'Content-Type: application/x-ndjson' --data-binary @"$f" \
      | grep -q '^{"took":[0-9]*,"errors":false' || { echo "ceiling _bulk failed" >&2; exit 1; }
  done
  t1=$(now); bulk=$(echo "$rows / ($t1 - $t0)" | bc -l)
  curl -s -XDELETE "$PGDERIVE_OPENSEARCH_URL/bfsearch_ceiling" > /dev/null
  rm -rf "$dir/bfbulk"
  backfill_lines+=("$(printf '| OpenSearch view, writer %d txns | %d | %.0f | %.2f s | %.0f | **%.2f×** | **%.2f×** (`_bulk` %.0f docs/s) | %.2f s | %s | %.2f s | %.2f s / %.2f s / – | %.1f | %s MB |' \
    "$bf_writer" "$bf_rows" "$copy_out" "$(echo "$bf_rows / $copy_out" | bc -l)" "$(echo "$bf_rows / $bf_filled" | bc -l)" \
    "$(echo "$bf_rows / $bf_filled / $copy_out" | bc -l)" "$(echo "$bf_rows / $bf_filled / $bulk" | bc -l)" "$bulk" \
    "$bf_seconds" "$bf_split" "$(echo "$bf_cpu * 1000000 / $bf_rows" | bc -l)" \
    "$(echo "$copy_cpu * 1000000 / $rows" | bc -l)" "$(echo "$bf_pgcpu * 1000000 / $bf_rows" | bc -l)" "$bf_load" "$bf_rss")")
  echo "${backfill_lines[-1]}" >&2
fi
fi

# Definition change to serving (version-opensearch): an OpenSearch view of a table of
# --version-rows rows is live; its file then gets a column list (a new definition) and
# `pgderive reload` is sent while a writer runs the workload's transactions on the
# table. Timed from the reload to the log line saying the alias is on the new version
# (built next to the serving one, promote: auto).
version_line=""
if want version-opensearch && [ -n "$search_url" ]; then
  q -c "create table versioned (like items including all)"
  q -c "set synchronous_commit = off" -c "insert into versioned select (item_row(g)).* from generate_series(1, $version_rows) g"
  q -c "vacuum analyze versioned"
  file=$(config veros)
  printf '  - {name: veros_search, store: search, from: versioned, index: veros}\n' >> "$file"
  start_run veros "$file"
  until grep -q "alias veros now on index veros-1" "$dir/veros.log" && curl -s "$PGDERIVE_OPENSEARCH_URL/pgderive-checkpoints/_doc/veros.search%2Fview%2Fveros_search" | grep -q '\\"state\\":\\"live\\"'; do
    kill -0 "$(cat "$dir/veros.pid")" 2>/dev/null || { tail -3 "$dir/veros.log" >&2; exit 1; }
    sleep 0.2
  done
  sed -i 's/index: veros}/index: veros, columns: [id, title, price, updated_at]}/' "$file"
  q -c "create procedure versioned_mixed(n int) language plpgsql as \$\$ begin for i in 1..n loop update versioned set price = price + 1 where id = 1 + (i * 7919) % $version_rows; commit; end loop; end \$\$"
  q -c "call versioned_mixed($txns)" &
  writer=$!
  t0=$(now)
  "$binary" reload -c "$file" > /dev/null
  until grep -q "alias veros now on index veros-2" "$dir/veros.log"; do
    kill -0 "$(cat "$dir/veros.pid")" 2>/dev/null || { tail -3 "$dir/veros.log" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(now)
  wait "$writer"
  vrss=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$(cat "$dir/veros.pid")/status")
  stop_run veros
  version_line=$(printf '| OpenSearch view, a column list given (new mapping) | %d | %.1f s | %.0f | %s MB |' \
    "$version_rows" "$(echo "$t1 - $t0" | bc -l)" "$(echo "$version_rows / ($t1 - $t0)" | bc -l)" "$vrss")
  echo "$version_line" >&2
fi

# Verification at full speed (see the top).
verify_lines=()
if want verify; then
  q -c "create table verified (like items including all)"
  q -c "set synchronous_commit = off" -c "insert into verified select (item_row(g)).* from generate_series(1, $verify_rows) g"
  q -c "vacuum analyze verified"
  t0=$(now); q -c "copy (select * from verified) to stdout" > /dev/null; t1=$(now)
  vcopy=$(echo "$verify_rows / ($t1 - $t0)" | bc -l)
  vviews=(vcache vproj); [ -z "$search_url" ] || vviews+=(vsearch)
  file=$(config verified "${vviews[@]}")
  start_run verified "$file"
  until [ "$(grep -c '"msg":"backfill done"' "$dir/verified.log")" -ge "${#vviews[@]}" ]; do
    kill -0 "$(cat "$dir/verified.pid")" 2>/dev/null || { tail -3 "$dir/verified.log" >&2; exit 1; }
    sleep 0.2
  done
  verify_view() {  # verify_view VIEW LABEL [ARGS...]: one line of the table
    local view=$1 label=$2 out line rows secs mem how; shift 2
    out=$("$binary" verify -c "$file" --view "$view" --wait 600 "$@" 2>&1) || true
    line=$(echo "$out" | grep "^view $view (store" | tail -1)
    rows=$(echo "$line" | sed -n 's/.*): \([0-9]*\) rows, .*/\1/p')
    secs=$(echo "$line" | sed -n 's/.*(compared in \([0-9.]*\) s, .*/\1/p')
    how=$(echo "$line" | sed -n 's/.* rows\/s; \(.*\))$/\1/p')
    mem=$(echo "$out" | sed -n 's/.*peak memory \([0-9]*\) MiB.*/\1/p' | tail -1)
    [ -n "$rows" ] && [ -n "$secs" ] || { echo "verify of $view: $out" >&2; exit 1; }
    verify_lines+=("$(printf '| %s | %d | %.1f s | %.0f | %.0f | **%.2f×** | %s | %s MiB |' "$label" "$rows" "$secs" \
      "$(echo "$rows / $secs" | bc -l)" "$vcopy" "$(echo "$rows / $secs / $vcopy" | bc -l)" "$how" "$mem")")
    echo "${verify_lines[-1]}" >&2
  }
  verify_view verified_cache "Redis view (row path)"
  [ -z "$search_url" ] || verify_view verified_search "OpenSearch view (row path)"
  verify_view verified_proj "postgres view, digests equal (digest path)"
  # Every row of the view's table changed behind pgderive's back (its verifier is off).
  q -c "update out.verified_proj set price = price + 1"
  verify_view verified_proj "postgres view, every row differing (row path, --reads 1)" --reads 1
  stop_run verified
fi

# Store ceilings on the same final rows.
rows=$(q -c "select count(*) from items")
# psql -At prints each value raw and ends it with \n: the value ends in \r.
q -c "select format(E'*3\r\n\$3\r\nSET\r\n\$%s\r\n%s\r\n\$%s\r\n%s\r', octet_length(k), k, octet_length(v), v) from (select 'ceil:' || id as k, row_to_json(i)::text as v from items i) x" \
  > "$dir/redis.resp"
t0=$(now); redis-cli -p "$PGDERIVE_REDIS_PORT" --pipe < "$dir/redis.resp" > /dev/null; t1=$(now)
redis_ceiling=$(echo "$rows / ($t1 - $t0)" | bc -l)
search_ceiling=0 copy_ceiling=0
if want opensearch; then
mkdir -p "$dir/bulk"
q -c "select '{\"index\":{\"_index\":\"ceiling\",\"_id\":\"' || id || '\"}}' || chr(10) || row_to_json(i)::text from items i" \
  | split -l 10000 - "$dir/bulk/part."
# The same mapping as the view's index (pgderive derives it from the column types).
mapping=$(curl -s "$PGDERIVE_OPENSEARCH_URL/opensearch/_mapping" | sed 's/^{"[^"]*":\(.*\)}$/\1/')
curl -s -XPUT "$PGDERIVE_OPENSEARCH_URL/ceiling" -H 'Content-Type: application/json' -d "$mapping" \
  | grep -q '"acknowledged":true' || { echo "index ceiling not created with the view's mapping" >&2; exit 1; }
t0=$(now)
for f in "$dir"/bulk/part.*; do
  curl -s -XPOST "$PGDERIVE_OPENSEARCH_URL/_bulk" -H 'Content-Type: application/x-ndjson' --data-binary @"$f" > /dev/null
done
t1=$(now); search_ceiling=$(echo "$rows / ($t1 - $t0)" | bc -l)
fi
if want projection; then
# The projection's shape from its query: its table may still be filling (the catch-up's
# end is the checkpoint's, not the view's first fill's).
q -c "create schema if not exists out; create table out.copy_ceiling as select id, title, price, updated_at from items with no data"
q -c "copy (select id, title, price, updated_at from items) to stdout" > "$dir/proj.copy"
t0=$(now); q -c "\\copy out.copy_ceiling from '$dir/proj.copy'"; t1=$(now)
copy_ceiling=$(echo "$rows / ($t1 - $t0)" | bc -l)
fi

# Latency at a steady rate, streaming into Redis.
latency="not measured" achieved=0 latency_log="not measured" achieved_log=0
latency_run() {  # latency_run NAME: pgbench at the rate, the run's commit-to-visible line
file=$(config "$1" hot)
start_run "$1" "$file"
cat > "$dir/update.sql" <<SQL
\\set id random(1, 100000)
update hot set v = v + 1, updated_at = clock_timestamp() where id = :id;
SQL
# 16 clients: with synchronous commit each waits for its WAL flush, and group commit
# needs that many to reach 5,000 tx/s on 2 cores.
pgbench_out=$("$bindir/pgbench" -n -f "$dir/update.sql" -R "$rate" -T "$seconds" -c 16 -j 2 "$dsn" 2>&1)
sleep 3  # Redis checkpoints count as durable 2 s after EXEC; let the last ones settle
stop_run "$1"
run_latency=$(sed -n 's/.*store cache commit-to-visible latency: \([^"]*\)".*/\1/p' "$dir/$1.log" | tail -1)
run_achieved=$(echo "$pgbench_out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
}
if want latency; then
  latency_run latency
  latency=$run_latency achieved=$run_achieved
fi
if want latency-log; then
  latency_run latency_log
  latency_log=$run_latency achieved_log=$run_achieved
fi

echo
opensearch_version=""
[ -z "$search_url" ] || opensearch_version=", OpenSearch $(curl -s "$search_url" | sed -n 's/.*"number" *: *"\([^"]*\)".*/\1/p')"
echo "PostgreSQL $(q -c 'show server_version'), Redis $(redis-cli -p "$PGDERIVE_REDIS_PORT" info server | sed -n 's/^redis_version:\(.*\)\r$/\1/p')$opensearch_version, $(nproc) cores, $(date -u +%Y-%m-%d)"
# Each table only when something of it was measured (--only).
if [ ${#results[@]} -gt 0 ] || [ "$catchup_line" != "not measured" ]; then
  echo
  echo "| configuration | changes | walsender ceiling changes/s | ceiling time | pgderive changes/s | pgderive time | ratio | peak RSS |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  for r in "${results[@]}"; do echo "$r"; done
  [ "$catchup_line" = "not measured" ] || echo "$catchup_line"
fi
if [ ${#results[@]} -gt 0 ]; then
  echo
  printf '| store ceiling (same %d rows) | rows/s |\n| --- | --- |\n' "$rows"
  # Each ceiling only where it was measured.
  [ "$redis_ceiling" = 0 ] || printf '| Redis, `redis-cli --pipe` of SETs | %.0f |\n' "$redis_ceiling"
  [ "$search_ceiling" = 0 ] || printf '| OpenSearch, plain `_bulk` loader (5,000 docs a request, the view'"'"'s mapping) | %.0f |\n' "$search_ceiling"
  [ "$copy_ceiling" = 0 ] || printf '| PostgreSQL, `COPY` into the projection'"'"'s shape | %.0f |\n' "$copy_ceiling"
fi
if [ ${#oscatchup_lines[@]} -gt 0 ]; then
  echo
  echo "Catch-up into OpenSearch against the node's versioned \`_bulk\` ceiling (same documents, same run):"
  echo
  echo "| backlog | documents | ceiling docs/s | ceiling time | walsender alone | pgderive docs/s | pgderive time | ratio | CPU: node during the ceiling | CPU during pgderive's: node / walsender / pgderive | refreshes ceiling / pgderive | peak RSS |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for r in "${oscatchup_lines[@]}"; do echo "$r"; done
fi
if want latency; then
  echo
  echo "Latency, Redis view, pgbench single-row updates at $rate tx/s for $seconds s (achieved $achieved tx/s): $latency"
fi
[ "$latency_log" = "not measured" ] || echo "Latency with the change log on, same rate (achieved $achieved_log tx/s): $latency_log"
if [ ${#log_lines[@]} -gt 0 ]; then
  echo
  echo "The change log's writes (the runs marked _log above: /proc write_bytes of the run):"
  echo
  echo "| configuration | changes | written | write rate | per 1M changes |"
  echo "| --- | --- | --- | --- | --- |"
  for r in "${log_lines[@]}"; do echo "$r"; done
fi
echo
if [ ${#backfill_lines[@]} -gt 0 ]; then
  echo
  echo "Backfill of a view added while a writer runs (transactions of 100 changes; 0: the fill alone):"
  echo
  echo "| view | rows | COPY TO STDOUT rows/s | COPY time | fill rows/s | ratio to COPY | ratio to versioned \`_bulk\` | live after | reading / waiting for the store | pgderive CPU per 1M rows | server CPU per 1M rows: COPY's backend / the fill's backends / Redis | load avg | peak RSS |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for r in "${backfill_lines[@]}"; do echo "$r"; done
fi
if [ ${#verify_lines[@]} -gt 0 ]; then
  echo
  echo "\`pgderive verify --view\` at full speed, $verify_rows rows (ceiling: \`COPY TO STDOUT\` of the same table, same run):"
  echo
  echo "| view | rows | time | rows/s | COPY TO STDOUT rows/s | ratio to COPY | how | verify's peak memory |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  for r in "${verify_lines[@]}"; do echo "$r"; done
fi
if [ -n "$version_line" ]; then
  echo
  echo "Definition change to serving: from \`pgderive reload\` with a changed definition to the new version serving (a writer running):"
  echo
  echo "| view | rows | reload to serving | rows/s | peak RSS |"
  echo "| --- | --- | --- | --- | --- |"
  echo "$version_line"
fi
