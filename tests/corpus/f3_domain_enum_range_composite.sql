-- F3: domains over an enum, a range, a composite type and interval, each next to a
-- column of its base type with the same value, in OpenSearch, Redis and a postgres
-- view. Kind F1: every decision from a column's type goes through domains, so each
-- domain column renders exactly as its base-type twin.
---- config
  - name: t_search
    store: search
    from: public.t
    index: ${CORPUS_ID}_t
  - name: t_cache
    store: cache
    from: public.t
    key: "${CORPUS_ID}:t:{id}"
  - name: t_rows
    store: warehouse
    table: corpus_out.t_rows
    key: [id]
    query: select id, e, de, r, dr, c, dc, i, di from public.t
---- schema
create type mood as enum ('sad', 'ok');
create type pt as (x int, y text);
create domain dmood as mood;
create domain drange as int4range;
create domain dpt as pt;
create domain divl as interval;
create table t (id int primary key, e mood, de dmood, r int4range, dr drange, c pt, dc dpt,
                i interval, di divl);
---- stream
insert into t values (1, 'ok', 'ok', '[1,5)', '[1,5)', '(1,a)', '(1,a)', '1 day', '1 day');
---- expect opensearch ${CORPUS_ID}_t
1 {"id":1,"e":"ok","de":"ok","r":"[1,5)","dr":"[1,5)","c":"(1,a)","dc":"(1,a)","i":"1 day","di":"1 day"}
---- expect redis ${CORPUS_ID}:t:*
${CORPUS_ID}:t:1 {"id":1,"e":"ok","de":"ok","r":"[1,5)","dr":"[1,5)","c":"(1,a)","dc":"(1,a)","i":"1 day","di":"1 day"}
---- expect postgres select id, e, de, r, dr, c, dc, i, di from corpus_out.t_rows
1|ok|ok|[1,5)|[1,5)|(1,a)|(1,a)|1 day|1 day
---- expect status
t_search live
t_cache live
t_rows live
---- expect readyz 200
---- expect verify 0
