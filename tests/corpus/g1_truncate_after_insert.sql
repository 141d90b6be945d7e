-- G1: views of orders; while streaming, `insert into orders values (4, ...)` and
-- `truncate orders` as two transactions back to back. Kind: coalescing per document
-- keeps every truncate ordered against the row actions around it, in every store
-- (OpenSearch: a document indexed since the last refresh is deleted too).
---- config
  - name: order_search
    store: search
    from: public.orders
    index: ${CORPUS_ID}_orders
  - name: order_cache
    store: cache
    from: public.orders
    key: "${CORPUS_ID}:order:{id}"
  - name: order_rows
    store: warehouse
    table: public.order_rows
    key: [id]
    query: select id, item from public.orders
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
truncate orders;
---- expect opensearch ${CORPUS_ID}_orders
---- expect redis ${CORPUS_ID}:order:*
---- expect postgres select id, item from public.order_rows order by id
---- expect postgres select item, n from public.order_counts order by item
---- expect status
order_search live
order_cache live
order_rows live
order_counts live
---- expect readyz 200
---- expect verify 0
