-- A5: REPLICA IDENTITY FULL table with an EXTERNAL (TOASTed) column; updates of
-- another column leave it unchanged, also with a key change. Kind A (unchanged TOAST)
-- x E1 (FULL: the old row is sent, but TOASTed values in it may be left out too).
---- config
  - name: d_cache
    store: cache
    from: public.docs
    key: "${CORPUS_ID}:d:{id}"
  - name: d_rows
    store: warehouse
    table: corpus_out.d_rows
    key: [id]
    query: select id, title, md5(body) as h, length(body) as l from public.docs
---- schema
create table docs (id int primary key, title text, body text);
alter table docs alter column body set storage external;
alter table docs replica identity full;
---- before
insert into docs values (1, 't1', repeat('x', 5000));
---- stream
update docs set title = 't2' where id = 1;
---- stream
update docs set id = 2 where id = 1;
---- expect postgres select id, title, l from corpus_out.d_rows order by id
2|t2|5000
---- expect status
d_cache live
d_rows live
---- expect readyz 200
---- expect verify 0
