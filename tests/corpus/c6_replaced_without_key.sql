-- C6: a source table replaced under a running pipeline by one the postgres view cannot
-- be maintained over (no primary key). The rebuild cannot succeed as things are: the
-- view must say failed (not backfilling for ever), /readyz 503. Kind C (tables
-- replaced) x principle 1.
---- config
  - name: item_names
    store: warehouse
    table: public.item_names
    key: [id]
    query: select id, name from public.items
---- schema
create table items (id int primary key, name text);
---- before
insert into items values (1, 'a'), (2, 'b');
---- stream
drop table items;
create table items (id int, name text);
insert into items values (3, 'c');
---- expect status
item_names failed
---- expect readyz 503
---- expect metric
pgderive_view_failed{store="warehouse",view="item_names"} = 1
---- expect verify 1
