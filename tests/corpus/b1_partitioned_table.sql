-- B1: a table partitioned by list, read by a Redis, an OpenSearch and a postgres view;
-- while streaming rows are inserted, moved to another partition, deleted, and a new
-- partition is created and written to. Kind: partitioned tables are published through
-- their root (publish_via_partition_root), partitions map to it, partitions made while
-- streaming need nothing; a restart finds the publication as it left it.
---- config
  - name: ev_cache
    store: cache
    from: public.events
    key: "${CORPUS_ID}:ev:{id}:{region}"
  - name: ev_search
    store: search
    from: public.events
    index: ${CORPUS_ID}_events
  - name: ev_counts
    store: warehouse
    table: corpus_out.ev_counts
    key: [region]
    query: select region, count(*) as n from public.events group by region
---- schema
create table events (id bigint, region text, payload text, primary key (id, region))
  partition by list (region);
create table events_eu partition of events for values in ('eu');
create table events_us partition of events for values in ('us');
---- before
insert into events values (1, 'eu', 'a'), (2, 'us', 'b'), (3, 'eu', 'c');
---- stream
insert into events values (4, 'eu', 'd'), (5, 'us', 'e');
---- stream
update events set region = 'us' where id = 1;
---- stream
delete from events where id = 2;
---- stream
create table events_ap partition of events for values in ('ap');
---- stream
insert into events values (6, 'ap', 'f');
---- restart
---- stream
update events set payload = 'g' where id = 6;
insert into events values (7, 'ap', 'h');
---- expect redis ${CORPUS_ID}:ev:*
${CORPUS_ID}:ev:1:us {"id":1,"region":"us","payload":"a"}
${CORPUS_ID}:ev:3:eu {"id":3,"region":"eu","payload":"c"}
${CORPUS_ID}:ev:4:eu {"id":4,"region":"eu","payload":"d"}
${CORPUS_ID}:ev:5:us {"id":5,"region":"us","payload":"e"}
${CORPUS_ID}:ev:6:ap {"id":6,"region":"ap","payload":"g"}
${CORPUS_ID}:ev:7:ap {"id":7,"region":"ap","payload":"h"}
---- expect opensearch ${CORPUS_ID}_events
["1","us"] {"id":1,"region":"us","payload":"a"}
["3","eu"] {"id":3,"region":"eu","payload":"c"}
["4","eu"] {"id":4,"region":"eu","payload":"d"}
["5","us"] {"id":5,"region":"us","payload":"e"}
["6","ap"] {"id":6,"region":"ap","payload":"g"}
["7","ap"] {"id":7,"region":"ap","payload":"h"}
---- expect postgres select region, n from corpus_out.ev_counts order by region
ap|2
eu|2
us|2
---- expect status
ev_cache live
ev_search live
ev_counts live
---- expect readyz 200
---- expect verify 0
