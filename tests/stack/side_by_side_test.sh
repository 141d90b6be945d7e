#!/usr/bin/env bash
# compose/local/stack, tested against itself: a second stack comes up beside the test
# run's stack (PGDERIVE_STACK_ENV) on other ports; stopping and starting one service of
# it touches nothing else; `down` stops exactly its own processes.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
stack="$root/compose/local/stack"
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -n "${PGDERIVE_STACK_ENV:-}" ] && [ -f "$PGDERIVE_STACK_ENV" ] ||
  fail "PGDERIVE_STACK_ENV must name the env file of a running stack"
first() { sed -n "s/^$1=//p" "$PGDERIVE_STACK_ENV"; }
[ "$(first PGDERIVE_STACK_SERVICES)" = "pg,redis,opensearch" ] ||
  fail "the stack of PGDERIVE_STACK_ENV runs '$(first PGDERIVE_STACK_SERVICES)'; this test compares against all three services (compose/local/stack up DIR without --services)"
second() { sed -n "s/^$1=//p" "$dir/stack.env"; }

dir=$(mktemp -d /tmp/pgderive-stacktest.XXXXXX)
trap '"$stack" down "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

pg_ok() { PGPASSWORD=$2 psql -X -qtA -h 127.0.0.1 -p "$1" -U postgres -d postgres -c 'select 1' 2>/dev/null | grep -qx 1; }
redis_ok() { [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]; }
os_ok() { curl -sf "http://127.0.0.1:$1/_cluster/health" >/dev/null; }

"$stack" up "$dir" >/dev/null
for key in PGDERIVE_PG_PORT PGDERIVE_REDIS_PORT PGDERIVE_OPENSEARCH_PORT; do
  [ -n "$(second $key)" ] || fail "second stack wrote no $key"
  [ "$(first $key)" != "$(second $key)" ] || fail "$key is the same in both stacks: $(first $key)"
done
pg_ok "$(second PGDERIVE_PG_PORT)" "$(second PGDERIVE_PG_PASSWORD)" || fail "second PostgreSQL does not answer"
redis_ok "$(second PGDERIVE_REDIS_PORT)" || fail "second Redis does not answer"
os_ok "$(second PGDERIVE_OPENSEARCH_PORT)" || fail "second OpenSearch does not answer"
"$stack" status "$dir" >/dev/null || fail "status of a full stack is not 0"

# stop/start one service: same port afterwards, the other stack untouched.
"$stack" stop "$dir" redis
! redis_ok "$(second PGDERIVE_REDIS_PORT)" || fail "Redis still answers after stop"
redis_ok "$(first PGDERIVE_REDIS_PORT)" || fail "stopping the second Redis stopped the first"
if "$stack" status "$dir" >/dev/null; then fail "status is 0 with Redis stopped"; fi
"$stack" start "$dir" redis 2>/dev/null
redis_ok "$(second PGDERIVE_REDIS_PORT)" || fail "Redis did not come back on its port"

pids=$(cat "$dir"/*.pid)
"$stack" down "$dir" 2>/dev/null
for pid in $pids; do
  if [ -r "/proc/$pid/stat" ] && ! sed 's/^.*) //' "/proc/$pid/stat" | grep -q '^[ZX]'; then
    fail "pid $pid of the second stack survived down"
  fi
done
pg_ok "$(first PGDERIVE_PG_PORT)" "$(first PGDERIVE_PG_PASSWORD)" || fail "down of the second stack stopped the first PostgreSQL"
redis_ok "$(first PGDERIVE_REDIS_PORT)" || fail "down of the second stack stopped the first Redis"
os_ok "$(first PGDERIVE_OPENSEARCH_PORT)" || fail "down of the second stack stopped the first OpenSearch"
echo "PASS: two stacks side by side, stop/start, pid-exact down"
