"""The replay's pull requests (services/tally/rebuild/replay_wire.py): what it asks the server for stays within the
room the replay has, a request that expires (408) is asked again, and what ends the consumer is trouble.

The integration tests (tests/integration/test_replay.py) read real streams; here the session's bookkeeping is fed
deliveries and status messages directly, and what it writes is read back.
"""

import json
import re

import pytest

from services.shared.nats_wire import Server, WireConnection
from services.tally.rebuild.replay_wire import PullSession, _PullConnection


class Wire:
    """Stands in for the connection's writes."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.lost = False

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        self.lost = True

    def asked(self) -> list[int]:
        """The batch of each pull request written so far."""
        return [json.loads(frame.split(b"\r\n")[1])["batch"] for frame in self.frames]


class Replay:
    def __init__(self, room: int) -> None:
        self.room = room
        self.delivered: list[int] = []
        self.trouble: list[str] = []


def session(replay: Replay, batch_size: int = 100) -> tuple[PullSession, Wire]:
    made = PullSession(
        None,  # type: ignore[arg-type]  # JetStream is not asked in these
        [Server("127.0.0.1", 4222)],
        ["votes.v1.>"],
        batch_size,
        lambda seq, *_: replay.delivered.append(seq),
        replay.trouble.append,
        lambda: replay.room,
    )
    wire = Wire()
    made._connection = wire  # type: ignore[assignment]
    made.consumer = "c"
    made._next_subject = b"$JS.API.CONSUMER.MSG.NEXT.VOTES.c "
    return made, wire


def token_of(frame: bytes) -> bytes:
    match = re.match(rb"PUB \S+ _INBOX\.\w+\.(\d+) ", frame)
    assert match is not None
    return match.group(1)


def test_it_asks_for_the_room_in_batches_and_no_more() -> None:
    replay = Replay(room=340)
    pull, wire = session(replay)
    pull.ask()
    assert wire.asked() == [100, 100, 100]  # 40 left: under half a batch, not worth a request
    pull.ask()
    assert wire.asked() == [100, 100, 100]  # all of it is asked for already
    for seq in range(1, 101):
        pull.delivered(seq, seq, 1000 - seq, "votes.v1.a", b"{}")
    replay.room = 340 - 100  # the replay took them in: its buffer holds them
    pull.ask()
    assert wire.asked() == [100, 100, 100]
    replay.room = 340  # and folded them
    pull.ask()
    assert wire.asked() == [100, 100, 100, 100]
    assert replay.delivered == list(range(1, 101))


def test_a_request_that_expired_is_asked_again() -> None:
    replay = Replay(room=100)
    pull, wire = session(replay)
    pull.ask()
    pull.delivered(1, 1, 0, "votes.v1.a", b"{}")  # the stream's end: 99 of the request are still to come
    pull.ended(token_of(wire.frames[0]), "408", "Request Timeout")
    assert wire.asked() == [100, 100]  # room for 100 again, nothing outstanding: asked once more
    pull.ended(token_of(wire.frames[1]), "100", "Idle Heartbeat")  # not an end: nothing asked
    assert wire.asked() == [100, 100]
    assert replay.trouble == []


@pytest.mark.parametrize(
    ("status", "description"), [("409", "Consumer Deleted"), ("503", "")], ids=["deleted", "no responders"]
)
def test_a_consumer_that_is_no_more_is_trouble(status: str, description: str) -> None:
    replay = Replay(room=100)
    pull, wire = session(replay)
    pull.ask()
    pull.ended(token_of(wire.frames[0]), status, description)
    assert len(replay.trouble) == 1
    assert wire.lost
    pull.ask()
    assert wire.asked() == [100]  # a closed session asks nothing more


def test_a_skipped_consumer_sequence_is_trouble_and_nothing_after_it_is_delivered() -> None:
    replay = Replay(room=100)
    pull, _ = session(replay)
    pull.delivered(7, 1, 5, "votes.v1.a", b"{}")
    pull.delivered(9, 3, 3, "votes.v1.a", b"{}")  # consumer sequence 2 never came
    pull.delivered(10, 4, 2, "votes.v1.a", b"{}")
    assert replay.delivered == [7]
    assert replay.trouble == ["the consumer skipped from 1 to 3"]


async def test_the_connection_reads_deliveries_and_the_end_of_a_request() -> None:
    replay = Replay(room=100)
    pull, _ = session(replay)
    ended: list[tuple[bytes, str | None, str]] = []
    pull.ended = lambda token, status, description: ended.append((token, status, description))  # type: ignore[method-assign]
    inbox = b"_INBOX.test."
    connection = _PullConnection(Server("127.0.0.1", 4222), inbox, pull)
    connection._got_info = True
    headers = b"NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n"
    delivery = b"HMSG votes.v1.a 1 $JS.ACK.VOTES.c.1.41.1.1764680000000000000.9 %d %d\r\n%s{}\r\n" % (
        len(headers),
        len(headers) + 2,
        headers,
    )
    status = b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 99\r\n\r\n"
    end = b"HMSG %s7 1 %d %d\r\n%s\r\n" % (inbox, len(status), len(status), status)
    WireConnection.data_received(connection, delivery + end)
    assert replay.delivered == [41]
    assert ended == [(b"7", "408", "Request Timeout")]
