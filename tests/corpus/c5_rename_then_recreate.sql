-- C2: the source table of a view is renamed while streaming and a new table takes its
-- name. Kind C1 (RENAME): never keep serving rows of a table that is gone; the view
-- ends with the rows of the table now named items (or fails saying so).
---- config
  - name: items_cache
    store: cache
    from: public.items
    key: "${CORPUS_ID}:item:{id}"
---- schema
create table items (id int primary key, name text);
---- before
insert into items values (1, 'a'), (2, 'b');
---- stream
alter table items rename to items_old;
---- stream
insert into items_old values (5, 'old5');
create table items (id int primary key, name text);
insert into items values (3, 'new3');
---- expect redis ${CORPUS_ID}:item:*
${CORPUS_ID}:item:3 {"id":3,"name":"new3"}
---- expect status
items_cache live
---- expect readyz 200
---- expect verify 0
