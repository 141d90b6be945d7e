-- Which build of each view table serves (a rebuild fills a shadow table named after
-- the next generation and swaps it in), and whether pgderive created the table's
-- schema (teardown --views then removes it once empty).
alter table pgderive.views add column if not exists generation bigint not null default 0;
alter table pgderive.views add column if not exists made_schema boolean not null default false;
