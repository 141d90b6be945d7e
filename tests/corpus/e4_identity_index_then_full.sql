-- E4: a table without primary key, REPLICA IDENTITY USING INDEX on a unique not-null
-- column, switched to REPLICA IDENTITY FULL while streaming, then keys change. Kind E1
-- (the key is the identity index whatever the replica identity).
---- config
  - name: t_cache
    store: cache
    from: public.tags
    key: "${CORPUS_ID}:tag:{code}"
  - name: t_search
    store: search
    from: public.tags
    index: ${CORPUS_ID}_tags
---- schema
create table tags (code text not null, label text);
create unique index tags_code on tags (code);
alter table tags replica identity using index tags_code;
---- before
insert into tags values ('a', 'A'), ('b', 'B');
---- stream
update tags set label = 'A1' where code = 'a';
---- stream
alter table tags replica identity full;
---- stream
update tags set code = 'c' where code = 'b';
update tags set label = 'A2' where code = 'a';
---- expect status
t_cache failed
t_search failed
---- expect readyz 503
---- expect metric
pgderive_view_failed{store="cache",view="t_cache"} = 1
---- expect verify 1
