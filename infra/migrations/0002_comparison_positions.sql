-- Per comparison, the position of the last batch that changed its tallies (written in that batch's
-- transaction). It is the read API's ETag and SSE event id, so caches of untouched comparisons stay warm
-- across restarts and agree between read-API processes; its maximum chains the change notices.

create table comparison_positions (
    comparison_id text primary key,
    seq           bigint not null
);
create index comparison_positions_by_seq on comparison_positions (seq);

-- Tallies folded before this table existed hold every event up to the projector's position.
insert into comparison_positions (comparison_id, seq)
select distinct t.comparison_id, p.seq
from tallies t cross join projection_position p
where p.projection = 'tally';
