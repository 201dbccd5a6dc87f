-- Dead letters an operator discarded (shipskip dead-letters discard SEQ --reason TEXT), kept for audit: the
-- message stays in the stream, is never folded, and is not set aside again when a rebuild replays it
-- (services/tally/store.py, record_dead_letters). Not part of the projection: a rebuild leaves it alone.

create table dead_letters_discarded (
    seq            bigint primary key,
    subject        text not null,
    data           bytea not null,
    died_because   text not null,         -- the dead letter's last reason
    recorded_at    timestamptz not null,  -- when it was set aside
    discard_reason text not null,
    discarded_at   timestamptz not null default now()
);
