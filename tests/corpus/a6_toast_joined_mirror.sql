-- A6: a postgres view joining two tables, the joined table's TOASTed column unchanged
-- in an update of another column (the mirror must keep it). Kind A (unchanged TOAST)
-- in a postgres view's mirrors.
---- config
  - name: docs_by
    store: warehouse
    table: corpus_out.docs_by
    key: [id]
    query: select d.id, a.name, length(a.bio) as bl, md5(a.bio) as bh from public.docs d join public.authors a on a.id = d.author
---- schema
create table authors (id int primary key, name text, bio text);
alter table authors alter column bio set storage external;
create table docs (id int primary key, author int);
---- before
insert into authors values (1, 'ann', repeat('b', 6000));
insert into docs values (10, 1);
---- stream
update authors set name = 'anne' where id = 1;
---- stream
insert into docs values (11, 1);
---- stream
begin; update authors set id = 2 where id = 1; update docs set author = 2; commit;
---- expect postgres select id, name, bl from corpus_out.docs_by order by id
10|anne|6000
11|anne|6000
---- expect status
docs_by live
---- expect readyz 200
---- expect verify 0
