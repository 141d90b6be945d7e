-- G1 (the kind inside one transaction and across batches): rows written before and
-- after a truncate, in one transaction and back to back, in every store; only the
-- rows after the last truncate remain.
---- config
  - name: order_search
    store: search
    from: public.orders
    index: ${CORPUS_ID}_orders
  - name: order_cache
    store: cache
    from: public.orders
    key: "${CORPUS_ID}:order:{id}"
  - name: order_counts
    store: warehouse
    table: public.order_counts
    key: [item]
    query: select item, count(*) as n from public.orders group by item
---- schema
create table orders (id int primary key, item text);
---- before
insert into orders values (1, 'a'), (2, 'b');
---- stream
insert into orders values (4, 'd');
---- stream
begin; update orders set item = 'z' where id = 1; truncate orders; insert into orders values (6, 'f'), (1, 'a2'); commit;
---- stream
update orders set item = 'f' where id = 1;
---- stream
truncate orders; insert into orders values (7, 'g');
---- stream
insert into orders values (8, 'f');
---- expect opensearch ${CORPUS_ID}_orders
7 {"id":7,"item":"g"}
8 {"id":8,"item":"f"}
---- expect redis ${CORPUS_ID}:order:*
${CORPUS_ID}:order:7 {"id":7,"item":"g"}
${CORPUS_ID}:order:8 {"id":8,"item":"f"}
---- expect postgres select item, n from public.order_counts order by item
f|1
g|1
---- expect status
order_search live
order_cache live
order_counts live
---- expect readyz 200
---- expect verify 0
