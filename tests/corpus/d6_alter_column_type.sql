-- D6: ALTER COLUMN TYPE rewrites every row without row changes in the WAL (int to
-- text here, with USING). A view that follows its table must show the new values.
-- Kind: schema changes that change rows without row events.
---- config
  - name: i_cache
    store: cache
    from: public.items
    key: "${CORPUS_ID}:i:{id}"
---- schema
create table items (id int primary key, code int);
---- before
insert into items values (1, 7);
---- stream
alter table items alter column code type text using 'c' || code::text;
---- stream
insert into items values (2, 'c9');
---- expect redis ${CORPUS_ID}:i:*
${CORPUS_ID}:i:1 {"id":1,"code":"c7"}
${CORPUS_ID}:i:2 {"id":2,"code":"c9"}
---- expect status
i_cache live
---- expect readyz 200
---- expect verify 0
