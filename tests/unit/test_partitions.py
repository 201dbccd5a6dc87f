"""Partitioned projectors, the pure parts: the settings, the comparison -> partition mapping, the stream's
routing and the consumers' filters, the per-partition notice chains. (The mapping against nats-server's own
partition(): tests/integration/test_partitions.py.)"""

import pytest
from nats.js.api import StreamConfig, SubjectTransform

from contracts.notices import TallyChanged, decode_notice
from contracts.subjects import MODERATION_SUBJECT, published_subject, votes_subject
from services.shared.config import ConfigError, Env
from services.tally.partitions import Partition, fnv1a_32, layout_of, partition_name, partition_of
from services.tally.read.standings import NoticeChain
from services.tally.routing import OTHER_ROUTING, consumer_filters, routing_of, routing_transform
from services.tally.settings import TallySettings

BASE = {
    "SHIPSKIP_NATS_URL": "nats://127.0.0.1:1",
    "SHIPSKIP_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
    "SHIPSKIP_REDIS_URL": "redis://127.0.0.1:1/0",
}


def settings(**extra: str) -> TallySettings:
    return TallySettings.from_env(Env({**BASE, **extra}, {}))


def test_one_partition_by_default_and_a_projector_folds_every_partition_unless_told() -> None:
    assert (settings().partitions, settings().projector_partitions) == (1, (0,))
    assert settings(SHIPSKIP_PARTITIONS="3").projector_partitions == (0, 1, 2)
    chosen = settings(SHIPSKIP_PARTITIONS="4", SHIPSKIP_PROJECTOR_PARTITIONS=" 3, 1")
    assert chosen.projector_partitions == (1, 3)


P = "SHIPSKIP_PROJECTOR_PARTITIONS"


