-- D1: a stored generated column (PostgreSQL before 18 does not publish them) named by a
-- row view's columns and read by a postgres view's query. Kind: a view that needs a
-- column PostgreSQL does not publish is refused by validate and run, at its line, with
-- the reason and the way out; nothing is created.
---- config
  - name: people_cache
    store: cache
    from: public.people
    key: "${CORPUS_ID}:p:{id}"
    columns: [id, height_in]
  - name: people_pg
    store: warehouse
    table: corpus_out.people_pg
    key: [id]
    query: select id, height_in from public.people
---- schema
create table people (id int primary key, height_cm numeric,
  height_in numeric generated always as (height_cm / 2.54) stored);
---- before
insert into people (id, height_cm) values (1, 254);
---- expect validate 2
:21:19: views[0].columns[1]: view people_cache: column height_in of table public.people is generated (as (height_cm / 2.54))
:26:12: views[1].query: view people_pg: column height_in of table public.people is generated
PostgreSQL before 18 does not publish generated columns
leave it out of columns
write (height_cm / 2.54) in the query in place of the column
