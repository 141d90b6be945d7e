#!/usr/bin/env bash
# The capture core's benchmark (issue 3): pgderive tail against PostgreSQL's own
# walsender ceiling, on the same WAL, in the same run.
#
#   bench/capture.sh [--rows-a N] [--updates-b N] [--txns-c N] [--snapshot-rows N]
#
# For each workload, three slots are created at the same WAL position before it runs:
# the ceiling reads two of them with pg_recvlogical and pgoutput to /dev/null
# (protocol 1, and protocol 2 with streaming; the faster counts), and
# `pgderive tail --slot` reads the third to /dev/null until the workload's last commit.
# Workloads: (a) one transaction inserting N realistic rows (~300 bytes: text, numeric,
# jsonb, int array, timestamptz); (b) N single-row update transactions; (c) mixed
# insert/update/delete in 100-change transactions. Snapshot: a table read and decoded by
# `pgderive tail --snapshot` against `COPY ... TO STDOUT` to /dev/null.
# Prints a Markdown table: rows/s, ratio to the ceiling, peak RSS.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rows_a=1000000 updates_b=200000 txns_c=10000 snapshot_rows=1000000
while [ $# -gt 0 ]; do
  case "$1" in
    --rows-a) rows_a=$2; shift 2 ;;
    --updates-b) updates_b=$2; shift 2 ;;
    --txns-c) txns_c=$2; shift 2 ;;
    --snapshot-rows) snapshot_rows=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
binary="${PGDERIVE_BINARY:-$root/build/release/app/pgderive}"  # PGDERIVE_BINARY: another build to compare
[ -x "$binary" ] || { echo "build first: cmake -S . -B build/release -G Ninja && ninja -C build/release" >&2; exit 2; }

