-- E2 (an upgrade): a target table made by an older pgderive is keyed by a primary key,
-- whose NOT NULL refuses a NULL group. At start pgderive replaces that key with the
-- unique index NULLS NOT DISTINCT a new target gets, and the NULL group arrives.
---- config
  - name: sales_by_region
    store: warehouse
    table: public.sales_by_region
    key: [region]
    query: select region, count(*) as n from public.sales group by region
---- schema
create table sales (id int primary key, region text);
---- before
insert into sales values (1, 'eu'), (2, 'us');
---- stream
alter table public.sales_by_region add primary key (region);
---- restart
---- stream
insert into sales values (3, null), (4, null);
---- stream
update sales set region = null where id = 1;
---- expect postgres select region, n from public.sales_by_region order by region nulls first
<null>|3
us|1
---- expect postgres select count(*) from pg_constraint where conrelid = 'public.sales_by_region'::regclass and contype = 'p'
0
---- expect status
sales_by_region live
---- expect readyz 200
---- expect verify 0
