"""Where a JetStream delivery stands: its stream sequence, its consumer sequence, and how many are still pending.

nats-py's public ``Msg.metadata`` tells the same, but builds a ``datetime`` and three frozen dataclasses for every
message to do it: 4.8 µs a message against 0.6 µs for the cut below (timed alone with ``timeit``, 200,000 messages,
2026-12-06), about half again what nats-py's own delivery of a message costs. The projector reads every vote and a
rebuild the whole stream, so both cut the reply subject instead, at the token positions nats-py names in ``Msg.Ack``
(tests/integration/test_pull.py checks the two agree on real deliveries). What upstream lacks: a way to read the
sequences without the rest of the metadata.
"""

from nats.aio.msg import Msg

_V1_TOKENS = 9
"""``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`` (older servers)."""


def delivery_sequences(reply: str) -> tuple[int, int, int]:
    """(stream sequence, consumer sequence, messages still pending) of a JetStream delivery, from its reply subject.

    Newer servers put a domain and an account hash before the stream, and may add a token at the end.
    """
    tokens = reply.split(".")
    if len(tokens) == _V1_TOKENS and tokens[0] == Msg.Ack.Prefix0:
        return int(tokens[5]), int(tokens[6]), int(tokens[8])
    if len(tokens) > Msg.Ack.NumPending and tokens[0] == Msg.Ack.Prefix0 and tokens[1] == Msg.Ack.Prefix1:
        return int(tokens[Msg.Ack.StreamSeq]), int(tokens[Msg.Ack.ConsumerSeq]), int(tokens[Msg.Ack.NumPending])
    raise ValueError(f"not a JetStream delivery: reply subject {reply!r}")
