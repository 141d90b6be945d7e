-- B2: partitions holding rows are attached to and detached from a partitioned table
-- while streaming (rows join or leave it with no row change in the WAL). Kind:
-- partitions created, attached, detached or dropped while streaming: a new empty
-- partition needs nothing; one that brings or takes rows refills the views.
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
create table events (id bigint, region text, payload text, primary key (id, region))
  partition by list (region);
create table events_eu partition of events for values in ('eu');
create table events_us partition of events for values in ('us');
create table events_ap (id bigint, region text, payload text, primary key (id, region));
---- before
insert into events values (1, 'eu', 'a'), (2, 'us', 'b');
insert into events_ap values (3, 'ap', 'c');
---- stream
alter table events attach partition events_ap for values in ('ap');
---- stream
alter table events detach partition events_us;
---- stream
insert into events values (4, 'ap', 'd');
---- expect redis ${CORPUS_ID}:ev:*
${CORPUS_ID}:ev:1:eu {"id":1,"region":"eu","payload":"a"}
${CORPUS_ID}:ev:3:ap {"id":3,"region":"ap","payload":"c"}
${CORPUS_ID}:ev:4:ap {"id":4,"region":"ap","payload":"d"}
---- expect postgres select region, n from corpus_out.ev_counts order by region
ap|2
eu|1
---- expect status
ev_cache live
ev_counts live
---- expect readyz 200
---- expect verify 0
