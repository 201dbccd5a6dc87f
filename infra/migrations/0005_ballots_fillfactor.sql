-- Room on each page of ballots for a row's next version. A ballot is rewritten in place at every change of
-- mind, and the new version is a heap-only tuple (HOT) when it fits on the same page: no new entries in the
-- primary key or in ballots_by_voter, and less WAL. Full pages (the default fillfactor, 100) made 93 % of the
-- ballot updates of the ingest benchmark non-HOT; at 80 Postgres spent 12 % less CPU per vote
-- (BENCH_ONLY=ingest, two runs each way). Pages written from now on keep the room; a rebuild rewrites them all.
alter table ballots set (fillfactor = 80);
