-- Partitioned projectors (SHIPSKIP_PARTITIONS, services/tally/partitions.py). Each partition has its own row in
-- projection_position, named like its consumer: 'tally' unpartitioned (so existing databases need nothing new
-- there), 'tally-<i>-of-<N>' otherwise.
--
-- Change notices are chained per partition: partitions commit independently, so the positions of their batches
-- do not rise in commit order and one chain over all comparisons could hide a missed notice. Per partition, the
-- position of its last batch that changed any comparison (what its next notice names as 'previous').

create table if not exists partition_changes (
    partition text primary key,
    seq       bigint not null
);

-- Until now there was one partition, 'tally', and the maximum of comparison_positions chained its notices.
insert into partition_changes (partition, seq)
select 'tally', max(seq) from comparison_positions having count(*) > 0
on conflict (partition) do nothing;

-- The stream's routing by partition (services/tally/routing.py), as the rebuild that set it recorded it: events
-- from stream sequence 'since' on are stored under routed subjects. No row: the stream does not route.
create table if not exists stream_routing (
    partitions integer not null,
    since      bigint not null
);
