#!/usr/bin/env bash
# The README's five-minute walkthrough, run as written: every ```sh block between
# <!-- walkthrough:begin --> and <!-- walkthrough:end --> in README.md, in order, in one
# shell, against a demo started by scripts/demo.sh in a temporary directory (the
# blocks' /tmp/pgderive-demo is replaced by it). Each command must exit 0. Before the
# last block (the one that stops the demo) the row change the walkthrough makes must
# be in each store with its exact value; afterwards the demo's processes must be gone.
# Also checks that a second scripts/demo.sh leaves every store as it was.
#
#   tests/demo/walkthrough_test.sh PGDERIVE_BINARY
#
# The demo uses the given binary (--binary: no packages, no build, no install); a
# `pgderive` on the blocks' PATH points at it. The demo and its stack are stopped on
# every exit, failed or not.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
fail() { echo "FAIL: $*" >&2; exit 1; }
[ $# -eq 1 ] && [ -x "$1" ] || fail "usage: $0 PGDERIVE_BINARY"
binary=$(realpath "$1")
cd "$root"

# What the walkthrough changes, and the exact values each store must then hold.
product_id=2
price='"price":"12.34"'          # numeric travels as a JSON string; both stores hold compact JSON
customer_id=2
customer_name='Ada Lovelace'

dir=$(mktemp -d /tmp/pgderive-walkthrough.XXXXXX)
cleanup() {
  local code=$?
  if [ "$code" -ne 0 ] && [ -f "$dir/pgderive.log" ]; then
    echo "--- pgderive.log (last 40 lines)" >&2
    tail -n 40 "$dir/pgderive.log" >&2
  fi
  scripts/demo.sh --stop "$dir" > /dev/null 2>&1 || compose/local/stack down "$dir" > /dev/null 2>&1 || true
  rm -rf "$dir"
  exit "$code"
}
trap cleanup EXIT
mkdir "$dir/bin"
ln -s "$binary" "$dir/bin/pgderive"
export PATH="$dir/bin:$PATH"
t0=$(date +%s)

# ---------------------------------------------------------------- the blocks
begin=$(grep -c '^<!-- walkthrough:begin -->$' README.md || true)
end=$(grep -c '^<!-- walkthrough:end -->$' README.md || true)
[ "$begin" = 1 ] && [ "$end" = 1 ] || fail "README.md needs one walkthrough:begin and one walkthrough:end marker (found $begin, $end)"
mkdir "$dir/blocks"
awk -v out="$dir/blocks" '
  /^<!-- walkthrough:begin -->$/ { on = 1; next }
  /^<!-- walkthrough:end -->$/ { on = 0 }
  on && /^```sh$/ { n++; file = sprintf("%s/%02d.sh", out, n); printf "" > file; inside = 1; next }
  inside && /^```$/ { inside = 0; close(file); next }
  inside { print > file }
' README.md
mapfile -t blocks < <(ls "$dir/blocks"/*.sh 2>/dev/null)
[ "${#blocks[@]}" -ge 2 ] || fail "fewer than two sh blocks between the walkthrough markers"
last=${blocks[-1]}
grep -q 'scripts/demo.sh --stop "$demo"' "$last" ||
  fail "the walkthrough's last block does not stop the demo (scripts/demo.sh --stop \"\$demo\")"
grep -q "where id = $product_id" "${blocks[@]}" && grep -q "$customer_name" "${blocks[@]}" ||
  fail "the walkthrough no longer changes product $product_id and customer $customer_id as this test expects"
sed -i "s|/tmp/pgderive-demo|$dir|g" "${blocks[@]}"

# ---------------------------------------------------------------- the demo, twice
scripts/demo.sh --binary "$binary" "$dir" > "$dir/demo1.out" 2>&1 || { cat "$dir/demo1.out" >&2; fail "scripts/demo.sh failed"; }
t_demo=$(date +%s)
[ "$(stat -c %a "$dir/demo.env")" = 600 ] || fail "demo.env is mode $(stat -c %a "$dir/demo.env"), not 600"
[ "$(stat -c %a "$dir/stack.env")" = 600 ] || fail "stack.env is mode $(stat -c %a "$dir/stack.env"), not 600"
set -a
. "$dir/demo.env"
set +a
for name in PGDERIVE_SHOP_DSN PGDERIVE_REDIS_URL PGDERIVE_REDIS_PORT PGDERIVE_OPENSEARCH_URL \
            PGDERIVE_HTTP_LISTEN PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE; do
  [ -n "${!name:-}" ] || fail "demo.env does not set $name"
done
! grep -qF "$PGPASSWORD" "$dir/demo1.out" "$dir/pgderive.log" || fail "the database password is in the demo's output or log"

# Everything the demo changed, from each store.
stores() {
  local id
  for id in 1 2 3 1000; do redis-cli -p "$PGDERIVE_REDIS_PORT" GET "product:$id"; done
  for id in 1 2 3 1000; do curl -s "$PGDERIVE_OPENSEARCH_URL/products/_doc/$id"; echo; done
  psql -XAtc 'select * from analytics.customer_totals order by customer_id'
}
stores > "$dir/stores1"
scripts/demo.sh --binary "$binary" "$dir" > "$dir/demo2.out" 2>&1 || { cat "$dir/demo2.out" >&2; fail "the second scripts/demo.sh failed"; }
for said in "pgderive run is already running" "the sample changes are already applied" "the database shop is already loaded"; do
  grep -q "$said" "$dir/demo2.out" || { cat "$dir/demo2.out" >&2; fail "the second demo does not say '$said'"; }
done
stores > "$dir/stores2"
diff "$dir/stores1" "$dir/stores2" >&2 || fail "the second demo changed the stores"
t_demo2=$(date +%s)

# ---------------------------------------------------------------- the walkthrough
# The blocks run in one fresh shell without the test's environment beyond PATH and HOME,
# as a user's terminal would: only what the blocks themselves load.
check_stores() {
  local got
  got=$(redis-cli -p "$PGDERIVE_REDIS_PORT" GET "product:$product_id")
  [[ $got == "{\"id\":$product_id,"*"$price"* ]] || fail "Redis product:$product_id is $got, without $price"
  got=$(curl -s "$PGDERIVE_OPENSEARCH_URL/products/_source/$product_id")
  [[ $got == "{\"id\":$product_id,"*"$price"* ]] || fail "OpenSearch products/$product_id is $got, without $price"
  got=$(psql -XAtc "select name from analytics.customer_totals where customer_id = $customer_id")
  [ "$got" = "$customer_name" ] || fail "customer_totals customer $customer_id is named '$got', not '$customer_name'"
  echo "walkthrough: the change is in every store ($price, name '$customer_name')"
}
{
  echo "set -eo pipefail"
  echo "trap 'echo \"walkthrough: block \$block failed at: \$BASH_COMMAND\" >&2' ERR"
  for b in "${blocks[@]}"; do
    [ "$b" != "$last" ] || echo 'check_stores || exit 1'
    echo "block=$(basename "$b" .sh)"
    cat "$b"
  done
} > "$dir/walkthrough.sh"
export -f check_stores fail
(
  # The test's own settings (demo.env loaded above) do not leak into the blocks.
  for name in PGDERIVE_SHOP_DSN PGDERIVE_REDIS_URL PGDERIVE_REDIS_PORT PGDERIVE_OPENSEARCH_URL \
              PGDERIVE_HTTP_LISTEN PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE; do unset "$name"; done
  # check_stores reads them from the blocks' own shell, with the values the test expects.
  export product_id price customer_id customer_name
  bash "$dir/walkthrough.sh"
) || fail "the walkthrough failed (see above)"

# ---------------------------------------------------------------- stopped
for s in pg redis opensearch; do
  ! compose/local/stack status "$dir" | grep -q "^$s: running" || fail "$s still runs after the walkthrough's stop"
done
[ ! -f "$dir/pgderive.pid" ] || fail "the demo's pid file is still there after the stop"
echo "PASS: demo $((t_demo - t0)) s, second demo $((t_demo2 - t_demo)) s, walkthrough $(( $(date +%s) - t_demo2 )) s (${#blocks[@]} blocks)"
