"""Event ids: the ULID layout (time first, then 80 random bits), unique, in time order, not repeated by a fork."""

import os

from services.shared.event_ids import new_event_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def value_of(event_id: str) -> int:
    value = 0
    for char in event_id:
        value = value * 32 + CROCKFORD.index(char)
    return value


def test_an_id_is_its_millisecond_then_random_bits_in_crockford_base32() -> None:
    event_id = new_event_id(1_796_000_000_123)
    assert len(event_id) == 26
    assert set(event_id) <= set(CROCKFORD)
    assert value_of(event_id) >> 80 == 1_796_000_000_123
    assert value_of(event_id) < 1 << 128


def test_ids_are_unique_across_many_blocks_of_random_bytes() -> None:
    ids = [new_event_id(1_796_000_000_000) for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert len({value_of(i) & ((1 << 80) - 1) for i in ids}) == len(ids)


def test_ids_sort_by_their_millisecond() -> None:
    ids = [new_event_id(ms) for ms in (1, 2, 10**9, 1_796_000_000_000, (1 << 48) - 1)]
    assert ids == sorted(ids)


def test_a_forked_child_does_not_repeat_its_parents_next_ids() -> None:
    new_event_id()  # the parent holds random bytes not handed out yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, ",".join(new_event_id(0) for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 4096).decode().split(",")
    os.close(read)
    os.waitpid(pid, 0)
    parent = [new_event_id(0) for _ in range(5)]
    assert len(child) == 5
    assert not set(child) & set(parent)
