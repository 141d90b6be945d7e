-- E5: a postgres view grouping by two columns from a join, one of them NULL in some
-- groups; rows move into and out of the NULL group. Kind E2 (a NULL group is a row).
---- config
  - name: by_cust
    store: warehouse
    table: corpus_out.by_cust
    key: [region, tier]
    query: select c.region, c.tier, count(*) as n, sum(o.amount) as total from public.orders o join public.customers c on c.id = o.cust group by c.region, c.tier
---- schema
create table customers (id int primary key, region text, tier text);
create table orders (id int primary key, cust int references customers, amount int);
---- before
insert into customers values (1, 'eu', null), (2, null, 'gold'), (3, null, null);
insert into orders values (1, 1, 10), (2, 2, 20), (3, 3, 30);
---- stream
update customers set tier = 'gold' where id = 1;
---- stream
update customers set region = null where id = 1;
insert into orders values (4, 3, 5);
---- stream
update customers set tier = null where id = 2;
---- expect postgres select region, tier, n, total from corpus_out.by_cust order by region nulls first, tier nulls first
<null>|<null>|3|55
<null>|gold|1|10
---- expect status
by_cust live
---- expect readyz 200
---- expect verify 0