@pytest.mark.parametrize(
    ("env", "named", "says"),
    [
        ({"SHIPSKIP_PARTITIONS": "0"}, "SHIPSKIP_PARTITIONS", "out of range"),
        ({"SHIPSKIP_PARTITIONS": "two"}, "SHIPSKIP_PARTITIONS", "not a whole number"),
        ({"SHIPSKIP_PARTITIONS": "2", P: "2"}, P, "0 to 1"),
        ({P: "1"}, P, "SHIPSKIP_PARTITIONS=1"),
        ({"SHIPSKIP_PARTITIONS": "2", P: "-1"}, P, "-1"),
        ({"SHIPSKIP_PARTITIONS": "2", P: "x"}, P, "'x'"),
        ({"SHIPSKIP_PARTITIONS": "2", P: "1,1"}, P, "twice"),
    ],
)
def test_a_bad_partition_setting_is_refused_with_one_line_naming_the_variable(
    env: dict[str, str], named: str, says: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(**env)
    message = str(refused.value)
    assert named in message
    assert says in message
    assert "\n" not in message


def test_fnv1a_is_the_standard_32_bit_hash() -> None:
    # Published FNV-1a test vectors.
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968


def test_each_comparison_belongs_to_exactly_one_partition_and_every_partition_takes_the_voids() -> None:
    comparisons = [f"tool-{i}-vs-tool-{i + 1}" for i in range(200)]
    for count in (1, 2, 3, 8):
        partitions = [Partition(index, count) for index in range(count)]
        for comparison_id in comparisons:
            owners = [p for p in partitions if p.owns(votes_subject(comparison_id))]
            assert len(owners) == 1
            assert owners[0].index == partition_of(comparison_id, count)
        assert all(p.owns(MODERATION_SUBJECT) for p in partitions)
        # Stable: the same answer on a second asking (cached) as on the first.
        assert [p.owns(votes_subject(comparisons[0])) for p in partitions] == [
            p.owns_comparison(comparisons[0]) for p in partitions
        ]
    # Spread: no partition of four left empty by 200 comparisons.
    assert {partition_of(c, 4) for c in comparisons} == {0, 1, 2, 3}


def test_partition_names_are_the_consumer_and_position_row_names() -> None:
    assert partition_name(0, 1) == "tally"  # unpartitioned: what it always was
    assert partition_name(1, 2) == "tally-1-of-2"
    assert layout_of("tally") == 1
    assert layout_of("tally-1-of-2") == 2
    assert layout_of("tally-x") is None
    with pytest.raises(ValueError, match="not one of"):
        Partition(2, 2)


def test_a_notice_without_a_partition_is_from_the_unpartitioned_projector() -> None:
    old = b'{"type":"tally.changed/1","comparison_id":"a-vs-b","position":5,"previous":2,"tools":[]}'
    assert decode_notice(old) == TallyChanged("a-vs-b", 5, 2, [], partition="tally")


def test_each_partition_chains_its_own_notices() -> None:
    """Two partitions commit independently: their positions interleave and do not rise in commit order."""
    chain = NoticeChain()
    a, b = "tally-0-of-2", "tally-1-of-2"
    assert chain.observe(120, 0, a) is False
    assert chain.observe(150, 0, b) is False
    assert chain.observe(140, 120, a) is False  # lower than b's last: no gap, no reload
    assert chain.observe(200, 140, a) is False
    # b's batch 180 never arrived; a single chain over both would have taken 200 -> 250 as unbroken.
    assert chain.observe(250, 180, b) is True
    assert chain.observe(260, 200, a) is False
    assert chain.position == 260
    chain.reloaded({a: 260, b: 250})
    assert chain.observe(270, 250, b) is False


def test_an_event_stored_routed_or_not_keeps_its_comparison() -> None:
    assert published_subject("votes.v1.a-vs-b") == "votes.v1.a-vs-b"
    assert published_subject("votes.v1.r2.1.a-vs-b") == "votes.v1.a-vs-b"
    assert published_subject("votes.v1.r3.0._moderation") == MODERATION_SUBJECT
    owner = Partition(partition_of("a-vs-b", 2), 2)
    assert owner.owns("votes.v1.r2.1.a-vs-b") == owner.owns("votes.v1.a-vs-b") is True
    assert Partition(1 - owner.index, 2).owns("votes.v1.r2.0._moderation")


def test_the_stream_routing_is_recognised_from_its_transform() -> None:
    assert routing_of(StreamConfig(name="VOTES")) is None
    assert routing_of(StreamConfig(name="VOTES", subject_transform=routing_transform(4))) == 4
    other = SubjectTransform(src="votes.v1.*", dest="votes.v1.x.{{wildcard(1)}}")
    assert routing_of(StreamConfig(name="VOTES", subject_transform=other)) == OTHER_ROUTING


def test_a_consumer_reads_only_its_routed_subjects_when_that_is_safe_and_everything_otherwise() -> None:
    moderation = partition_of("_moderation", 2)
    mine, other = Partition(moderation, 2), Partition(1 - moderation, 2)
    # Unpartitioned and unrouted: exactly the filter of before partitioning.
    assert consumer_filters(Partition(0, 1), None, None, 0) == ["votes.v1.*"]
    # Routed by the layout's N, recorded from sequence 50 on, and the partition is past 49.
    assert consumer_filters(mine, 2, (2, 50), 49) == ["votes.v1.*", f"votes.v1.r2.{moderation}.*"]
    assert consumer_filters(other, 2, (2, 50), 70) == [
        "votes.v1.*",
        f"votes.v1.r2.{other.index}.*",
        f"votes.v1.r2.{moderation}._moderation",
    ]
    everything = ["votes.v1.>"]
    assert consumer_filters(mine, 2, (2, 50), 48) == everything  # events before the routing may be of another
    assert consumer_filters(mine, None, None, 0) == everything  # not routed (yet)
    assert consumer_filters(mine, 3, (2, 50), 70) == everything  # a re-partitioning rebuild began, or failed
    assert consumer_filters(mine, 2, None, 70) == everything  # routed, but no rebuild recorded it
    assert consumer_filters(mine, OTHER_ROUTING, (2, 50), 70) == everything
    assert consumer_filters(Partition(0, 1), 2, None, 70) == everything
