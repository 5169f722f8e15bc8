"""PlaybackQueue: framing, the interruption gate and thread safety."""

import threading
import time

import pytest

from pyconvai.playback import Added, PlaybackQueue
from pyconvai.protocol import AudioFormat

ULAW = AudioFormat("ulaw", 8000)  # 160-byte frames
PCM16 = AudioFormat("pcm", 16000)  # 640-byte frames


def queue(fmt: AudioFormat = ULAW) -> PlaybackQueue:
    q = PlaybackQueue()
    q.configure(fmt)
    return q


def drain(q: PlaybackQueue) -> list[bytes]:
    frames = []
    while (frame := q.pop_frame()) is not None:
        frames.append(frame)
    return frames


def test_cuts_20ms_frames_and_holds_partial():
    q = queue()
    assert q.add(bytes(range(200)) * 2, 1)  # 400 bytes = 2 frames + 80
    assert q.queued_frames == 2
    assert q.queued_ms == 60  # the held 80 bytes count as the frame finish() would make
    q.add(b"\x01" * 80, 1)
    frames = drain(q)
    assert [len(f) for f in frames] == [160, 160, 160]
    assert b"".join(frames) == bytes(range(200)) * 2 + b"\x01" * 80
    assert q.pop_frame() is None and q.queued_ms == 0


def test_frames_span_chunks_of_varied_sizes():
    q = queue(PCM16)
    data = bytes(i % 251 for i in range(640 * 7))
    pos = 0
    for size in (10, 630, 1, 1279, 642, 2):
        q.add(data[pos : pos + size], 5)
        pos += size
    q.add(data[pos:], 5)
    frames = drain(q)
    assert all(len(f) == 640 for f in frames)
    assert b"".join(frames) == data


def test_odd_length_pcm_carries_byte_within_same_event():
    q = queue(PCM16)
    samples = bytes(range(256)) * 5  # 1280 bytes = 2 frames
    q.add(samples[:641], 3)  # ends mid-sample
    assert q.queued_frames == 1
    q.add(samples[641:], 3)
    assert b"".join(drain(q)) == samples


def test_half_sample_of_previous_event_is_dropped():
    q = queue(PCM16)
    q.add(b"\x11\x22" * 100 + b"\x33", 1)  # 100 samples + half a sample
    q.add(b"\x44\x55" * 220, 2)  # new response: must stay sample aligned
    q.finish()
    frame = drain(q)[0]
    assert frame[:200] == b"\x11\x22" * 100
    assert frame[200:640] == b"\x44\x55" * 220


def test_finish_pads_with_format_silence():
    q = queue(ULAW)
    q.add(b"\x10" * 170, 1)
    assert q.finish()
    frames = drain(q)
    assert frames[1] == b"\x10" * 10 + b"\xff" * 150  # μ-law silence, not 0x00
    assert not q.finish()

    p = queue(PCM16)
    p.add(b"\x01\x02" * 10 + b"\x03", 1)  # trailing half sample is discarded
    assert p.finish()
    (frame,) = drain(p)
    assert frame == b"\x01\x02" * 10 + b"\x00" * 620


def test_audio_before_configure_is_kept():
    q = PlaybackQueue()
    assert q.add(b"\x01" * 300, 1)
    assert q.queued_frames == 0 and q.queued_ms == 0 and q.pop_frame() is None
    q.configure(ULAW)
    assert q.queued_frames == 1
    q.add(b"\x02" * 20, 1)
    assert b"".join(drain(q)) == b"\x01" * 300 + b"\x02" * 20


def test_configure_same_format_is_idempotent_other_is_error():
    q = queue(ULAW)
    q.configure(AudioFormat.parse("ulaw_8000"))
    with pytest.raises(ValueError):
        q.configure(PCM16)


def test_interrupt_flushes_and_gates_older_ids():
    q = queue()
    q.add(b"\x01" * 500, 5)  # 3 frames + 20 held
    assert q.interrupt(8) == 3
    assert q.queued_frames == 0 and q.queued_ms == 0
    assert not q.add(b"\x02" * 160, 5)  # late audio with the old id
    assert not q.add(b"\x02" * 160, 7)
    assert q.add(b"\x03" * 160, 8)  # equal id: the new reply
    assert q.add(b"\x04" * 160, 9)
    assert drain(q) == [b"\x03" * 160, b"\x04" * 160]  # nothing of the old reply leaks
    c = q.counters
    assert (c.dropped_stale_chunks, c.interruptions, c.frames_flushed) == (2, 1, 3)


def test_interrupt_gate_never_moves_back():
    q = queue()
    q.interrupt(10)
    q.interrupt(4)  # a stale interruption still flushes, but keeps the gate at 10
    assert not q.add(b"\x01" * 160, 9)
    assert q.add(b"\x01" * 160, 10)


def test_interrupt_without_id_only_flushes():
    q = queue()
    q.add(b"\x01" * 320, 3)
    assert q.interrupt(None) == 2
    assert q.add(b"\x01" * 160, 0)


def test_legacy_audio_without_id_is_never_stale():
    q = queue()
    q.interrupt(50)
    assert q.add(b"\x01" * 160, None)


def test_interrupt_clears_audio_added_before_configure():
    q = PlaybackQueue()
    q.add(b"\x01" * 320, 1)
    q.interrupt(2)
    q.configure(ULAW)
    assert q.queued_frames == 0


