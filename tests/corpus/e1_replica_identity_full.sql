-- E1: bundles(id int primary key, tags text[], n int) with REPLICA IDENTITY FULL. Kind:
-- a row's key is the primary key (or the replica identity index) whatever the replica
-- identity - in the Redis key check, the OpenSearch _id, the postgres mirror, backfill
-- chunks and verify; FULL only adds the old row.
---- config
  - name: bundle_cache
    store: cache
    from: public.bundles
    key: "${CORPUS_ID}:bundle:{id}"
    columns: [id, n]
  - name: bundle_search
    store: search
    from: public.bundles
    index: ${CORPUS_ID}_bundles
    columns: [id, n]
  - name: bundle_rows
    store: warehouse
    table: public.bundle_rows
    key: [id]
    query: select id, tags, n from public.bundles
---- schema
create table bundles (id int primary key, tags text[], n int);
alter table bundles replica identity full;
---- before
insert into bundles values (1, '{a,b}', 1), (5, '{gone}', 5);
---- stream
insert into bundles select 2, array(select repeat('t', 600) || g from generate_series(1, 3) g), 2;
---- stream
update bundles set n = 10 where id = 1;
---- stream
update bundles set id = 3 where id = 2;
---- stream
insert into bundles values (4, '{x,"y z"}', 4);
delete from bundles where id = 5;
---- restart
---- stream
update bundles set tags = array_append(tags, 'c') where id = 1;
---- expect redis ${CORPUS_ID}:bundle:*
${CORPUS_ID}:bundle:1 {"id":1,"n":10}
${CORPUS_ID}:bundle:3 {"id":3,"n":2}
${CORPUS_ID}:bundle:4 {"id":4,"n":4}
---- expect opensearch ${CORPUS_ID}_bundles
1 {"id":1,"n":10}
3 {"id":3,"n":2}
4 {"id":4,"n":4}
---- expect postgres select id, case when id = 3 then md5(tags::text) else tags::text end, n from public.bundle_rows order by id
1|{a,b,c}|10
3|ac40557398cf7cf80b4a00c10a73c28c|2
4|{x,"y z"}|4
---- expect status
bundle_cache live
bundle_search live
bundle_rows live
---- expect readyz 200
---- expect verify 0
