-- A7: TOASTed value and key changes inside subtransactions, one rolled back: the
-- rolled-back key change must leave no trace, the later update keeps the value.
-- Kind A (unchanged TOAST across key changes) with savepoints.
---- config
  - name: docs_cache
    store: cache
    from: public.docs
    key: "${CORPUS_ID}:doc:{id}"
  - name: docs_v
    store: warehouse
    table: corpus_out.docs_v
    key: [id]
    query: select id, title, length(body) as l, md5(body) as h from public.docs
---- schema
create table docs (id bigint primary key, title text, body text);
alter table docs alter column body set storage external;
---- before
insert into docs values (1, 'one', repeat('o', 7000));
---- stream
begin;
insert into docs values (3, 'v1', repeat('b', 10000));
savepoint a;
update docs set id = 4 where id = 3;
update docs set id = 2 where id = 1;
rollback to savepoint a;
update docs set title = 'v2' where id = 3;
savepoint b;
update docs set id = 5 where id = 1;
release savepoint b;
commit;
---- expect postgres select id, title, l from corpus_out.docs_v order by id
3|v2|10000
5|one|7000
---- expect status
docs_cache live
docs_v live
---- expect readyz 200
---- expect verify 0
