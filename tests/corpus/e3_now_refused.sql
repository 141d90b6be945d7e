-- E3 (the other side of the kind): a query calling now() - STABLE, its result changes
-- without a change of the source - is still refused, by validate and run, naming the
-- function it resolved to.
---- config
  - name: u_ages
    store: warehouse
    table: public.u_ages
    key: [id]
    query: select id, now() - t as age from public.u
---- schema
create table u (id int primary key, t timestamptz);
---- expect validate 2
the query calls now()
whose result changes without a change of the source
