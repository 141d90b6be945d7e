-- H1: a postgres view's target table is dropped behind pgderive's back while it
-- streams, and changes keep coming. Kind: a view's container in the store vanished or
-- was replaced while running (a target table dropped or replaced, an OpenSearch index
-- deleted, a Redis database flushed). The store's 2 s check sees the table's OID gone;
-- the view leaves `live` at once (state, metric, /readyz, a log line naming the store,
-- the table and the LSN) and the store is rebuilt, so the view ends equal to its query,
-- with no row lost from the writes made while the table was missing.
---- config
  - name: items_pg
    store: warehouse
    table: corpus_out.items_pg
    key: [id]
    query: select id, name from public.items
  - name: items_cache
    store: cache
    from: public.items
    key: "${CORPUS_ID}:it:{id}"
---- schema
create table items (id int primary key, name text);
---- before
insert into items values (1, 'a'), (2, 'b');
---- stream
insert into items values (3, 'c');
---- stream
drop table corpus_out.items_pg;
---- stream
insert into items values (4, 'd');
update items set name = 'bb' where id = 2;
delete from items where id = 1;
---- expect postgres select id, name from corpus_out.items_pg order by id
2|bb
3|c
4|d
---- expect redis ${CORPUS_ID}:it:*
${CORPUS_ID}:it:2 {"id":2,"name":"bb"}
${CORPUS_ID}:it:3 {"id":3,"name":"c"}
${CORPUS_ID}:it:4 {"id":4,"name":"d"}
---- expect status
items_pg live
items_cache live
---- expect metric
pgderive_store_container_changes_total{store="warehouse"} >= 1
pgderive_view_state{store="warehouse",view="items_pg",state="live"} = 1
---- expect readyz 200
---- expect verify 0
