-- F1: `create domain jdoc as jsonb` and an OpenSearch view of (id int primary key, meta
-- jdoc). Kind: every decision made from a column's type (the index mapping, the JSON
-- rendering in Redis and OpenSearch, verify's comparison) goes through domains to the
-- base type: domains over domains, arrays of domains, domains over arrays.
---- config
  - name: doc_search
    store: search
    from: public.docs
    index: ${CORPUS_ID}_docs
  - name: doc_cache
    store: cache
    from: public.docs
    key: "${CORPUS_ID}:doc:{id}"
  - name: doc_rows
    store: warehouse
    table: public.doc_rows
    key: [id]
    query: select id, meta, metas, tags, tag_list, qty, uid from public.docs
---- schema
create domain jdoc as jsonb;
create domain jdoc2 as jdoc check (value is not null);
create domain tag as text;
create domain tag_list as text[];
create domain qty as int check (value >= 0);
create domain d_uuid as uuid;
create table docs (id int primary key, meta jdoc, strict_meta jdoc2, metas jdoc[],
                   tags tag[], tag_list tag_list, qty qty, qtys qty[], uid d_uuid);
---- before
insert into docs values (1, '{"a":0}', '{"s":1}', array['{"x":1}', '[2]']::jdoc[], '{p,q}',
                         '{l1,l2}', 3, '{1,2}', '6c1b2a56-8f4e-4a4c-9a51-0d0e3f3b7a01');
---- stream
insert into docs values (2, '{"a":1}', '{"s":2}', array['{"y":{"z":true}}']::jdoc[], '{r}',
                         '{}', 0, '{}', '6c1b2a56-8f4e-4a4c-9a51-0d0e3f3b7a02');
---- stream
update docs set meta = '{"a":[1,2]}', qtys = '{7}' where id = 1;
---- expect opensearch ${CORPUS_ID}_docs
1 {"id":1,"meta":{"a":[1,2]},"strict_meta":{"s":1},"metas":[{"x":1},[2]],"tags":["p","q"],"tag_list":["l1","l2"],"qty":3,"qtys":[7],"uid":"6c1b2a56-8f4e-4a4c-9a51-0d0e3f3b7a01"}
2 {"id":2,"meta":{"a":1},"strict_meta":{"s":2},"metas":[{"y":{"z":true}}],"tags":["r"],"tag_list":[],"qty":0,"qtys":[],"uid":"6c1b2a56-8f4e-4a4c-9a51-0d0e3f3b7a02"}
---- expect redis ${CORPUS_ID}:doc:*
${CORPUS_ID}:doc:1 {"id":1,"meta":{"a":[1,2]},"strict_meta":{"s":1},"metas":[{"x":1},[2]],"tags":["p","q"],"tag_list":["l1","l2"],"qty":3,"qtys":[7],"uid":"6c1b2a56-8f4e-4a4c-9a51-0d0e3f3b7a01"}
${CORPUS_ID}:doc:2 {"id":2,"meta":{"a":1},"strict_meta":{"s":2},"metas":[{"y":{"z":true}}],"tags":["r"],"tag_list":[],"qty":0,"qtys":[],"uid":"6c1b2a56-8f4e-4a4c-9a51-0d0e3f3b7a02"}
---- expect postgres select id, meta, metas, tags, tag_list, qty, uid from public.doc_rows order by id
1|{"a": [1, 2]}|{"{\"x\": 1}",[2]}|{p,q}|{l1,l2}|3|6c1b2a56-8f4e-4a4c-9a51-0d0e3f3b7a01
2|{"a": 1}|{"{\"y\": {\"z\": true}}"}|{r}|{}|0|6c1b2a56-8f4e-4a4c-9a51-0d0e3f3b7a02
---- expect status
doc_search live
doc_cache live
doc_rows live
---- expect readyz 200
---- expect verify 0
