-- F2: domains over numeric[], bytea[] and timestamptz[] (and arrays of a domain over
-- numeric) in an OpenSearch and a Redis view. Kind F1 (every decision from a type
-- goes through domains): each domain column renders exactly as its base-type twin.
---- config
  - name: m_search
    store: search
    from: public.m
    index: ${CORPUS_ID}_m
  - name: m_cache
    store: cache
    from: public.m
    key: "${CORPUS_ID}:m:{id}"
---- schema
create domain nums as numeric[];
create domain blobs as bytea[];
create domain stamps as timestamptz[];
create domain money2 as numeric(10,2);
create table m (id int primary key, a nums, b blobs, c stamps, d money2[],
                a0 numeric[], b0 bytea[], c0 timestamptz[], d0 numeric(10,2)[]);
---- stream
set timezone = 'UTC';
insert into m values (1, '{1.5,2}', array['\x0102'::bytea], array['2024-01-02 03:04:05+00'::timestamptz], '{3.10}',
                      '{1.5,2}', array['\x0102'::bytea], array['2024-01-02 03:04:05+00'::timestamptz], '{3.10}');
---- expect opensearch ${CORPUS_ID}_m
1 {"id":1,"a":["1.5","2"],"b":["AQI="],"c":["2024-01-02T03:04:05Z"],"d":["3.10"],"a0":["1.5","2"],"b0":["AQI="],"c0":["2024-01-02T03:04:05Z"],"d0":["3.10"]}
---- expect redis ${CORPUS_ID}:m:*
${CORPUS_ID}:m:1 {"id":1,"a":["1.5","2"],"b":["AQI="],"c":["2024-01-02T03:04:05Z"],"d":["3.10"],"a0":["1.5","2"],"b0":["AQI="],"c0":["2024-01-02T03:04:05Z"],"d0":["3.10"]}
---- expect status
m_search live
m_cache live
---- expect readyz 200
---- expect verify 0
