"""decode_records decides every stored message as the contract's decoder does: the same events, the same dead letters
with the same reasons, although it checks a vote's ids its own way (services/tally/store.py ``_decode``)."""

import msgspec
import pytest

from contracts.events import Event, decode_event, encode_event
from contracts.subjects import votes_subject
from services.tally.store import decode_records, expected_subject

AT = '"at":"2026-11-23T10:00:00Z"'


def cast(comparison: str = "a-vs-b", tool: str = "tool-a", extra: str = "") -> bytes:
    return (
        f'{{"type":"vote.cast/1","event_id":"e1","comparison_id":{comparison},"tool_id":{tool},"verdict":"ship",'
        f'"voter_id":"v1",{AT}{extra}}}'
    ).encode()


def retracted(comparison: str = "a-vs-b", tool: str = "tool-a") -> bytes:
    return (
        f'{{"type":"vote.retracted/1","event_id":"e2","comparison_id":{comparison},"tool_id":{tool},'
        f'"voter_id":"v1",{AT},"origin":{{"client":"c1"}}}}'
    ).encode()


LONGEST = "a" * 64
STORED = [
    cast('"a-vs-b"', '"tool-a"'),
    cast('"a-vs-b"', '"tool-a"', ',"origin":{"widget":"https://site","client":"c1"}'),
    retracted('"a-vs-b"', '"tool-a"'),
    cast('"A-vs-b"', '"tool-a"'),  # capitals: not a slug
    cast('"a-vs-b"', '"-tool"'),  # a leading hyphen
    retracted('"a vs b"', '"tool-a"'),
    cast(f'"{LONGEST}"', '"tool-a"'),  # 64 characters: the longest slug
    cast(f'"{LONGEST}a"', '"tool-a"'),  # 65: too long
    cast('"a-vs-b\\n"', '"tool-a"'),  # a trailing newline, which a bare "$" lets through
    cast('""', '"tool-a"'),
    cast("7", '"tool-a"'),  # not a string
    cast('"a-vs-b"', '"tool-a"', ',"unknown":1'),
    cast('"a-vs-b"', '"tool-a"', ',"verdict":"maybe"'),
    b'{"type":"vote.cast/0","event_id":"e3","comparison_id":"a-vs-b","tool_id":"tool-a","ship":false,'
    b'"voter_id":"v2","cast_at":"2026-11-23T10:00:00Z"}',
    b'{"type":"vote.cast/0","event_id":"e3","comparison_id":"A","tool_id":"tool-a","ship":false,'
    b'"voter_id":"v2","cast_at":"2026-11-23T10:00:00Z"}',
    b'{"type":"voter.voided/1","event_id":"e4","voter_id":"v1","reason":"spam",' + AT.encode() + b"}",
    b"not json",
    b'{"type":"vote.unknown/1"}',
]


def contract_verdict(data: bytes) -> bytes | str:
    """What the contract's own decoder makes of ``data``: the event encoded again, or its error."""
    try:
        return encode_event(decode_event(data))
    except msgspec.DecodeError as exc:
        return f"undecodable event: {exc}"


@pytest.mark.parametrize("data", STORED, ids=range(len(STORED)))
def test_each_message_decodes_or_fails_as_the_contract_decides(data: bytes) -> None:
    expected = contract_verdict(data)
    subject = expected_subject(decode_event(data)) if isinstance(expected, bytes) else votes_subject("a-vs-b")
    for _ in range(2):  # the second time, the ids' checks come from what the first one remembered
        events, dead = decode_records([(1, subject, data)])
        if isinstance(expected, bytes):
            assert dead == []
            assert [encode_event(event) for _, event in events] == [expected]
            assert all(isinstance(event, type(decode_event(data))) for _, event in events)
        else:
            assert events == []
            assert [reason for _, reason in dead] == [expected]


def test_decoded_votes_are_the_contract_events_to_the_fold() -> None:
    events, _ = decode_records([(1, votes_subject("a-vs-b"), cast('"a-vs-b"', '"tool-a"'))])
    event: Event = events[0][1]
    assert isinstance(event, type(decode_event(cast('"a-vs-b"', '"tool-a"'))))
