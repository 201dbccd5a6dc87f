-- Voters who asked to be forgotten (DELETE /v1/voters/me, event voter.forgotten/1), with the stream sequence of
-- their first forget. Part of the projection (a rebuild makes it again from the stream): none of their ballots
-- holds a verdict, then or later (services/tally/fold.py). They are among voided_voters too, as any void.

create table forgotten_voters (
    voter_id text primary key,
    seq      bigint not null
);
