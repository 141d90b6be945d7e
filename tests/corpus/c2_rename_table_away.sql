-- C2: the table a view reads is renamed away while streaming (its changes now arrive
-- under another name), then written to. Kind: a table gone from under its views fails
-- them at once - state, reason, metric, /readyz - rather than leaving them `live` with
-- rows no table holds; verify says the table is missing.
---- config
  - name: items_cache
    store: cache
    from: public.items
    key: "${CORPUS_ID}:it:{id}"
  - name: items_pg
    store: warehouse
    table: corpus_out.items_pg
    key: [id]
    query: select id, name from public.items
---- schema
create table items (id int primary key, name text);
---- before
insert into items values (1, 'a'), (2, 'b');
---- stream
alter table items rename to items_old;
---- stream
insert into items_old values (3, 'c');
---- expect status
items_cache failed was dropped or renamed
items_pg failed was dropped or renamed
---- expect readyz 503
---- expect metric
pgderive_view_failed{store="cache",view="items_cache"} = 1
pgderive_source_table_changes_total{table="public.items"} >= 1
---- expect verify 1
