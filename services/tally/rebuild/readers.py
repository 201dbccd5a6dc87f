"""A rebuild's first pass reads the stream in parallel: ``READERS`` processes, each over ranges of its own.

Reading through nats-py costs a process more CPU per message than the fold does (its parser, a ``Msg`` and a
queue hop per message; bench/rebuild_parts.py), so one reading process sets the pace of a rebuild whatever the fold
costs. The stream's sequences up to the head are cut into ranges of ``CHUNK`` at most, dealt out in turn: reader
``r`` reads ranges ``r``, ``r + READERS``, ... each with a ``StreamReplay`` of its own (an ephemeral consumer from
the range's first sequence, asking for nothing past its last), over its own connection (``connect``: the same TLS
and login as every process). Each sends its batches as three columns on a pipe of its own, and an end mark after
each range; the fold worker (bulk_load.py) takes the ranges in order, so it folds the stream in order. A reader
keeps one range ahead of the fold at most (``StreamReplay``'s buffer), so memory stays bounded however long the
stream is.

A reader whose pipe's other end is closed (the fold stopped early, or failed) stops and deletes its consumer.
"""

import asyncio
import contextlib
import fcntl
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from services.shared.config import NatsSettings
from services.shared.heap import freeze_heap
from services.shared.jetstream import connect
from services.tally.rebuild.replay import StreamReplay
from services.tally.store import StreamRecord

log = logging.getLogger(__name__)

READERS = 2
"""Reading processes: the machines shipskip runs on have two cores or more."""
CHUNK = 50_000
"""Stream sequences a range holds at most; a reader buffers about one range ahead of the fold."""
BATCH = 2500
"""Records a reader sends at once: some 850 kB, which a pipe of ``PIPE_BYTES`` holds whole."""
PIPE_BYTES = 1 << 20
"""Linux's default ceiling for an unprivileged process (/proc/sys/fs/pipe-max-size)."""

Range = tuple[int, int]
"""First and last stream sequence, both included."""

# What a reader sends: ("batch", seqs, subjects, datas), ("end",) after each range, ("error", why).
Message = tuple[object, ...]


def ranges(start: int, end: int, readers: int = READERS, chunk: int = CHUNK) -> list[Range]:
    """``start``..``end`` cut into ranges, at least two a reader on a short stream (so every reader works)."""
    span = end - start + 1
    if span <= 0:
        return []
    size = max(1, min(chunk, -(-span // (2 * readers))))
    return [(first, min(end, first + size - 1)) for first in range(start, end + 1, size)]


def start_readers(
    nats: NatsSettings, comparison_id: str | None, all_ranges: list[Range]
) -> tuple[list[BaseProcess], list[Connection]]:
    """One process per reader (``spawn``: the rebuild may run in a server's worker), and the receiving end of each
    one's pipe, in reader order: range ``i`` comes on pipe ``i % READERS``."""
    context = multiprocessing.get_context("spawn")
    count = min(READERS, len(all_ranges))
    processes: list[BaseProcess] = []
    receivers: list[Connection] = []
    for index in range(count):
        receiver, sender = context.Pipe(duplex=False)
        _widen(sender)
        process = context.Process(
            target=read_ranges,
            args=(nats, comparison_id, all_ranges[index::count], sender),
            name=f"shipskip-rebuild-reader-{index}",
            daemon=True,
        )
        process.start()
        sender.close()  # the child has its own: the pipe breaks when the reader ends
        processes.append(process)
        receivers.append(receiver)
    return processes, receivers


def _widen(pipe: Connection) -> None:
    """A pipe that holds a whole batch (Linux: 64 KiB by default, a batch is some 1.7 MB): the reader writes it
    and reads on while the fold worker takes it. Through 64 KiB, every batch took some 30 turns of each process,
    and on a loaded machine each turn waits for a core: both ends spent most of a rebuild waiting for the other
    (500,000 events: readers blocked sending 10-11.6 s of 15 s, the worker waiting 3.8 s of its 6.7)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or past /proc/sys/fs/pipe-max-size
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def stop_readers(processes: list[BaseProcess], *, kill: bool = False) -> None:
    """Wait for the readers (once the fold worker has closed the pipes, one still sending stops and deletes its
    consumer), or ``kill`` them (their consumers go after a minute unused)."""
    for process in processes:
        if kill:
            process.kill()
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


def read_ranges(nats: NatsSettings, comparison_id: str | None, mine: list[Range], sender: Connection) -> None:
    """A reader process: every range of ``mine`` in order onto ``sender``."""
    parent = multiprocessing.parent_process()
    if parent is not None:  # a rebuild killed outright: its readers go with it
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()
    try:
        asyncio.run(_read(nats, comparison_id, mine, sender))
    except (BrokenPipeError, EOFError, ConnectionResetError):
        pass  # the fold stopped taking: nothing more is wanted
    except Exception as exc:  # told to the fold worker, which raises it in the rebuild
        with contextlib.suppress(OSError):
            sender.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        sender.close()


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(1)


async def _read(nats: NatsSettings, comparison_id: str | None, mine: list[Range], sender: Connection) -> None:
    nc = await connect(nats, "shipskip-rebuild-reader")
    # A message passes through some twenty objects that reference counting frees soon after: young collections
    # every 700 allocations walked the replay's buffer again and again. (bench/rebuild_parts.py)
    freeze_heap()
    try:

        async def send(records: list[StreamRecord]) -> None:
            # In a thread: while the fold works on another reader's range the pipe is full, and the replay's
            # reading task goes on filling its buffer meanwhile.
            await asyncio.to_thread(sender.send, ("batch", *zip(*records, strict=True)))

        for first, last in mine:
            replay = StreamReplay(
                nc, comparison_id, BATCH, start=first, end=last, buffered_batches=-(-CHUNK // BATCH) + 1
            )
            await replay.open()
            try:
                await replay.fold_until(last, send)
            finally:
                await replay.close()
            await asyncio.to_thread(sender.send, ("end",))
    finally:
        await nc.close()
