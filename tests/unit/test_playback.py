"""The downlink: PlaybackQueue's framing and interruption gate, and Downlink's ring, lead and threads."""

import threading
import time

import pytest

from pyconvai.playback import Added, Downlink, PlaybackQueue
from pyconvai.protocol import AudioFormat
from pyconvai.ring import Ring

ULAW = AudioFormat("ulaw", 8000)  # 160-byte frames
PCM16 = AudioFormat("pcm", 16000)  # 640-byte frames


def queue(fmt: AudioFormat = ULAW) -> PlaybackQueue:
    q = PlaybackQueue()
    q.configure(fmt)
    return q


def drain(q: PlaybackQueue) -> list[bytes]:
    frames: list[bytes] = []
    q.transfer(lambda frame: frames.append(frame) or True, 1 << 30)
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
    assert drain(q) == [] and q.queued_ms == 0


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
    assert q.queued_frames == 0 and q.queued_ms == 0 and drain(q) == []
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


def test_transfer_on_empty_queue_does_not_call_push():
    q = queue()
    assert q.transfer(lambda f: pytest.fail("push called"), 5) == 0


# --- Downlink: one call's queue, its ring and the two threads that feed it ----------------


def downlink(frames_ahead: int = 25, capacity: int = 65536) -> tuple[Downlink, Ring, list[int]]:
    ring = Ring.allocate(capacity)
    wakes: list[int] = []
    d = Downlink(ring, lambda: wakes.append(ring.used), frames_ahead)
    d.configure(ULAW)
    return d, ring, wakes


def test_interrupt_flushes_the_queue_and_the_ring_together():
    d, ring, _ = downlink(frames_ahead=3)
    d.add(b"\x01" * 160 * 5, 1)
    assert ring.used == 3 * 160 and d.queued_ms == 5 * 20
    assert d.interrupt(2) == 5  # 2 frames queued here and 3 in the ring: none will play
    assert ring.used == 0 and d.queued_ms == 0 and d.drained
    assert d.add(b"\x02" * 160, 1) is Added.STALE and d.stale_chunks == 1
    assert d.add(b"\x03" * 160, 2) is Added.AFTER_SILENCE
    assert ring.pop() == b"\x03" * 160


def test_audio_reaching_an_empty_ring_wakes_the_channel_thread_once():
    d, ring, wakes = downlink(frames_ahead=3)
    assert d.add(b"\x01" * 160 * 2, 1) is Added.AFTER_SILENCE
    assert wakes == [2 * 160]
    assert d.add(b"\x01" * 160 * 4, 1) is Added.QUEUED  # the ring had frames: no wake
    assert wakes == [2 * 160] and ring.used == 3 * 160
    d.tick()
    assert ring.used == 3 * 160 and d.queued_ms == 6 * 20


def test_drained_after_finish_pads_the_last_partial_frame():
    d, ring, _ = downlink()
    d.add(b"\x01" * 250, 1)
    assert not d.drained or ring.used == 160
    d.finish()
    assert ring.used == 320 and not d.drained
    ring.pop_exact(320)
    assert d.drained


def test_downlink_producer_and_consumer_threads_never_leak_an_interrupted_reply():
    """The asyncio thread adds and interrupts while the playback thread ticks and the
    channel thread pops frames from the ring.

    Every frame carries its reply's event_id as a repeated 2-byte pattern.
    Once interrupt(M) has returned, the channel thread must never get a frame
    of a reply with id < M, and every frame must be whole and of one reply.
    """
    d, ring, _ = downlink(frames_ahead=5, capacity=4096)
    received: list[int] = []
    errors: list[str] = []
    gate = {"min": 1}
    stop = threading.Event()

    def channel_and_playback_threads():
        while not stop.is_set():
            d.tick()
            min_id = gate["min"]  # read before popping: that interrupt has completed
            while (frame := ring.pop_exact(160)) is not None:
                event_id = int.from_bytes(frame[:2], "big")
                if frame != frame[:2] * 80:
                    errors.append("torn frame")
                elif event_id < min_id:
                    errors.append(f"stale frame {event_id} after gate {min_id}")
                received.append(event_id)
            time.sleep(0.0001)

    d.interrupt(1)
    t = threading.Thread(target=channel_and_playback_threads)
    t.start()
    try:
        event_id, stale_sent = 1, 0
        while len(set(received)) <= 10 or event_id <= 20:
            pattern, stale = event_id.to_bytes(2, "big"), (event_id - 1).to_bytes(2, "big")
            for _ in range(10):
                d.add(pattern * 75, event_id)
                stale_sent += d.add(stale * 80, event_id - 1) is Added.STALE
            time.sleep(0.0005)
            event_id += 1
            d.interrupt(event_id)
            gate["min"] = event_id  # after interrupt() returned: queue and ring are clean
            assert t.is_alive() and event_id < 100_000, "the channel thread stopped receiving"
    finally:
        stop.set()
        t.join()
    assert not errors, errors[:5]
    assert len(received) > 100 and len(set(received)) > 10
    assert d.stale_chunks == stale_sent > 0


