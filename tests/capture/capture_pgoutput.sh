#!/usr/bin/env bash
# Captures real pgoutput bytes from the local stack's PostgreSQL for the decoder's unit
# tests (tests/fixtures/pgoutput/*.hex). Run it again when the workload below changes:
#
#   compose/local/stack up /tmp/cap --services pg
#   PGDERIVE_STACK_ENV=/tmp/cap/stack.env tests/capture/capture_pgoutput.sh
#
# One workload, decoded three ways from two slots created before it:
#   v1.hex         proto_version 1, messages on
#   v2_stream.hex  proto_version 2, streaming on (large transactions arrive in chunks)
#   v3_twophase.hex proto_version 3, streaming and two_phase on (a two-phase slot)
# logical_decoding_work_mem is at its minimum (64kB) in the decoding session, so the
# 700-row transactions are streamed. Each line: LSN XID HEX.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out="$root/tests/fixtures/pgoutput"
[ -f "${PGDERIVE_STACK_ENV:-}" ] || { echo "PGDERIVE_STACK_ENV must name a stack.env" >&2; exit 1; }
dsn=$(sed -n 's/^PGDERIVE_PG_DSN=//p' "$PGDERIVE_STACK_ENV")
db=pgderive_capture
admin() { psql "$dsn" -X -q -v ON_ERROR_STOP=1 "$@"; }
cap() { psql "${dsn%/*}/$db" -X -q -v ON_ERROR_STOP=1 "$@"; }

admin -c "drop database if exists $db with (force)" -c "create database $db"
trap 'admin -c "drop database if exists $db with (force)" >/dev/null 2>&1 || true' EXIT

cap <<'SQL'
create type cap_mood as enum ('sad', 'ok', 'happy');
create table cap_types (
  id int primary key, c_int2 int2, c_int4 int4, c_int8 int8, c_oid oid, c_float4 float4,
  c_float8 float8, c_numeric numeric, c_bool bool, c_text text, c_varchar varchar(20),
  c_char char(3), c_uuid uuid, c_inet inet, c_json json, c_jsonb jsonb, c_date date,
  c_ts timestamp, c_tstz timestamptz, c_time time, c_interval interval, c_bytea bytea,
  c_int4_arr int4[], c_text_arr text[], c_mood cap_mood);
create table cap_full (id int primary key, v text);
alter table cap_full replica identity full;
create table cap_toast (id int primary key, big text, n int);
alter table cap_toast alter column big set storage external;
create table cap_big (id int primary key, v text);
create publication cap_pub for table cap_types, cap_full, cap_toast, cap_big;
select pg_create_logical_replication_slot('cap_slot', 'pgoutput');
select pg_create_logical_replication_slot('cap_slot_2pc', 'pgoutput', false, true);
SQL

cap <<'SQL'
insert into cap_types values
  (1, 32767, -2147483648, 9223372036854775807, 4294967295, 1.5, 0.1, 12.50, true,
   'caf' || chr(233) || ' ' || chr(9749) || E' "quoted" \\ back', 'varchar', 'ab',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', '{"a": [1, 2]}',
   '{"b": {"c": null}}', '2024-02-29', '2024-02-29 13:45:00.123456',
   '2024-02-29 13:45:00.5+01', '13:45:00', '1 year 2 mons 3 days 04:05:06.7',
   '\x00ff10', '{1,NULL,3}', '{"a b","c,d","e\"f",NULL,"NULL"}', 'happy'),
  (2, null, null, null, null, 'NaN', '-Infinity', 'NaN', false, '', null, null, null, null,
   'null', '[]', 'infinity', '-infinity', 'infinity', null, null, '', '{}', '{{"x","y"},{"z",NULL}}', null),
  (3, null, null, null, null, null, null, null, null, null, null, null, null, null, null,
   null, null, null, null, null, null, null, null, null, null);
update cap_types set c_text = 'changed' where id = 1;
update cap_types set id = 20 where id = 2;
delete from cap_types where id = 3;
insert into cap_full values (1, 'a');
update cap_full set v = 'b' where id = 1;
delete from cap_full where id = 1;
insert into cap_toast select 1, string_agg(md5(g::text), ''), 0 from generate_series(1, 300) g;
update cap_toast set n = 1 where id = 1;
truncate cap_full restart identity cascade;
select pg_logical_emit_message(true, 'pgderive', 'transactional hello');
select pg_logical_emit_message(false, 'pgderive', 'non-transactional');
select pg_replication_origin_create('cap_origin');
begin;
select pg_replication_origin_session_setup('cap_origin');
select pg_replication_origin_xact_setup('0/ABCDEF', '2024-01-01 00:00:00+00');
insert into cap_full values (2, 'from origin');
commit;
select pg_replication_origin_session_reset();
-- streamed: committed, with an aborted subtransaction, and aborted whole
insert into cap_big select g, 'row ' || g from generate_series(1, 700) g;
begin;
insert into cap_big select g, 'sub ' || g from generate_series(1001, 1700) g;
savepoint s1;
insert into cap_big select g, 'rolled back ' || g from generate_series(2001, 2700) g;
rollback to savepoint s1;
insert into cap_big values (3001, 'after rollback to savepoint');
commit;
begin;
insert into cap_big select g, 'aborted ' || g from generate_series(4001, 4700) g;
rollback;
-- two-phase: committed, rolled back, and a large (streamed) prepared transaction
begin;
insert into cap_full values (3, 'prepared then committed');
prepare transaction 'cap_gid_commit';
commit prepared 'cap_gid_commit';
begin;
insert into cap_full values (4, 'prepared then rolled back');
prepare transaction 'cap_gid_rollback';
rollback prepared 'cap_gid_rollback';
begin;
insert into cap_big select g, 'big prepared ' || g from generate_series(5001, 5700) g;
prepare transaction 'cap_gid_big';
commit prepared 'cap_gid_big';
SQL

version=$(cap -At -c "show server_version")
capture() {  # capture FILE SLOT OPTIONS...
  local file=$1 slot=$2
  shift 2
  local options
  options=$(printf ", '%s'" "$@")
  {
    echo "# pgoutput ${*}, captured from PostgreSQL $version by tests/capture/capture_pgoutput.sh"
    echo "# lsn xid hex"
    cap -At -F ' ' -c "set logical_decoding_work_mem = '64kB'" \
      -c "select lsn, xid, encode(data, 'hex') from pg_logical_slot_peek_binary_changes('$slot', NULL, NULL $options)"
  } > "$out/$file"
  echo "$out/$file: $(grep -vc '^#' "$out/$file") messages"
}
capture v1.hex cap_slot proto_version 1 publication_names cap_pub messages true
capture v2_stream.hex cap_slot proto_version 2 publication_names cap_pub messages true streaming on
capture v3_twophase.hex cap_slot_2pc proto_version 3 publication_names cap_pub messages true streaming on two_phase on
cap -c "select pg_drop_replication_slot('cap_slot')" -c "select pg_drop_replication_slot('cap_slot_2pc')" \
  -c "select pg_replication_origin_drop('cap_origin')"
