-- B2: a table partitioned by list whose partition is itself partitioned by range;
-- rows move between sub-partitions and between partitions. Kind B1 (partitions map to
-- the root a view reads), two levels deep.
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
create table events_eu partition of events for values in ('eu') partition by range (id);
create table events_eu_lo partition of events_eu for values from (0) to (100);
create table events_eu_hi partition of events_eu for values from (100) to (1000);
create table events_us partition of events for values in ('us');
---- before
insert into events values (1, 'eu', 'a'), (2, 'us', 'b');
---- stream
insert into events values (150, 'eu', 'c'), (3, 'eu', 'd');
---- stream
update events set id = 200 where id = 3;
---- stream
update events set region = 'us' where id = 1;
---- expect redis ${CORPUS_ID}:ev:*
${CORPUS_ID}:ev:1:us {"id":1,"region":"us","payload":"a"}
${CORPUS_ID}:ev:2:us {"id":2,"region":"us","payload":"b"}
${CORPUS_ID}:ev:150:eu {"id":150,"region":"eu","payload":"c"}
${CORPUS_ID}:ev:200:eu {"id":200,"region":"eu","payload":"d"}
---- expect postgres select region, n from corpus_out.ev_counts order by region
eu|2
us|2
---- expect status
ev_cache live
ev_counts live
---- expect readyz 200
---- expect verify 0