def test_interrupt_clears_held_partial_and_carry():
    q = queue(PCM16)
    q.add(b"\x01\x01" * 10 + b"\x09", 1)
    q.interrupt(2)
    q.add(b"\x02\x03" * 320, 2)
    assert drain(q) == [b"\x02\x03" * 320]


def test_flush_hook_runs_under_the_lock_on_every_interrupt():
    q = queue()
    seen = []

    def hook():
        seen.append(q._lock.locked())

    q.set_flush_hook(hook)
    q.interrupt(1)
    q.interrupt(None)
    assert seen == [True, True]
    q.set_flush_hook(None)
    q.interrupt(2)
    assert len(seen) == 2


def test_transfer_stops_when_push_refuses():
    q = queue()
    q.add(bytes(range(160)) * 5, 1)
    ring: list[bytes] = []

    def push(frame: bytes) -> bool:
        if len(ring) == 3:
            return False
        ring.append(frame)
        return True

    assert q.transfer(push, 10) == 3
    assert q.queued_frames == 2  # the refused frame was not lost
    ring.clear()
    assert q.transfer(push, 1) == 1
    assert q.queued_frames == 1
    assert q.counters.frames_out == 4
    assert q.counters.frames_in == 5


def test_transfer_on_empty_queue_does_not_call_push():
    q = queue()
    assert q.transfer(lambda f: pytest.fail("push called"), 5) == 0


def test_counters_snapshot_is_frozen():
    q = queue()
    c = q.counters
    with pytest.raises(AttributeError):
        c.frames_in = 5  # type: ignore[misc]


def test_transfer_versus_add_and_interrupt_threads():
    """A consumer thread transfers/pops while a producer adds and interrupts.

    Every frame carries its reply's event_id as a repeated 2-byte pattern.
    Once interrupt(M) has returned, the consumer must never get a frame of a
    reply with id < M, and every frame must be whole and of one reply.
    """
    q = queue()
    received: list[int] = []
    flushes: list[int] = []
    gate = {"min": 1}
    errors: list[str] = []
    stop = threading.Event()
    calls = [0]

    def check(frame: bytes, min_id: int) -> None:
        event_id = int.from_bytes(frame[:2], "big")
        if len(frame) != 160 or frame != frame[:2] * 80:
            errors.append("torn frame")
        elif event_id < min_id:
            errors.append(f"stale frame {event_id} after gate {min_id}")
        received.append(event_id)

    def push(frame: bytes) -> bool:
        calls[0] += 1
        if calls[0] % 7 == 0:  # a full ring now and then
            return False
        check(frame, gate["min"])
        return True

    def consumer():
        while not stop.is_set():
            q.transfer(push, 5)
            min_id = gate["min"]  # read before popping: that interrupt has completed
            frame = q.pop_frame()
            if frame is not None:
                check(frame, min_id)
            time.sleep(0.0001)

    q.set_flush_hook(lambda: flushes.append(len(received)))
    q.interrupt(1)
    t = threading.Thread(target=consumer)
    t.start()
    try:
        event_id = 1
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            pattern = event_id.to_bytes(2, "big")
            stale = (event_id - 1).to_bytes(2, "big")
            for _ in range(10):
                q.add(pattern * 75, event_id)
                q.add(stale * 80, event_id - 1)  # late audio of the interrupted reply
            time.sleep(0.0005)
            event_id += 1
            q.interrupt(event_id)
            gate["min"] = event_id  # after interrupt() returned: the queue is clean
    finally:
        stop.set()
        t.join(timeout=5)
    assert not t.is_alive()
    assert not errors, errors[:5]
    assert len(received) > 100 and len(set(received)) > 10
    assert len(flushes) == q.counters.interruptions > 10
    assert q.counters.dropped_stale_chunks > 0


def test_concurrent_producers_and_consumers_conserve_frames():
    q = queue()
    n_frames = 4000
    got: list[int] = []
    lock = threading.Lock()

    def producer():
        for i in range(n_frames):
            q.add(bytes([i % 256]) * 160, 1)

    def consumer():
        until = time.monotonic() + 5.0
        while time.monotonic() < until:
            moved = q.transfer(lambda f: True, 3)
            frame = q.pop_frame()
            with lock:
                got.append(moved + (frame is not None))
            if sum(got) >= n_frames:
                return

    threads = [threading.Thread(target=producer)] + [
        threading.Thread(target=consumer) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sum(got) + q.queued_frames == n_frames
    c = q.counters
    assert c.frames_in == n_frames and c.frames_out == sum(got)


def test_add_tells_audio_that_came_to_silence_from_audio_that_continues():
    q = queue()
    handed_on = []  # what the consumer (the ring) still holds
    q.set_consumer_empty(lambda: not handed_on)
    assert q.add(b"\x01" * 480, 1) is Added.AFTER_SILENCE
    assert q.add(b"\x01" * 160, 1) is Added.QUEUED  # frames still queued here
    q.transfer(lambda frame: handed_on.append(frame) or True, 10)
    assert q.add(b"\x01" * 160, 1) is Added.QUEUED  # queued in the consumer
    handed_on.clear()
    q.transfer(lambda frame: handed_on.append(frame) or True, 10)
    handed_on.clear()  # everything played
    assert q.add(b"\x01" * 160, 1) is Added.AFTER_SILENCE
    q.interrupt(2)
    assert q.add(b"\x01" * 160, 1) is Added.STALE and not q.add(b"", 1)
