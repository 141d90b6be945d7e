-- Baseline: one table, a Redis, an OpenSearch and a postgres view; inserts, updates and
-- deletes while streaming, across a restart. Every other case departs from this one.
---- config
  - name: item_cache
    store: cache
    from: public.items
    key: "${CORPUS_ID}:item:{id}"
  - name: item_search
    store: search
    from: public.items
    index: ${CORPUS_ID}_items
    columns: [id, name]
  - name: item_counts
    store: warehouse
    table: public.item_counts
    key: [name]
    query: select name, count(*) as n from public.items group by name
---- schema
create table items (id int primary key, name text not null, price numeric(8,2));
---- before
insert into items values (1, 'a', 1.50), (2, 'b', 2.00);
---- stream
insert into items values (3, 'a', 3.25);
update items set price = 9.99 where id = 1;
---- stream
delete from items where id = 2;
---- restart
---- stream
update items set name = 'c' where id = 3;
---- expect redis ${CORPUS_ID}:item:*
${CORPUS_ID}:item:1 {"id":1,"name":"a","price":"9.99"}
${CORPUS_ID}:item:3 {"id":3,"name":"c","price":"3.25"}
---- expect opensearch ${CORPUS_ID}_items
1 {"id":1,"name":"a"}
3 {"id":3,"name":"c"}
---- expect postgres select name, n from public.item_counts order by name
a|1
c|1
---- expect status
item_cache live
item_search live
item_counts live
---- expect readyz 200
---- expect metric
pgderive_view_failed{store="cache",view="item_cache"} = 0
---- expect verify 0
