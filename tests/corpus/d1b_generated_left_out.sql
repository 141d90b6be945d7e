-- D1 (second half): a view without `columns` over a table with a generated column
-- leaves it out (said at start and in the README); a postgres view computes it from the
-- published columns. Kind: what PostgreSQL does not publish is left out knowingly, and
-- verify agrees with what the view holds.
---- config
  - name: people_cache
    store: cache
    from: public.people
    key: "${CORPUS_ID}:p:{id}"
  - name: people_pg
    store: warehouse
    table: corpus_out.people_pg
    key: [id]
    query: select id, round(height_cm / 2.54, 2) as height_in from public.people
---- schema
create table people (id int primary key, height_cm numeric,
  height_in numeric generated always as (height_cm / 2.54) stored);
---- before
insert into people (id, height_cm) values (1, 254);
---- stream
insert into people (id, height_cm) values (2, 127);
update people set height_cm = 508 where id = 1;
---- expect redis ${CORPUS_ID}:p:*
${CORPUS_ID}:p:1 {"id":1,"height_cm":"508"}
${CORPUS_ID}:p:2 {"id":2,"height_cm":"127"}
---- expect postgres select id, height_in from corpus_out.people_pg order by id
1|200.00
2|50.00
---- expect status
people_cache live
people_pg live
---- expect verify 0
