-- E3: postgres view `select id, length(v) as n from public.u`. Kind: volatility is
-- judged per function the query actually calls (its OID), not per name: length(text)
-- is immutable though another overload of length is only stable.
---- config
  - name: u_lengths
    store: warehouse
    table: public.u_lengths
    key: [id]
    query: select id, length(v) as n from public.u
---- schema
create table u (id int primary key, v text);
---- before
insert into u values (1, 'abc'), (2, null);
---- stream
insert into u values (3, 'hello');
update u set v = 'abcdef' where id = 1;
---- stream
delete from u where id = 2;
---- expect postgres select id, n from public.u_lengths order by id
1|6
3|5
---- expect status
u_lengths live
---- expect readyz 200
---- expect verify 0
