-- D2: an unlogged table as a row view's `from` and read by a postgres view's query; a
-- materialized view and a view as a view's table. Kind: relations PostgreSQL cannot
-- publish (unlogged, temporary, foreign tables, views, materialized views) are refused by
-- validate and run, naming the table, its line and why; nothing is created.
---- config
  - name: u_cache
    store: cache
    from: public.u
    key: "${CORPUS_ID}:u:{id}"
  - name: mv_pg
    store: warehouse
    table: corpus_out.mv_pg
    key: [id]
    query: select id, n from public.mv
  - name: v_search
    store: search
    from: public.vv
    index: ${CORPUS_ID}_vv
  - name: u_pg
    store: warehouse
    table: corpus_out.u_pg
    key: [n]
    query: select n, count(*) as c from public.u2 group by n
---- schema
create unlogged table u (id int primary key, n int);
create unlogged table u2 (id int primary key, n int);
create table base (id int primary key, n int);
create materialized view mv as select * from base;
create view vv as select * from base;
---- expect validate 2
:19:11: views[0].from: table public.u is UNLOGGED
ALTER TABLE "public"."u" SET LOGGED
:25:12: views[1].query: view mv_pg: table public.mv is a materialized view
:28:11: views[2].from: table public.vv is a view
:34:12: views[3].query: view u_pg: table public.u2 is UNLOGGED
