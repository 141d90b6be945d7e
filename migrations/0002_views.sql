-- The definition each materialized-view table was built from (target, key, query). A
-- view whose definition in the configuration differs is rebuilt, never left holding
-- what the old query returned.
create table if not exists pgderive.views (
  pipeline text not null,
  store text not null,
  view text not null,
  definition text not null,
  updated_at timestamptz not null default now(),
  primary key (pipeline, store, view)
);
