-- The tally projection: one ballot per voter, comparison and tool; the counts; how far the stream was folded.
-- Everything here is derived from the VOTES stream and can be rebuilt from it (shipskip rebuild).

create table ballots (
    comparison_id text not null,
    tool_id       text not null,
    voter_id      text not null,
    verdict       text check (verdict in ('ship', 'skip')),  -- null: retracted (or never cast)
    seq           bigint not null,                            -- the stream sequence of the event that set it
    counted       boolean,                                    -- null until its first cast decides it
    primary key (comparison_id, tool_id, voter_id)
);
create index ballots_by_voter on ballots (voter_id);

-- No check (ship >= 0): Postgres checks the proposed row of an upsert, whose columns hold deltas.
create table tallies (
    comparison_id  text not null,
    tool_id        text not null,
    ship           bigint not null default 0,
    skip           bigint not null default 0,
    uncounted_ship bigint not null default 0,  -- kept by the counting policy or moderation, not shown
    uncounted_skip bigint not null default 0,
    primary key (comparison_id, tool_id)
);

-- The counting policy: new ballots counted per comparison, client-address hash and UTC day.
create table client_quotas (
    comparison_id text not null,
    client        text not null,
    day           text not null,
    ballots       integer not null,
    primary key (comparison_id, client, day)
);

create table voided_voters (
    voter_id text primary key,
    seq      bigint not null,
    reason   text not null
);

-- Written in the same transaction as the rows it accounts for.
create table projection_position (
    projection text primary key,
    seq        bigint not null
);

-- Not part of the projection: messages the projector could not decode, kept for operators.
create table dead_letters (
    seq         bigint primary key,
    subject     text not null,
    data        bytea not null,
    reason      text not null,
    recorded_at timestamptz not null default now()
);
