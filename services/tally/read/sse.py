"""The live figures stream: one fan-out per change, however many pages are listening.

Each open stream is an async generator waiting on its comparison's "next change" event. A change sets that one
event, which wakes every waiter; each then sends the view's current pre-encoded SSE frame (the bytes are shared,
nothing is encoded or queried per client). A client slower than the changes skips to the latest figures rather
than queueing old ones. When a client goes away Litestar cancels its generator at once and ``finally`` counts it
out; a comment line every ``keepalive_s`` keeps idle connections open through proxies.

A stream is counted in (in all, and under its client address) when the request is admitted, before anything is
awaited: counted when the generator first ran, a burst of requests from one address would all pass the check
before any of them counted. A generator that never runs (the client left before its first frame) gives its place
back when it is collected.
"""

import asyncio
import logging
import signal
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Literal

from services.tally.read.sse_frames import KEEPALIVE, RETRY
from services.tally.read.view import CommunityView, Rendered

log = logging.getLogger(__name__)


Refusal = Literal["process_full", "address_full"]


class StreamSlot:
    """One admitted stream's place in the counts; given back once, however many ways its stream ends."""

    __slots__ = ("__weakref__", "_address", "_broadcast")

    def __init__(self, broadcast: "FiguresBroadcast", address: str | None) -> None:
        self._broadcast: FiguresBroadcast | None = broadcast
        self._address = address

    def release(self) -> None:
        broadcast, self._broadcast = self._broadcast, None
        if broadcast is not None:
            broadcast.released(self._address)


class FiguresBroadcast:
    def __init__(self, view: CommunityView, keepalive_s: float, max_clients: int, max_per_address: int) -> None:
        self._view = view
        self._keepalive_s = keepalive_s
        self.max_clients = max_clients
        self.max_per_address = max_per_address
        self._next_change: dict[str, asyncio.Event] = {}
        self.clients = 0
        """Open streams in this process."""
        self._per_address: dict[str | None, int] = {}
        """Open streams per client address (no entry: none)."""
        self.closing = False
        view.on_change(self.changed)

    def changed(self, comparison_ids: set[str]) -> None:
        """Wake every stream of these comparisons: one event set per comparison."""
        for comparison_id in comparison_ids:
            event = self._next_change.pop(comparison_id, None)
            if event is not None:
                event.set()

    def close(self) -> None:
        """End every stream (the process is stopping; EventSource reconnects, to another process)."""
        self.closing = True
        events, self._next_change = self._next_change, {}
        for event in events.values():
            event.set()

    def refusal(self, address: str | None) -> Refusal | None:
        """Why a stream from ``address`` cannot be admitted now, if it cannot."""
        if self.clients >= self.max_clients:
            return "process_full"
        if self._per_address.get(address, 0) >= self.max_per_address:
            return "address_full"
        return None

    def admit(self, address: str | None) -> StreamSlot:
        """Count a stream in; its ``stream`` gives the place back when it ends."""
        self.clients += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        return StreamSlot(self, address)

    def released(self, address: str | None) -> None:
        self.clients -= 1
        left = self._per_address[address] - 1
        if left:
            self._per_address[address] = left
        else:
            del self._per_address[address]

    def stream(self, comparison_id: str, last_event_id: str | None, slot: StreamSlot) -> AsyncIterator[bytes]:
        """The event stream of one comparison: the current figures unless the client has them, then each change."""
        frames = self._frames(comparison_id, last_event_id, slot)
        weakref.finalize(frames, slot.release)  # a generator that never ran has no ``finally`` to run
        return frames

    async def _frames(self, comparison_id: str, last_event_id: str | None, slot: StreamSlot) -> AsyncIterator[bytes]:
        try:
            sent = self._view.get(comparison_id)
            if sent is None:
                return
            if last_event_id is not None and last_event_id.strip() == str(sent.position):
                yield RETRY  # the client already shows these figures
            else:
                yield RETRY + sent.event
            while not self.closing:
                next_change = self._next_change.setdefault(comparison_id, asyncio.Event())
                current: Rendered | None = self._view.get(comparison_id)
                if current is None:
                    return  # the comparison left the catalogue
                if current is not sent:
                    sent = current
                    yield current.event
                    continue
                try:
                    async with asyncio.timeout(self._keepalive_s):
                        await next_change.wait()
                except TimeoutError:
                    yield KEEPALIVE
        finally:
            slot.release()


def close_on_stop_signal(close: Callable[[], None]) -> Callable[[], None]:
    """Call ``close`` (on the running loop) when the process is told to stop; returns the undo.

    granian stops a worker gracefully: it waits for every open response to finish before the app's shutdown runs,
    and a stream never finishes by itself. Its own handler stays in charge (asyncio dispatches signals through its
    wake-up fd, whatever Python-level handler is installed), so this only adds the closing of the streams.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals reach the main thread only (an app run by a test client in a thread)
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(close)
        handler = previous[signal.Signals(signum)]
        if callable(handler):
            handler(signum, frame)

    for sig in previous:
        signal.signal(sig, on_signal)

    def undo() -> None:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is on_signal and handler is not None:
                signal.signal(sig, handler)

    return undo
