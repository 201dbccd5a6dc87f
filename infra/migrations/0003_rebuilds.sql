-- Rebuilds and verifications that operators ran, with their progress (shipskip status, /admin).

create table rebuild_runs (
    id            bigserial primary key,
    kind          text not null check (kind in ('rebuild', 'verify')),
    comparison_id text,                       -- null: every comparison
    state         text not null check (state in ('running', 'done', 'failed')),
    done          bigint not null default 0,  -- events folded so far
    total         bigint not null default 0,  -- events to fold (grows while catching up)
    started_at    timestamptz not null default now(),
    finished_at   timestamptz,
    detail        text not null default ''
);
