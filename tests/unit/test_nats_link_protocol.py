"""The vote publisher's own NATS connection (services/votes/nats_link.py) reads the protocol however TCP cuts it.

A real server decides where its writes are split; the integration tests (tests/integration/test_vote_publisher.py,
tests/faults/) run against one, and this feeds the same kind of byte stream in every cut, down to one byte at a
time, to the protocol object alone: handshake, acks, status messages, pings, payloads holding CRLF.
"""

import asyncio
import json
from typing import Any

import pytest

from services.votes.nats_link import LinkUnsupported, Server, _Connection

INBOX = b"_INBOX.test."


class Transport:
    """What the connection writes, and whether it ended it."""

    def __init__(self) -> None:
        self.written = b""
        self.ended = False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.ended = True

    close = abort


def connection(replies: list[tuple[str, bytes, str | None]], lost: list[object]) -> tuple[_Connection, Transport]:
    made = _Connection(
        Server("127.0.0.1", 4222, user="u", password="p"),
        "test",
        INBOX,
        lambda token, data, status: replies.append((token, data, status)),
        lost.append,
    )
    transport = Transport()
    made.connection_made(transport)  # type: ignore[arg-type]
    return made, transport


def msg(subject: bytes, payload: bytes, reply: bytes = b"") -> bytes:
    return b"MSG %s 1 %s%d\r\n%s\r\n" % (subject, reply + b" " if reply else b"", len(payload), payload)


def hmsg(subject: bytes, headers: bytes, payload: bytes) -> bytes:
    return b"HMSG %s 1 %d %d\r\n%s%s\r\n" % (subject, len(headers), len(headers) + len(payload), headers, payload)


INFO = b'INFO {"server_id":"x","headers":true,"max_payload":1048576}\r\n'
STREAM = (
    INFO
    + b"PONG\r\n"
    + msg(b"_INBOX.test.1", b'{"stream":"VOTES","seq":1}')
    + hmsg(b"_INBOX.test.2", b"NATS/1.0 503\r\n\r\n", b"")
    + b"PING\r\n"
    + msg(b"other.subject", b"hi")
    + b"+OK\r\n"
    + msg(b"_INBOX.test.3", b"a\r\nb\r\n", reply=b"_INBOX.reply")
    + hmsg(b"_INBOX.test.4", b"NATS/1.0\r\nA: b\r\n\r\n", b"{}")
)
EXPECTED = [
    ("1", b'{"stream":"VOTES","seq":1}', None),
    ("2", b"", "503"),
    ("3", b"a\r\nb\r\n", None),
    ("4", b"{}", None),
]


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 16, 64, len(STREAM)])
async def test_every_cut_of_the_stream_reads_the_same(cut: int) -> None:
    replies: list[Any] = []
    lost: list[object] = []
    made, transport = connection(replies, lost)
    for start in range(0, len(STREAM), cut):
        made.data_received(STREAM[start : start + cut])
    await asyncio.sleep(0)  # the writes of this turn go out
    assert replies == EXPECTED
    assert made.ready.done()
    assert not lost
    assert not made.lost
    handshake, _, rest = transport.written.partition(b"\r\n")
    assert handshake.startswith(b"CONNECT ")
    options = json.loads(handshake[8:])
    assert (options["user"], options["pass"], options["headers"], options["no_responders"]) == ("u", "p", True, True)
    assert rest == b"SUB _INBOX.test.* 1\r\nPING\r\nPONG\r\n"  # and the server's PING answered
    made.close()


async def test_an_error_from_the_server_ends_the_connection() -> None:
    replies: list[Any] = []
    lost: list[object] = []
    made, transport = connection(replies, lost)
    made.data_received(INFO + b"PONG\r\n-ERR 'Authorization Violation'\r\n")
    assert made.lost
    assert lost == [made]
    assert transport.ended


async def test_a_refused_publish_keeps_the_connection() -> None:
    lost: list[object] = []
    made, transport = connection([], lost)
    made.data_received(INFO + b"PONG\r\n-ERR 'Permissions Violation for Publish to \"votes.v1.x\"'\r\n")
    assert not lost
    assert not made.lost
    assert not transport.ended


async def test_garbage_ends_the_connection() -> None:
    lost: list[object] = []
    made, _ = connection([], lost)
    made.data_received(INFO + b"PONG\r\nMSG _INBOX.test.1 1 notanumber\r\n")
    assert lost == [made]


async def test_a_server_asking_for_tls_is_not_spoken() -> None:
    made, _ = connection([], [])
    made.data_received(b'INFO {"headers":true,"tls_required":true}\r\n')
    with pytest.raises(LinkUnsupported, match="TLS"):
        await made.ready


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("nats://127.0.0.1:4222", Server("127.0.0.1", 4222)),
        ("nats://u:p%40ss@nats.example:4333", Server("nats.example", 4333, "u", "p@ss")),
        ("nats://s3cret@nats.example", Server("nats.example", 4222, token="s3cret")),
        ("127.0.0.1:5222", Server("127.0.0.1", 5222)),
    ],
)
def test_urls(url: str, server: Server) -> None:
    assert Server.parse(url) == server


@pytest.mark.parametrize("url", ["tls://nats.example:4222", "ws://nats.example:8080", "wss://nats.example"])
def test_urls_it_does_not_speak(url: str) -> None:
    with pytest.raises(LinkUnsupported):
        Server.parse(url)
