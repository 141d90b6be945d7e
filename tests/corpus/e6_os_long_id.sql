-- E6: a row whose key is longer than OpenSearch accepts as a document _id (512
-- bytes), inserted while streaming, next to a second OpenSearch view of another
-- table. Kind: a key a store cannot take. Right: that view fails with a reason naming
-- table and key (not a raw _bulk error), /readyz says so, and the store's other
-- views go on - today the whole store stops, /status shows no reason and calls the
-- store unreachable; during the initial snapshot the same row ends `run` (exit 1).
---- config
  - name: n_search
    store: search
    from: public.notes
    index: ${CORPUS_ID}_notes
  - name: o_search
    store: search
    from: public.other
    index: ${CORPUS_ID}_other
---- schema
create table notes (k text primary key, v int);
create table other (id int primary key, v int);
---- before
insert into notes values ('a', 1);
insert into other values (1, 1);
---- stream
insert into notes values (repeat('q', 600), 2);
---- stream
insert into other values (2, 2);
insert into notes values ('b', 3);
---- expect opensearch ${CORPUS_ID}_other
1 {"id":1,"v":1}
2 {"id":2,"v":2}
---- expect status
n_search failed 512
o_search live
---- expect readyz 503
---- expect metric
pgderive_view_failed{store="search",view="n_search"} = 1
pgderive_view_failed{store="search",view="o_search"} = 0
---- expect verify 1
