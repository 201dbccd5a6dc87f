"""Contracts round-trip and refuse what they must."""

from datetime import UTC, datetime

import msgspec
import pytest

from contracts.catalog import CatalogError, decode_catalog, encode_catalog
from contracts.events import Origin, VoteCast, VoteRetracted, VoterForgotten, decode_event, encode_event
from contracts.http import VoteRequest
from infra.stack.bootstrap import DEMO_CATALOG

AT = datetime(2026, 11, 23, 12, 0, 1, 250000, tzinfo=UTC)


def test_events_round_trip_with_their_type_tag() -> None:
    cast = VoteCast("01J", "a-vs-b", "tool-a", "ship", "abc", AT, Origin(widget="https://site", client="f00"))
    retracted = VoteRetracted("01K", "a-vs-b", "tool-a", "abc", AT)
    for event in (cast, retracted):
        data = encode_event(event)
        assert decode_event(data) == event
    assert msgspec.json.decode(encode_event(cast))["type"] == "vote.cast/1"
    assert msgspec.json.decode(encode_event(retracted))["type"] == "vote.retracted/1"


def test_a_forget_holds_the_voter_hash_and_nothing_else_about_them() -> None:
    forgotten = VoterForgotten("01L", "ab" * 16, AT)
    data = encode_event(forgotten)
    assert decode_event(data) == forgotten
    assert msgspec.json.decode(data) == {
        "type": "voter.forgotten/1",
        "event_id": "01L",
        "voter_id": "ab" * 16,
        "at": "2026-11-23T12:00:01.250000Z",
    }


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"type": "vote.cast/1"}',
        b'{"type": "vote.unknown/1", "event_id": "x"}',
        b'{"type":"vote.cast/1","event_id":"e","comparison_id":"A B","tool_id":"t","verdict":"ship",'
        b'"voter_id":"v","at":"2026-11-23T00:00:00Z"}',
        b'{"type":"vote.cast/1","event_id":"e","comparison_id":"a","tool_id":"t","verdict":"maybe",'
        b'"voter_id":"v","at":"2026-11-23T00:00:00Z"}',
        b'{"type":"voter.forgotten/1","event_id":"e","voter_id":"v","at":"2026-11-23T00:00:00Z","token":"x.y"}',
    ],
)
def test_bad_events_do_not_decode(data: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_event(data)


def test_vote_requests_are_strict() -> None:
    decoder = msgspec.json.Decoder(VoteRequest)
    assert decoder.decode(b'{"tool_id": "t", "verdict": "skip"}') == VoteRequest("t", "skip")
    for bad in (b'{"tool_id": 3, "verdict": "ship"}', b'{"tool_id": "t", "verdict": "ship", "x": 1}'):
        with pytest.raises(msgspec.ValidationError):
            decoder.decode(bad)


def test_the_demo_catalogue_holds_both_seed_pages() -> None:
    catalog = decode_catalog(DEMO_CATALOG.read_bytes())
    assert [c.id for c in catalog.comparisons] == [
        "llama-4-scout-vs-windsurf-swe-1",
        "smolvlm2-2b-vs-windsurf-swe-1",
    ]
    panels = {t.id: (t.panel.ship, t.panel.skip) for t in catalog.tools}
    assert panels == {
        "llama-4-scout-fine-tuning-toolkit": (3, 1),
        "windsurf-swe-1": (4, 0),
        "smolvlm2-2b": (4, 0),
    }
    for tool in catalog.tools:
        assert tool.entry == "Free"
        assert tool.pitch
        assert len(tool.quotes) == 4
        assert sum(q.verdict == "ship" for q in tool.quotes) == tool.panel.ship
    assert decode_catalog(encode_catalog(catalog)) == catalog


@pytest.mark.parametrize(
    ("data", "names"),
    [
        (
            b'{"tools": [], "comparisons": [{"id": "Bad Id", "title": "t", "tools": ["a", "b"]}]}',
            "comparisons[0].id",
        ),
        (
            b'{"tools": [], "comparisons": [{"id": "ok", "title": "t", "tools": ["a", "b"]}]}',
            "comparisons[0].tools[0]",
        ),
        (b'{"tools": [],\n "comparisons": [}', "line 2"),
        (b'{"tools": [{"id": "' + b"x" * 65 + b'"}], "comparisons": []}', "tools[0].id"),
    ],
)
def test_catalogue_errors_name_the_fault(data: bytes, names: str) -> None:
    with pytest.raises(CatalogError, match="invalid catalogue") as error:
        decode_catalog(data)
    assert names in str(error.value)
