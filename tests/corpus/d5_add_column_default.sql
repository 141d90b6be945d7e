-- D5: a column with a DEFAULT is added while streaming; the existing rows take the
-- default without any row change in the WAL. A view that follows its table (no
-- columns list) must then show the new column on every row (or say it does not).
-- Kind: schema changes that change rows without row events (like RENAME COLUMN).
---- config
  - name: i_cache
    store: cache
    from: public.items
    key: "${CORPUS_ID}:i:{id}"
  - name: i_search
    store: search
    from: public.items
    index: ${CORPUS_ID}_items
---- schema
create table items (id int primary key, name text);
---- before
insert into items values (1, 'a');
---- stream
alter table items add column qty int not null default 5;
---- stream
insert into items values (2, 'b', 7);
---- expect redis ${CORPUS_ID}:i:*
${CORPUS_ID}:i:1 {"id":1,"name":"a","qty":5}
${CORPUS_ID}:i:2 {"id":2,"name":"b","qty":7}
---- expect opensearch ${CORPUS_ID}_items
1 {"id":1,"name":"a","qty":5}
2 {"id":2,"name":"b","qty":7}
---- expect status
i_cache live
i_search live
---- expect readyz 200
---- expect verify 0