def test_concurrent_top_ups_conserve_frames():
    """The asyncio thread's top-ups (add) and the playback thread's (tick) race: every
    frame reaches the ring exactly once, in order."""
    from pyconvai.playback import MAX_QUEUED_MS

    d, ring, _ = downlink(frames_ahead=25, capacity=1 << 20)
    n_frames = MAX_QUEUED_MS // 20 * 2 // 3  # under the cap: none may be dropped as overflow

    def producer():
        for i in range(n_frames):
            d.add(i.to_bytes(2, "big") * 80, 1)

    def ticker():
        while not done.is_set():
            d.tick()

    done = threading.Event()
    threads = [threading.Thread(target=producer), threading.Thread(target=ticker)]
    for t in threads:
        t.start()
    got: list[int] = []
    moved_at = time.monotonic()
    try:
        while len(got) < n_frames:
            frame = ring.pop_exact(160)
            if frame is not None:
                got.append(int.from_bytes(frame[:2], "big"))
                moved_at = time.monotonic()
                continue
            # Fails only when nothing moves at all for 60 s (a frame lost), never for being slow.
            assert time.monotonic() - moved_at < 60, f"stuck after {len(got)} of {n_frames} frames"
            time.sleep(0.0001)
    finally:
        done.set()
    for t in threads:
        t.join()
    assert got == list(range(n_frames))


# --- what a misbehaving server cannot do to a call -------------------------------------


def test_audio_sent_far_ahead_of_playback_is_bounded_oldest_first():
    from pyconvai.playback import MAX_QUEUED_MS

    q = queue()
    limit = MAX_QUEUED_MS // 20
    for i in range(limit + 500):  # 10 s more than the cap, one frame at a time
        q.add(i.to_bytes(4, "big") * 40, 1)
    assert q.queued_frames == limit and q.overflow_frames == 500
    assert int.from_bytes(drain(q)[0][:4], "big") == 500  # the oldest went first


def test_audio_before_the_format_is_bounded_too():
    q = PlaybackQueue()
    for _ in range(200):
        q.add(bytes(96_000), 1)  # 200 s of pcm_48000 before any metadata
    q.configure(AudioFormat("pcm", 48000))
    assert q.queued_ms <= 60_000 + 20


def test_an_interruption_id_from_nowhere_cannot_silence_the_call():
    q = queue()
    q.add(b"\x01" * 160, 5)
    q.interrupt(2**53)  # one bad id: every later reply would be "stale"
    assert q.gate == 6
    assert not q.add(b"\x02" * 160, 5)  # the interrupted reply still goes
    assert q.add(b"\x03" * 160, 6)  # the next one plays
    assert drain(q) == [b"\x03" * 160]


def test_renumbered_event_ids_are_followed_after_a_long_stale_run():
    from pyconvai.playback import RENUMBERED_AFTER_MS

    q = queue()
    q.add(b"\x01" * 160, 500)
    q.interrupt(501)
    late = [q.add(b"\x02" * 160, 500) for _ in range(3)]  # a few late chunks: dropped
    assert late == [False] * 3 and q.stale_since_accepted() == (3, 480)
    # The server restarted its numbering: far more "stale" audio than a reply leaves behind.
    accepted = [q.add(b"\x03" * 160, 1 + i) for i in range(RENUMBERED_AFTER_MS // 20 + 5)]
    assert accepted.index(True) == RENUMBERED_AFTER_MS // 20 - 3 - 1  # the chunk that makes 5 s plays
    assert q.gate < 501 and q.stale_since_accepted() == (0, 0)


def test_the_downlink_says_what_it_dropped(caplog):
    import logging

    d, ring, _ = downlink(frames_ahead=3)
    d.add(b"\x01" * 160, 1)
    d.interrupt(2)
    for _ in range(3):
        d.add(b"\x02" * 160, 1)
    with caplog.at_level(logging.INFO, logger="pyconvai.playback"):
        d.add(b"\x03" * 160, 2)
    assert "dropped 3 late chunks (60 ms) of an interrupted reply" in caplog.text


def test_downlink_knows_which_reply_played_and_how_much_of_it_at_a_flush():
    """What OpenAI's truncate needs: the reply under way when the ring's stream stopped, and
    its bytes written, counted from its own first byte (which may sit inside a frame)."""
    ring = Ring.allocate(32768)
    d = Downlink(ring, lambda: None, frames_ahead=4)
    d.configure(ULAW)
    d.add(b"\x11" * 240, 1)  # reply 1: a frame and a half
    d.add(b"\x22" * 800, 2)  # reply 2 starts 80 bytes into the second frame
    assert ring.pop(160 * 3) and ring.used == 160  # the channel thread wrote three frames
    d.interrupt(3)
    assert d.heard_at_flush == (2, 480 - 240)
    d.add(b"\x33" * 320, 3)
    assert d.heard_at_flush == (2, 240)  # a flush's figure stays until the next flush
    d.interrupt(4)  # nothing of reply 3 written yet: reply 2 was the last one heard
    assert d.heard_at_flush == (2, 240)
    assert ring.used == 0
    e = Downlink(Ring.allocate(32768), lambda: None)
    e.configure(ULAW)
    e.interrupt(1)
    assert e.heard_at_flush == (None, 0)
