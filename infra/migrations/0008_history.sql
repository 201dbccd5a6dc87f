-- The history projection (services/tally/history.py): every tool's counted ship and skip at any minute.
-- Derived from the VOTES stream like the tallies, written in the same transaction; shipskip rebuild rebuilds it.

-- Per comparison, tool and minute (whole minutes since the Unix epoch, UTC), the net change of the counted
-- ballots stamped in that minute. A figure as it stood at minute E: the sum of the rows before E.
create table tally_history (
    comparison_id text not null,
    tool_id       text not null,
    minute        bigint not null,
    ship          bigint not null default 0,
    skip          bigint not null default 0,
    primary key (comparison_id, tool_id, minute)
);

-- Per ballot, the changes it made to tally_history (services/tally/history.py: entry), so that voiding a voter
-- takes exactly their changes out of every minute, past minutes included. Null once the ballot does not count:
-- a voided voter's entries are erased with their contribution. Ballots cast before this migration have none:
-- `shipskip rebuild` fills the history in from the stream.
alter table ballots add column history bigint[];
