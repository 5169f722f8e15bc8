"""The ring the module and Python share (csrc/ring.c through the cffi binding)."""

import os
import re
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from pyconvai.ring import Ring

CSRC = Path(__file__).resolve().parents[2] / "csrc"
STRESS_SOURCE = Path(__file__).resolve().parents[1] / "c" / "ring_stress.c"


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


class _Turns:
    """Lets two threads sleep instead of spinning on a full or empty ring.

    The ring needs no lock; this condition only carries wake-ups. Each side
    checks the ring under it and the other side notifies under it after every
    push or pop, so no wake-up is lost. ``progress`` counts operations: the
    watchdog fails a run only when it stops moving, never because the machine
    is slow.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.progress = 0
        self.finished = False

    def moved(self) -> None:
        with self.cond:
            self.progress += 1
            self.cond.notify_all()

    def wait_until(self, ready) -> None:
        with self.cond:
            while not ready():
                self.cond.wait()

    def finish(self) -> None:
        with self.cond:
            self.finished = True
            self.cond.notify_all()


def _run_pair(turns: _Turns, producer, consumer, stall_seconds: float = 60.0):
    """Run both threads to the end; fail only if neither moves for ``stall_seconds``."""
    failures = []

    def guarded(target):
        def run():
            try:
                target()
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)
                turns.finish()
        return run

    threads = [threading.Thread(target=guarded(producer)), threading.Thread(target=guarded(consumer))]
    for t in threads:
        t.start()
    seen = -1
    while any(t.is_alive() for t in threads):
        if turns.progress == seen:
            turns.finish()
            pytest.fail(f"no progress for {stall_seconds} s (a lost wake-up?)")
        seen = turns.progress
        for t in threads:
            t.join(stall_seconds)
    assert not failures, failures


def _consume_until_finished(ring: Ring, turns: _Turns, size: int, take) -> None:
    """The consumer: pop up to ``size`` bytes at a time until the producer has finished
    and the ring is empty; ``take`` gets each non-empty pop."""
    while True:
        turns.wait_until(lambda: ring.used or turns.finished)
        data = ring.pop(size)
        if not data and turns.finished and not ring.used:
            return
        if data:
            take(data)
        turns.moved()


def test_one_producer_one_consumer_no_loss_no_reordering():
    ring = Ring.allocate(4096)
    turns = _Turns()
    total = 200_000
    received = bytearray()

    def producer():
        sent = 0
        while sent < total:
            n = min(97, total - sent)
            chunk = _counter_stream(sent, n)
            turns.wait_until(lambda: ring.capacity - ring.used >= len(chunk) or turns.finished)
            assert ring.push(chunk)
            sent += n
            turns.moved()

    def consumer():
        while len(received) < total * 4:
            turns.wait_until(lambda: ring.used or turns.finished)
            received.extend(ring.pop(1000))
            turns.moved()

    _run_pair(turns, producer, consumer)
    values = struct.unpack(f"<{total}I", bytes(received))
    assert values == tuple(range(total))


def test_overwrite_under_concurrency_never_returns_torn_or_reordered_data():
    """The producer drops the oldest data while the consumer reads: every value
    the consumer gets is whole and strictly increasing; only loss is allowed."""
    ring = Ring.allocate(1024)
    turns = _Turns()
    total = 300_000
    received = bytearray()

    def producer():
        for start in range(0, total, 50):
            ring.push_overwrite(_counter_stream(start, 50), unit=4)
            turns.moved()
        turns.finish()

    _run_pair(turns, producer, lambda: _consume_until_finished(ring, turns, 512, received.extend))
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
    turns = _Turns()
    seen = []

    def producer():
        value = 0
        while value < 2000:
            turns.wait_until(lambda: ring.capacity - ring.used >= 4 or turns.finished)
            assert ring.push(struct.pack("<I", value))
            value += 1
            if value % 100 == 0:
                ring.discard()
            turns.moved()
        turns.finish()

    def take(data: bytes) -> None:
        seen.append(struct.unpack("<I", data)[0])

    _run_pair(turns, producer, lambda: _consume_until_finished(ring, turns, 4, take))
    assert all(b > a for a, b in zip(seen, seen[1:]))
    assert len(seen) + ring.counters["discarded"] // 4 == 2000


def _build_stress(tmp_path, *flags: str) -> str:
    binary = str(tmp_path / ("ring_stress" + "".join(flags).replace("-", "_").replace("=", "_")))
    subprocess.run(["gcc", "-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", *flags,
                    f"-I{CSRC}", "-o", binary, str(STRESS_SOURCE), str(CSRC / "ring.c")], check=True)
    return binary


def test_ring_c_stress_millions_of_items_random_sizes_doorbell_wakeups(tmp_path):
    """The concurrency proof at full speed in C (tests/c/ring_stress.c): 2 M values
    through each mode; it finishes when the work is done, however slow the machine."""
    result = subprocess.run([_build_stress(tmp_path), "2000000", "7"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    lossless = re.search(r"lossless: 2000000 sent, 2000000 received, 0 dropped, (\d+) doorbell waits, 0 lost",
                         result.stdout)
    assert lossless and int(lossless[1]) > 0, result.stdout  # the consumer really slept on the doorbell


@pytest.mark.parametrize("mode", ["lossless", "overwrite", "discard"])
def test_ring_c_stress_under_thread_sanitizer(tmp_path, mode):
    probe = subprocess.run(["gcc", "-fsanitize=thread", "-x", "c", "-", "-o", str(tmp_path / "probe")],
                           input="int main(void){return 0;}", text=True, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("this gcc has no ThreadSanitizer runtime (libtsan)")
    # TSan does not model atomic_thread_fence (gcc warns): it can only see too little
    # ordering and report a race that is not there, never hide one.
    binary = _build_stress(tmp_path, "-fsanitize=thread", "-Wno-tsan")
    options = "halt_on_error=1 exitcode=66"
    if mode != "lossless":
        # Dropping data (overwrite, discard) lets the producer reuse bytes a consumer may
        # be copying: a seqlock read, which ring_take validates by CAS and throws away.
        # TSan cannot know that, so only those two copies are exempt, and only here.
        (tmp_path / "seqlock.supp").write_text("race:ring_copy_in\nrace:ring_copy_out\n")
        options += f" suppressions={tmp_path / 'seqlock.supp'}"
    result = subprocess.run([binary, "300000", "11", mode], capture_output=True, text=True,
                            env={**os.environ, "TSAN_OPTIONS": options})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{mode}: 300000 sent" in result.stdout
    assert "WARNING: ThreadSanitizer" not in result.stderr


def test_the_doorbell_rings_once_when_the_notify_level_is_reached():
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
    ring.wake()  # a key or an answer: rung whatever the level
    assert os.eventfd_read(fd) == 1


def test_the_doorbell_wakes_a_consumer_sleeping_in_poll():
    import select

    ring = Ring.allocate(65536)
    fd = ring.open_doorbell()
    ring.notify_at(160 * 12)
    producer = threading.Thread(target=lambda: [ring.push(b"\x01" * 160) for _ in range(12)])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    producer.start()
    assert poller.poll(60_000)  # returns at once when rung; the bound only stops a lost wake-up hanging
    producer.join()
    assert ring.used >= 160 * 12
