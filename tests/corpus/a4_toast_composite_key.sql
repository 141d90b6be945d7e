-- A4: a TOASTed text column that is one of two key columns; an update of another
-- column leaves it "unchanged TOAST" in the new tuple. Kind A2 (a key column arriving
-- unchanged), composite key (the Redis key names both columns, 2,500 bytes of it k).
---- config
  - name: n_cache
    store: cache
    from: public.notes
    key: "${CORPUS_ID}:n:{n}:{k}"
  - name: n_rows
    store: warehouse
    table: corpus_out.n_rows
    key: [n, kl]
    query: select n, length(k) as kl, v from public.notes
---- schema
create table notes (k text, n int, v int, primary key (k, n));
alter table notes alter column k set storage external;
---- before
insert into notes values (repeat('k', 2500), 1, 1);
---- stream
update notes set v = 2;
---- stream
begin; update notes set n = 2; update notes set n = 3, v = 3; commit;
---- expect postgres select n, kl, v from corpus_out.n_rows order by n
3|2500|3
---- expect status
n_cache live
n_rows live
---- expect readyz 200
---- expect verify 0
