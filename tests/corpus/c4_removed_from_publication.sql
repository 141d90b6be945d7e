-- C4: someone removes the table from pgderive's publication while streaming, and rows
-- change meanwhile (no change of it reaches the stream). Kind: the set of published
-- tables changes under pgderive: the table is put back and its views refilled.
---- config
  - name: items_cache
    store: cache
    from: public.items
    key: "${CORPUS_ID}:it:{id}"
  - name: items_search
    store: search
    from: public.items
    index: ${CORPUS_ID}_items
---- schema
create table items (id int primary key, name text);
---- before
insert into items values (1, 'a'), (2, 'b');
---- stream
do $$ declare p text; begin
  select pubname into p from pg_publication_tables where tablename = 'items';
  execute format('alter publication %I drop table items', p);
end $$;
---- stream
insert into items values (3, 'c');
delete from items where id = 1;
update items set name = 'bb' where id = 2;
---- expect redis ${CORPUS_ID}:it:*
${CORPUS_ID}:it:2 {"id":2,"name":"bb"}
${CORPUS_ID}:it:3 {"id":3,"name":"c"}
---- expect opensearch ${CORPUS_ID}_items
2 {"id":2,"name":"bb"}
3 {"id":3,"name":"c"}
---- expect status
items_cache live
items_search live
---- expect readyz 200
---- expect verify 0
