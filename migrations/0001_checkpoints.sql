-- Each store's checkpoint, where the store is a PostgreSQL database: the LSN up to
-- which its views are complete, written in the same transaction as their rows.
create table if not exists pgderive.checkpoints (
  pipeline text not null,
  store text not null,
  lsn pg_lsn not null,
  updated_at timestamptz not null default now(),
  primary key (pipeline, store)
);
