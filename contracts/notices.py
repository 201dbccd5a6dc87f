"""Change notices: what the projector announces on ``tally.v1.<comparison_id>`` after each committed batch.

A notice carries the comparison's new absolute counts, so a reader applies it without reading Postgres, and
two positions that chain the notices together: ``previous`` is the position of the batch before this one that
changed anything (in the same projector partition: each chains its own). A reader whose last seen position is
not ``previous`` has missed a notice and reloads.
Core NATS delivers at most once, so the chain, not the transport, is what makes a reader's view trustworthy.
"""

import msgspec


class ToolTally(msgspec.Struct, frozen=True):
    """One tool's counted ballots in one comparison, after the batch."""

    tool_id: str
    ship: int
    skip: int


class TallyChanged(msgspec.Struct, frozen=True, tag_field="type", tag="tally.changed/1"):
    """One comparison's figures changed. Readers ignore fields they do not know, so fields may be added."""

    comparison_id: str
    position: int
    """The stream sequence of the batch that changed it: the counts hold every event up to here."""
    previous: int
    """The position of the previous batch of the same partition that changed any comparison (0 before the first)."""
    tools: list[ToolTally]
    """Every tool of the comparison that has a tally row; a tool not listed has no ballots."""
    partition: str = "tally"
    """The projector partition that folded the batch ("tally": unpartitioned); each partition chains its own
    notices, as partitions commit independently."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(TallyChanged)


def encode_notice(notice: TallyChanged) -> bytes:
    return _encoder.encode(notice)


def decode_notice(data: bytes) -> TallyChanged:
    """Raises msgspec.DecodeError (a ValidationError for a wrong shape) on anything else."""
    return _decoder.decode(data)
