-- C1: the table a view reads is dropped and created again (with another column) while
-- streaming, and rows go into the new one before pgderive can know. Kind: a table
-- replaced under a running pipeline (DROP/CREATE, RENAME, removed from the publication)
-- is seen by its OID; it is put back into the publication and every view that reads it
-- is emptied and refilled from the new table (a postgres store is rebuilt); the view
-- never keeps a row of the table that is gone, also across a restart.
---- config
  - name: items_cache
    store: cache
    from: public.items
    key: "${CORPUS_ID}:it:{id}"
  - name: items_search
    store: search
    from: public.items
    index: ${CORPUS_ID}_items
  - name: items_pg
    store: warehouse
    table: corpus_out.items_pg
    key: [id]
    query: select id, name from public.items
---- schema
create table items (id int primary key, name text);
---- before
insert into items values (1, 'old1'), (2, 'old2');
---- stream
drop table items;
create table items (id int primary key, name text, extra int);
insert into items values (1, 'new1', 7), (3, 'new3', 9);
---- restart
---- stream
update items set extra = 8 where id = 1;
---- expect redis ${CORPUS_ID}:it:*
${CORPUS_ID}:it:1 {"id":1,"name":"new1","extra":8}
${CORPUS_ID}:it:3 {"id":3,"name":"new3","extra":9}
---- expect opensearch ${CORPUS_ID}_items
1 {"id":1,"name":"new1","extra":8}
3 {"id":3,"name":"new3","extra":9}
---- expect postgres select id, name from corpus_out.items_pg order by id
1|new1
3|new3
---- expect status
items_cache live
items_search live
items_pg live
---- expect readyz 200
---- expect verify 0
