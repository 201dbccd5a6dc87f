"""Server-Sent Events framing (the WHATWG ``text/event-stream`` format) for the figures stream."""

RETRY = b"retry: 2000\n\n"
"""Sent first: how long a browser's EventSource waits before it reconnects (it then sends Last-Event-ID)."""

KEEPALIVE = b": keep-alive\n\n"
"""A comment line: EventSource ignores it; proxies and load balancers see a live connection."""


def event_frame(position: int, data: bytes) -> bytes:
    """One event: the position as its id, one line of JSON as its data."""
    if b"\n" in data or b"\r" in data:
        raise ValueError("SSE data must be one line")
    return b"id: %d\ndata: %s\n\n" % (position, data)
