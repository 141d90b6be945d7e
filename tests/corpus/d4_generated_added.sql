-- D4: a stored generated column is added to a source table while streaming; a view
-- without columns follows its table. Kind D1 (generated columns are not published by
-- PostgreSQL 15): the view leaves it out, as documented, and stays correct.
---- config
  - name: p_search
    store: search
    from: public.people
    index: ${CORPUS_ID}_people
---- schema
create table people (id int primary key, height_cm numeric);
---- before
insert into people values (1, 254);
---- stream
alter table people add column height_in numeric generated always as (height_cm / 2.54) stored;
---- stream
insert into people values (2, 508);
update people set height_cm = 127 where id = 1;
---- expect opensearch ${CORPUS_ID}_people
1 {"id":1,"height_cm":"127"}
2 {"id":2,"height_cm":"508"}
---- expect status
p_search live
---- expect readyz 200
---- expect verify 0
