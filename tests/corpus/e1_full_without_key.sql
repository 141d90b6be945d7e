-- E1 (the kind's edge): a table with REPLICA IDENTITY FULL and no primary key has no
-- row key - two equal rows could not be told apart - so every view of it is refused
-- by validate and run, naming the table and the way out, and nothing is created.
---- config
  - name: log_cache
    store: cache
    from: public.logs
    key: "${CORPUS_ID}:log:{a}"
  - name: log_search
    store: search
    from: public.logs
    index: ${CORPUS_ID}_logs
---- schema
create table logs (a int, b text);
alter table logs replica identity full;
---- expect validate 2
views[0].from: table public.logs has REPLICA IDENTITY FULL but no primary key
REPLICA IDENTITY USING INDEX
(read by views log_cache, log_search)
