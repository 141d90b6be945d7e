-- B8: TRUNCATE of one partition in the same moment a new partition is created (the new
-- partition must not hide the truncate from the monitor). With
-- publish_via_partition_root PostgreSQL does not publish a partition's truncate at
-- all, so the rows of that partition must leave the views some other way (or the
-- views fail saying so). Kind B1 (partitions) x G1 (truncate).
---- config
  - name: ev_cache
    store: cache
    from: public.events
    key: "${CORPUS_ID}:ev:{id}:{region}"
  - name: ev_counts
    store: warehouse
    table: corpus_out.ev_counts
    key: [region]
    query: select region, count(*) as n from public.events group by region
---- schema
create table events (id int, region text, payload text, primary key (id, region))
  partition by list (region);
create table events_eu partition of events for values in ('eu');
create table events_us partition of events for values in ('us');
---- before
insert into events values (1, 'eu', 'a'), (2, 'us', 'b'), (3, 'eu', 'c');
---- stream
create table events_ap partition of events for values in ('ap');
truncate events_eu;
---- stream
insert into events values (4, 'us', 'd');
---- expect redis ${CORPUS_ID}:ev:*
${CORPUS_ID}:ev:2:us {"id":2,"region":"us","payload":"b"}
${CORPUS_ID}:ev:4:us {"id":4,"region":"us","payload":"d"}
---- expect postgres select region, n from corpus_out.ev_counts order by region
us|2
---- expect status
ev_cache live
ev_counts live
---- expect readyz 200
---- expect verify 0
