-- B7: rows sit in a DEFAULT partition; while streaming a new partition is created for
-- some of their values after they are moved out of the default (the usual split:
-- detach default, create the partition, move rows, re-attach). Kind B1 (partitions
-- created, attached and detached while streaming).
---- config
  - name: ev_cache
    store: cache
    from: public.events
    key: "${CORPUS_ID}:ev:{id}:{region}"
---- schema
create table events (id int, region text, payload text, primary key (id, region))
  partition by list (region);
create table events_eu partition of events for values in ('eu');
create table events_def partition of events default;
---- before
insert into events values (1, 'eu', 'a'), (2, 'ap', 'b'), (3, 'sa', 'c');
---- stream
begin;
alter table events detach partition events_def;
create table events_ap partition of events for values in ('ap');
insert into events_ap select * from events_def where region = 'ap';
delete from events_def where region = 'ap';
alter table events attach partition events_def default;
commit;
---- stream
update events set payload = 'b2' where id = 2;
---- expect redis ${CORPUS_ID}:ev:*
${CORPUS_ID}:ev:1:eu {"id":1,"region":"eu","payload":"a"}
${CORPUS_ID}:ev:2:ap {"id":2,"region":"ap","payload":"b2"}
${CORPUS_ID}:ev:3:sa {"id":3,"region":"sa","payload":"c"}
---- expect status
ev_cache live
---- expect readyz 200
---- expect verify 0