dir=$(mktemp -d /tmp/pgderive-bench.XXXXXX)
trap '"$root/compose/local/stack" down "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
"$root/compose/local/stack" up "$dir" --services pg >/dev/null
dsn=$(sed -n 's/^PGDERIVE_PG_DSN=//p' "$dir/stack.env")
bindir=$(sed -n 's/^PGDERIVE_PG_BINDIR=//p' "$dir/stack.env")
q() { psql "$dsn" -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# write_config FILE PIPELINE TABLE...: a configuration whose views read TABLEs (the Redis
# store is never contacted by tail).
write_config() {
  local file=$1 pipeline=$2
  shift 2
  printf 'pipeline: %s\nsource:\n  dsn: %s\nstores:\n  cache: {type: redis, url: "redis://127.0.0.1:1/0"}\nviews:\n' \
    "$pipeline" "$dsn" > "$file"
  for t in "$@"; do printf '  - {name: v_%s, store: cache, from: %s, key: "%s:{id}"}\n' "$t" "$t" "$t" >> "$file"; done
}
write_config "$dir/bench.yml" bench bench_a bench_b bench_c
q <<'SQL'
create table bench_a (id bigint primary key, title text, price numeric, attrs jsonb, tags int[], updated_at timestamptz);
create table bench_b (id bigint primary key, title text, price numeric, attrs jsonb, tags int[], updated_at timestamptz);
create table bench_c (id bigint primary key, title text, price numeric, attrs jsonb, tags int[], updated_at timestamptz);
create publication pgderive_bench for table bench_a, bench_b, bench_c;
create function bench_row(g bigint) returns bench_a language sql as $$
  select g, md5(g::text) || ' ' || repeat('lorem ipsum ', 12), (g % 100000)::numeric / 100,
         jsonb_build_object('sku', 'SKU-' || g, 'color', 'blue', 'size', g % 50, 'tags', jsonb_build_array('a', 'b')),
         array[g % 7, g % 11, g % 13]::int[], timestamptz '2024-02-29 12:00:00+00' + g * interval '1 second' $$;
create procedure bench_updates(n int) language plpgsql as $$
begin
  for i in 1..n loop
    update bench_b set price = price + 1, updated_at = updated_at + interval '1 second' where id = 1 + (i * 7919) % 100000;
    commit;
  end loop;
end $$;
create procedure bench_mixed(n int) language plpgsql as $$
declare base bigint;
begin
  for i in 1..n loop
    base := i * 1000;
    insert into bench_c select (bench_row(g)).* from generate_series(base, base + 49) g;
    update bench_c set price = price + 1 where id between base - 1000 and base - 1000 + 29;
    delete from bench_c where id between base - 1000 + 30 and base - 1000 + 49;
    commit;
  end loop;
end $$;
insert into bench_b select (bench_row(g)).* from generate_series(1, 100000) g;
SQL

results=()
measure() {  # measure NAME ROWS SQL_WORKLOAD
  local name=$1 rows=$2 workload=$3
  local slots=(bench_v1 bench_v2 bench_tail)
  for s in "${slots[@]}"; do q -c "select pg_create_logical_replication_slot('$s', 'pgoutput')" >/dev/null; done
  q -c "set synchronous_commit = off" -c "$workload"
  local until end
  until=$(q -c "select pg_logical_emit_message(true, 'pgderive-bench', 'end')")
  end=$(q -c "select pg_current_wal_flush_lsn()")
  local t0 t1 v1 v2 ours rss
  t0=$(date +%s.%N)
  "$bindir/pg_recvlogical" -d "$dsn" --slot bench_v1 --start --endpos "$end" --no-loop -f /dev/null \
    -o proto_version=1 -o publication_names=pgderive_bench
  t1=$(date +%s.%N); v1=$(echo "$t1 - $t0" | bc -l)
  t0=$(date +%s.%N)
  "$bindir/pg_recvlogical" -d "$dsn" --slot bench_v2 --start --endpos "$end" --no-loop -f /dev/null \
    -o proto_version=2 -o streaming=on -o publication_names=pgderive_bench
  t1=$(date +%s.%N); v2=$(echo "$t1 - $t0" | bc -l)
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$dir/rss" "$binary" tail -c "$dir/bench.yml" --slot bench_tail --until-lsn "$until" > /dev/null
  t1=$(date +%s.%N); ours=$(echo "$t1 - $t0" | bc -l)
  rss=$(( $(cat "$dir/rss") / 1024 ))
  for s in "${slots[@]}"; do q -c "select pg_drop_replication_slot('$s')" >/dev/null; done
  local ceiling
  ceiling=$(echo "if ($v1 < $v2) $v1 else $v2" | bc -l)
  results+=("$(printf '| %s | %d | %.0f | %.2f s (v1 %.2f, v2 %.2f) | %.0f | %.2f s | **%.2f×** | %d MB |' \
    "$name" "$rows" "$(echo "$rows / $ceiling" | bc -l)" "$ceiling" "$v1" "$v2" \
    "$(echo "$rows / $ours" | bc -l)" "$ours" "$(echo "$ceiling / $ours" | bc -l)" "$rss")")
  echo "${results[-1]}" >&2
}

measure "(a) 1 transaction, $rows_a inserts" "$rows_a" \
  "insert into bench_a select (bench_row(g)).* from generate_series(1, $rows_a) g"
measure "(b) $updates_b single-row updates" "$updates_b" "call bench_updates($updates_b)"
measure "(c) $txns_c mixed 100-change transactions" "$((txns_c * 100))" "call bench_mixed($txns_c)"

# Snapshot: a table of snapshot_rows rows, COPY to /dev/null vs tail --snapshot.
q -c "create table bench_s (like bench_a including all)" \
  -c "insert into bench_s select (bench_row(g)).* from generate_series(1, $snapshot_rows) g" -c "vacuum analyze bench_s"
write_config "$dir/snap.yml" snap bench_s
t0=$(date +%s.%N)
psql "$dsn" -X -q -c "\\copy bench_s to /dev/null"
t1=$(date +%s.%N); copy=$(echo "$t1 - $t0" | bc -l)
t0=$(date +%s.%N)
/usr/bin/time -f '%M' -o "$dir/rss" "$binary" tail -c "$dir/snap.yml" --snapshot --limit "$snapshot_rows" > /dev/null
t1=$(date +%s.%N); snap=$(echo "$t1 - $t0" | bc -l)
snapshot_line=$(printf '| snapshot, %d rows | %d | %.0f | %.2f s (COPY TO STDOUT) | %.0f | %.2f s | **%.2f×** | %d MB |' \
  "$snapshot_rows" "$snapshot_rows" "$(echo "$snapshot_rows / $copy" | bc -l)" "$copy" \
  "$(echo "$snapshot_rows / $snap" | bc -l)" "$snap" "$(echo "$copy / $snap" | bc -l)" "$(( $(cat "$dir/rss") / 1024 ))")

echo
echo "PostgreSQL $(q -c 'show server_version'), $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| workload | rows | ceiling rows/s | ceiling time | pgderive tail rows/s | pgderive time | ratio | peak RSS |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for r in "${results[@]}"; do echo "$r"; done
echo "$snapshot_line"
