-- C3: the table a view reads is renamed away and another table takes its name (the
-- usual "build the new table aside, then swap" migration), while streaming. Kind: a
-- table replaced under a running pipeline (see C1), here by RENAME.
---- config
  - name: items_cache
    store: cache
    from: public.items
    key: "${CORPUS_ID}:it:{id}"
  - name: items_counts
    store: warehouse
    table: corpus_out.items_counts
    key: [name]
    query: select name, count(*) as n from public.items group by name
---- schema
create table items (id int primary key, name text);
create table items_new (id int primary key, name text);
---- before
insert into items values (1, 'a'), (2, 'b');
insert into items_new values (1, 'x'), (5, 'x'), (6, 'y');
---- stream
begin;
alter table items rename to items_old;
alter table items_new rename to items;
commit;
---- stream
insert into items_old values (3, 'old');
insert into items values (7, 'y');
---- expect redis ${CORPUS_ID}:it:*
${CORPUS_ID}:it:1 {"id":1,"name":"x"}
${CORPUS_ID}:it:5 {"id":5,"name":"x"}
${CORPUS_ID}:it:6 {"id":6,"name":"y"}
${CORPUS_ID}:it:7 {"id":7,"name":"y"}
---- expect postgres select name, n from corpus_out.items_counts order by name
x|2
y|2
---- expect status
items_cache live
items_counts live
---- expect readyz 200
---- expect verify 0
