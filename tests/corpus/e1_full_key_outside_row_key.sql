-- E1 (the kind in the Redis key check): under REPLICA IDENTITY FULL every column is
-- in the old row, but a key template must still use the row key (the primary key, or
-- the replica identity index): `n` could be NULL or shared by two rows, and deleting
-- one would remove the other's key. Refused by validate and run, with the way out.
---- config
  - name: bundle_by_n
    store: cache
    from: public.bundles
    key: "${CORPUS_ID}:bundle_n:{n}"
---- schema
create table bundles (id int primary key, tags text[], n int);
alter table bundles replica identity full;
---- expect validate 2
views[0].key: view bundle_by_n: key column n is not part of the row key of public.bundles
REPLICA IDENTITY USING INDEX
