"""The ring the module and Python share (csrc/ring.c through the cffi binding)."""

import struct
import threading

import pytest

from pyconvai.ring import Ring


def test_capacity_is_rounded_up_to_a_power_of_two():
    assert Ring.allocate(100).capacity == 128
    assert Ring.allocate(4096).capacity == 4096


def test_push_pop_keeps_bytes_and_order():
    ring = Ring.allocate(64)
    assert ring.push(b"hello ")
    assert ring.push(b"world")
    assert ring.used == 11
    assert ring.pop(3) == b"hel"
    assert ring.pop() == b"lo world"
    assert ring.pop() == b""


def test_wraparound():
    ring = Ring.allocate(64)
    for i in range(100):
        chunk = bytes([i]) * 37
        assert ring.push(chunk)
        assert ring.pop(64) == chunk
    assert ring.counters["pushed"] == ring.counters["popped"] == 3700


def test_push_is_all_or_nothing_when_full():
    ring = Ring.allocate(64)
    assert ring.push(b"x" * 60)
    assert not ring.push(b"y" * 5)
    assert ring.used == 60
    assert ring.push(b"y" * 4)
    assert ring.used == 64


def test_pop_exact_takes_whole_frames_only():
    ring = Ring.allocate(1024)
    ring.push(b"a" * 300)
    assert ring.pop_exact(160) == b"a" * 160
    assert ring.pop_exact(160) is None
    assert ring.used == 140


def test_overwrite_drops_the_oldest_and_counts_it():
    ring = Ring.allocate(64)
    ring.push(bytes(range(60)))
    dropped = ring.push_overwrite(bytes(range(100, 110)), unit=2)
    assert dropped == 6
    assert ring.counters["overflowed"] == 6
    data = ring.pop(64)
    assert data == bytes(range(6, 60)) + bytes(range(100, 110))


def test_overwrite_larger_than_capacity_keeps_the_newest():
    ring = Ring.allocate(64)
    payload = bytes(i % 256 for i in range(200))
    assert ring.push_overwrite(payload, unit=2) == 136
    assert ring.pop(64) == payload[-64:]


def test_discard_flushes_only_what_is_queued():
    ring = Ring.allocate(256)
    ring.push(b"stale" * 10)
    assert ring.discard() == 50
    ring.push(b"fresh")
    assert ring.pop() == b"fresh"
    assert ring.counters["discarded"] == 50


def test_attach_shares_one_ring_with_its_own_reference():
    owner = Ring.allocate(128)
    other = Ring.attach(owner.address)
    owner.push(b"abc")
    del owner  # the ring outlives the first reference
    assert other.pop() == b"abc"


def _counter_stream(start: int, count: int) -> bytes:
    return b"".join(struct.pack("<I", i) for i in range(start, start + count))


def _run_pair(producer, consumer, seconds: float = 1.5):
    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 10)
        assert not t.is_alive()


def test_one_producer_one_consumer_no_loss_no_reordering():
    ring = Ring.allocate(4096)
    total = 200_000
    received = bytearray()

    def producer():
        sent = 0
        while sent < total:
            n = min(97, total - sent)
            if ring.push(_counter_stream(sent, n)):
                sent += n

    def consumer():
        while len(received) < total * 4:
            received.extend(ring.pop(1000))

    _run_pair(producer, consumer)
    values = struct.unpack(f"<{total}I", bytes(received))
    assert values == tuple(range(total))


def test_overwrite_under_concurrency_never_returns_torn_or_reordered_data():
    """The producer drops the oldest data while the consumer reads: every value
    the consumer gets is whole and strictly increasing; only loss is allowed."""
    ring = Ring.allocate(1024)
    total = 300_000
    done = threading.Event()
    received = bytearray()

    def producer():
        for start in range(0, total, 50):
            ring.push_overwrite(_counter_stream(start, 50), unit=4)
        done.set()

    def consumer():
        while not (done.is_set() and ring.used == 0):
            received.extend(ring.pop(512))

    _run_pair(producer, consumer)
    assert len(received) % 4 == 0
    values = struct.unpack(f"<{len(received) // 4}I", bytes(received))
    assert values[-1] == total - 1
    assert all(b > a for a, b in zip(values, values[1:]))
    dropped = ring.counters["overflowed"] // 4
    assert len(values) + dropped == total


@pytest.mark.parametrize("capacity", [64, 4096])
def test_discard_while_consuming(capacity):
    """A barge-in flush races the consumer: nothing older than the flush survives it."""
    ring = Ring.allocate(capacity)
    stop = threading.Event()
    seen_after_flush = []
    flushed_at = []

    def producer():
        value = 0
        for _ in range(2000):
            if ring.push(struct.pack("<I", value)):
                value += 1
            if value % 100 == 0 and value:
                ring.discard()
                flushed_at.append(value)
        stop.set()

    def consumer():
        while not stop.is_set() or ring.used:
            data = ring.pop(4)
            if data:
                seen_after_flush.append(struct.unpack("<I", data)[0])

    _run_pair(producer, consumer)
    assert all(b > a for a, b in zip(seen_after_flush, seen_after_flush[1:]))


def test_the_doorbell_rings_once_when_the_notify_level_is_reached():
    import os

    ring = Ring.allocate(4096)
    assert ring.doorbell == -1
    fd = ring.open_doorbell()
    assert fd >= 0 and ring.doorbell == fd
    os.set_blocking(fd, False)
    ring.push(b"x" * 100)  # no level set: silent
    ring.notify_at(300)
    ring.push(b"x" * 100)
    with pytest.raises(BlockingIOError):
        os.eventfd_read(fd)
    ring.push(b"x" * 100)  # 300 queued
    ring.push(b"x" * 100)  # rung once only: the level was taken
    assert os.eventfd_read(fd) == 1
    with pytest.raises(BlockingIOError):
        os.eventfd_read(fd)
    ring.pop()
    ring.notify_at(None)
    ring.push(b"x" * 1000)
    with pytest.raises(BlockingIOError):
        os.eventfd_read(fd)


def test_the_doorbell_wakes_a_consumer_sleeping_in_poll():
    import os
    import select

    ring = Ring.allocate(65536)
    fd = ring.open_doorbell()
    ring.notify_at(160 * 12)
    producer = threading.Thread(target=lambda: [ring.push(b"\x01" * 160) for _ in range(12)])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    producer.start()
    assert poller.poll(2000)
    producer.join()
    assert ring.used >= 160 * 12
