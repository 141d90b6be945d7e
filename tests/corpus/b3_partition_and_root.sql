-- B3: one view reads a partitioned table, another one of its partitions. Kind: with the
-- publication publishing through the root, the partition's changes arrive as the root's
-- and the partition's view would silently miss them: refused at its line.
---- config
  - name: ev_cache
    store: cache
    from: public.events
    key: "${CORPUS_ID}:ev:{id}:{region}"
  - name: eu_cache
    store: cache
    from: public.events_eu
    key: "${CORPUS_ID}:eu:{id}"
---- schema
create table events (id bigint, region text, primary key (id, region)) partition by list (region);
create table events_eu partition of events for values in ('eu');
---- expect validate 2
:23:11: views[1].from: table public.events_eu is a partition of public.events, which a view also reads
