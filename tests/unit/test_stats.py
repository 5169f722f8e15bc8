"""Figures from the module's clock records (pyconvai/stats.py)."""

from pyconvai.stats import CallStats, Histogram, Totals
from pyconvai.wire import CLOCK_RECORD, ClockKind

CLOCK_WRITTEN, CLOCK_CAPTURED = ClockKind.WRITTEN, ClockKind.CAPTURED

FRAME = 160


def records(*frames: tuple[int, float], kind: int = CLOCK_WRITTEN) -> bytes:
    return b"".join(CLOCK_RECORD.pack(position, int(t * 1e9), kind, 0) for position, t in frames)


def playing(first_position: int, start: float, count: int, step: float = 0.020) -> bytes:
    return records(*[(first_position + i * FRAME, start + i * step) for i in range(count)])


def test_downlink_latency_from_audio_received_to_first_frame_written():
    stats = CallStats()
    stats.audio_after_silence(10.000)
    stats.records(playing(0, 10.012, 5))  # frames at 10.012 .. 10.092
    assert [round(x, 6) for x in stats.downlink_latencies] == [0.012]
    stats.audio_after_silence(10.050)  # the ring ran dry, but a frame still plays: the stream goes on
    stats.records(playing(5 * FRAME, 10.112, 3))
    assert len(stats.downlink_latencies) == 1
    stats.audio_after_silence(20.000)  # after silence: a new sample
    stats.records(playing(8 * FRAME, 20.030, 2))
    assert [round(x, 6) for x in stats.downlink_latencies] == [0.012, 0.030]
    assert [round(x, 6) for x in stats.downlink_first_frames] == [10.012, 20.030]


def test_audio_arriving_while_the_last_frame_still_plays_is_no_latency_sample():
    stats = CallStats()
    stats.records(playing(0, 1.000, 3))  # the last frame, written at 1.040, plays until 1.060
    stats.audio_after_silence(1.055)
    stats.records(playing(3 * FRAME, 1.060, 2))  # written in step: the caller hears no gap
    assert stats.downlink_latencies == []
    stats.audio_after_silence(1.090)  # the frame written at 1.080 plays until 1.100
    stats.records(playing(5 * FRAME, 1.101, 1))
    assert stats.downlink_latencies == []
    stats.audio_after_silence(1.200)
    stats.records(playing(6 * FRAME, 1.2004, 1))
    assert [round(x, 6) for x in stats.downlink_latencies] == [0.0004]


def test_pacing_intervals_exclude_silences():
    stats = CallStats()
    stats.records(playing(0, 1.0, 4) + playing(4 * FRAME, 5.0, 3, step=0.021))
    assert stats.frame_intervals_ms == {20: 3, 21: 2}
    assert stats.frames_written == 7


def test_barge_in_zero_when_no_old_frame_is_written_after_the_interruption():
    stats = CallStats()
    stats.records(playing(0, 1.0, 10))  # frames 0..9 written up to 1.18
    stats.interrupted(1.19, boundary=13 * FRAME)  # 3 more were queued, then flushed
    stats.records(playing(13 * FRAME, 1.20, 5))  # the reply
    stats.settle(2.0)
    assert stats.barge_in_stops == [0.0]
    assert stats.frames_before_interruptions == [10]


def test_barge_in_measures_the_last_old_frame_written_after_the_interruption():
    stats = CallStats()
    stats.interrupted(1.0, boundary=20 * FRAME)
    stats.records(records((18 * FRAME, 0.995), (19 * FRAME, 1.015), (20 * FRAME, 1.035)))
    stats.settle(1.1)
    assert stats.barge_in_stops == []  # still inside the window
    stats.settle(1.5)
    assert [round(x, 6) for x in stats.barge_in_stops] == [0.015]
    assert stats.frames_before_interruptions == [1]  # the record at 0.995 was written before


def test_partial_records_are_ignored():
    stats = CallStats()
    stats.records(playing(0, 1.0, 2) + b"\x00" * 5)
    assert stats.frames_written == 2


def test_histogram_and_totals_in_prometheus_format():
    h = Histogram()
    for value in (0.004, 0.015, 0.5):
        h.add(value)
    lines = h.lines("x")
    assert 'x_bucket{le="0.005"} 1' in lines and 'x_bucket{le="0.02"} 2' in lines
    assert 'x_bucket{le="+Inf"} 3' in lines and "x_count 3" in lines
    totals = Totals()
    stats = CallStats(downlink_latencies=[0.01], interruptions=2)
    stats.records(playing(0, 1.0, 50))
    totals.add(stats, frames_in=40, underruns=1, dropped=0)
    text = totals.prometheus()
    assert "asterisk_elevenlabs_frames_out_total 50" in text
    assert "asterisk_elevenlabs_interruptions_total 2" in text
    assert "asterisk_elevenlabs_underruns_total 1" in text
    assert "asterisk_elevenlabs_downlink_latency_seconds_count 1" in text


def test_uplink_latency_from_the_capture_of_a_chunks_last_byte():
    stats = CallStats()
    captures = records(*[((i + 1) * FRAME, 1.0 + i * 0.020) for i in range(6)], kind=CLOCK_CAPTURED)
    stats.caller_audio_sent(3 * FRAME, 1.0455)  # sent before its capture record was read
    assert stats.uplink_latencies == []
    stats.records(captures)
    stats.caller_audio_sent(6 * FRAME, 1.1032)
    assert [round(x, 6) for x in stats.uplink_latencies] == [0.0055, 0.0032]
    assert [round(x, 3) for x in stats.uplink_captured] == [1.04, 1.1]


def test_one_batch_with_frames_before_and_after_the_audio_and_a_key_between():
    """clockstats.c counts the frames before the audio arrived and hands the first one after
    it to Python, which takes the sample; a key pressed in between comes back in order."""
    stats = CallStats()
    stats.records(playing(0, 1.0, 3))  # the last frame, written at 1.040, plays until 1.060
    stats.audio_after_silence(2.000)
    key = CLOCK_RECORD.pack(ord("5"), int(2.001e9), ClockKind.DTMF, 0)
    batch = playing(3 * FRAME, 1.9, 2, step=0.05) + key + playing(5 * FRAME, 2.007, 4)
    assert stats.records(batch) == [(ClockKind.DTMF, ord("5"), 2.001)]
    assert stats.frames_written == 9
    # The frame at 1.95 played until 1.97: 2.000 found silence, and 2.007 was its first frame.
    assert [round(x, 6) for x in stats.downlink_latencies] == [0.007]
    assert stats.frame_intervals_ms == {20: 5, 50: 1, 57: 1}
    assert (stats.first_write, round(stats.last_write, 6)) == (1.0, 2.067)


def test_captures_beyond_what_is_kept_lose_samples_but_never_time_a_chunk_wrongly():
    stats = CallStats()
    many = 300  # more than clockstats.h keeps (CONVAI_CLOCKSTATS_CAPTURES)
    stats.records(records(*[((i + 1) * FRAME, 1.0 + i * 0.020) for i in range(many)], kind=CLOCK_CAPTURED))
    stats.caller_audio_sent(2 * FRAME, 7.0)  # its capture was dropped: no sample, not a later one's
    stats.caller_audio_sent(many * FRAME, 7.5)
    captured_last = 1.0 + (many - 1) * 0.020
    assert stats.uplink_captured == [captured_last]
    assert [round(x, 6) for x in stats.uplink_latencies] == [round(7.5 - captured_last, 6)]
