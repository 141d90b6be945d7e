-- E2: postgres views grouping by a column that is NULL in some rows, keyed by it. Kind:
-- a NULL key is a group like any other - the target's key is a unique index with NULLS
-- NOT DISTINCT, and every place a key is compared (recompute, deletes, verify) treats
-- NULLs as equal.
---- config
  - name: sales_by_region
    store: warehouse
    table: public.sales_by_region
    key: [region]
    query: select region, count(*) as n, sum(amount) as total from public.sales group by region
  - name: sales_by_region_channel
    store: warehouse
    table: public.sales_by_region_channel
    key: [region, channel]
    query: select region, channel, count(*) as n from public.sales group by region, channel
---- schema
create table sales (id int primary key, region text, channel text, amount numeric(10,2));
---- before
insert into sales values (1, 'eu', 'web', 10), (2, null, 'web', 20), (3, null, null, 5), (4, 'us', null, 7);
---- stream
insert into sales values (5, null, 'shop', 1.50);
---- stream
update sales set region = 'eu' where id = 2;
---- stream
update sales set region = null where id = 4;
delete from sales where id = 1;
---- restart
---- stream
insert into sales values (6, 'us', null, 3), (7, null, null, 2);
---- expect postgres select region, n, total from public.sales_by_region order by region nulls first
<null>|4|15.50
eu|1|20.00
us|1|3.00
---- expect postgres select region, channel, n from public.sales_by_region_channel order by region nulls first, channel nulls first
<null>|<null>|3
<null>|shop|1
eu|web|1
us|<null>|1
---- expect status
sales_by_region live
sales_by_region_channel live
---- expect readyz 200
---- expect verify 0
