-- The tally projection: one ballot per voter, comparison and tool; the counts; how far the stream was folded.

create table ballots (
    comparison_id text not null,
    tool_id       text not null,
    voter_id      text not null,
    verdict       text check (verdict in ('ship', 'skip')),  -- null: retracted
    seq           bigint not null,                            -- the stream sequence of the event that set it
    primary key (comparison_id, tool_id, voter_id)
);

create table tallies (
    comparison_id text not null,
    tool_id       text not null,
    -- No check (ship >= 0): Postgres checks the proposed row of an upsert, whose columns hold deltas.
    ship          bigint not null default 0,
    skip          bigint not null default 0,
    primary key (comparison_id, tool_id)
);

-- Written in the same transaction as the ballots and tallies it accounts for.
create table projection_position (
    projection text primary key,
    seq        bigint not null
);

create table dead_letters (
    seq         bigint primary key,
    subject     text not null,
    data        bytea not null,
    reason      text not null,
    recorded_at timestamptz not null default now()
);
