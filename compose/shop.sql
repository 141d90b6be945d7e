-- A small shop for the demo pipeline (scripts/demo.sh) and docker-compose: the tables
-- the example views of docs/configuration.md read. Idempotent: existing tables are kept.
create table if not exists products (
  id bigint primary key,
  sku text not null,
  title text not null,
  description text,
  price numeric(10, 2),
  tags text[],
  attrs jsonb,
  updated_at timestamptz not null default now()
);
create table if not exists customers (id bigint primary key, name text not null);
create table if not exists orders (
  id bigint primary key,
  customer_id bigint not null,
  amount numeric(10, 2) not null,
  created_at timestamptz not null default now()
);
insert into products (id, sku, title, description, price, tags, attrs)
select g, 'SKU-' || g, 'Product ' || g, 'A fine product number ' || g, (g % 200) + 0.99,
       array['tag' || (g % 5), 'all'], jsonb_build_object('color', (array['red', 'blue', 'green'])[1 + g % 3], 'size', g % 40)
from generate_series(1, 1000) g
on conflict do nothing;
insert into customers select g, 'Customer ' || g from generate_series(1, 100) g on conflict do nothing;
insert into orders (id, customer_id, amount)
select g, 1 + g % 100, (g % 90) + 10.50 from generate_series(1, 5000) g
on conflict do nothing;
