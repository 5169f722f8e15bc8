"""The call bridge (pyconvai/call.py) with real rings and an eventfd, no network."""

import os
import struct

import pytest

from pyconvai.call import CONTROL_END, CONTROL_FORMATS, CONTROL_STARTED, FRAMES_AHEAD, Call, end_reason
from pyconvai.protocol import AudioFormat
from pyconvai.ring import Ring
from pyconvai.session import AgentAudioQueued, ConversationStarted, EndStatus, FormatsNegotiated, SessionEnded

ULAW = AudioFormat("ulaw", 8000)


@pytest.fixture
def bridge():
    rings = {name: Ring.allocate(65536) for name in ("uplink", "downlink", "control", "clock")}
    wake = os.eventfd(0, os.EFD_NONBLOCK)
    scheduled, forgotten, events = [], [], []
    call = Call(
        {"channel": "Local/test-0001;2", "uniqueid": "1.2", "agent": "sales", "agent_id": "agent_1"},
        {name: ring.address for name, ring in rings.items()},
        wake,
        schedule=scheduled.append,
        forget=forgotten.append,
        manager_event=lambda name, body: events.append((name, body)),
    )
    yield call, rings, wake, scheduled, forgotten, events
    os.close(wake)


def control_records(ring: Ring) -> list[tuple[int, list[str]]]:
    records = []
    while header := ring.pop_exact(4):
        kind, _, length = struct.unpack("<BBH", header)
        records.append((kind, ring.pop_exact(length).decode().split("\0") if length else [""]))
    return records


def test_formats_and_start_become_control_records_and_wake_the_channel(bridge):
    call, rings, wake, *_ = bridge
    call._on_event(FormatsNegotiated(ULAW, AudioFormat("pcm", 16000)))
    call._on_event(ConversationStarted("conv_1"))
    assert control_records(rings["control"]) == [(CONTROL_FORMATS, ["ulaw_8000", "pcm_16000"]),
                                                  (CONTROL_STARTED, ["conv_1"])]
    assert os.eventfd_read(wake) == 2
    assert call.frame_bytes == 640 and call.input_frame_bytes == 160


def test_playback_keeps_the_ring_frames_ahead_and_a_flush_empties_it(bridge):
    call, rings, *_ = bridge
    call._on_event(FormatsNegotiated(ULAW, ULAW))
    call.session.playback.configure(ULAW)
    call.session.playback.add(bytes(160 * (FRAMES_AHEAD + 5)), 1)
    call.playback_tick()
    assert rings["downlink"].used == FRAMES_AHEAD * 160
    assert rings["downlink"].pop_exact(160) is not None
    call.playback_tick()
    assert rings["downlink"].used == FRAMES_AHEAD * 160
    call.session.playback.interrupt(2)  # the flush hook discards the ring under the queue's lock
    assert rings["downlink"].used == 0 and call.session.playback.queued_frames == 0


def test_audio_reaching_an_empty_ring_fills_it_and_wakes_the_channel_thread(bridge):
    call, rings, wake, *_ = bridge
    call._on_event(FormatsNegotiated(ULAW, ULAW))
    os.eventfd_read(wake)  # the formats record's wake
    call.session.playback.configure(ULAW)
    call.session.playback.add(bytes(160 * 2), 1)
    call._on_event(AgentAudioQueued(1, 320, 1.0, True))
    assert rings["downlink"].used == 2 * 160
    assert os.eventfd_read(wake) == 1
    call.session.playback.add(bytes(160 * FRAMES_AHEAD), 1)
    call._on_event(AgentAudioQueued(1, 160 * FRAMES_AHEAD, 1.1))  # the ring was not empty: topped up, no wake
    assert rings["downlink"].used == FRAMES_AHEAD * 160
    os.set_blocking(wake, False)
    with pytest.raises(BlockingIOError):
        os.eventfd_read(wake)


def test_an_underrun_is_a_dry_ring_with_audio_waiting_but_not_the_start_after_a_flush(bridge):
    call, rings, *_ = bridge
    call._on_event(FormatsNegotiated(ULAW, ULAW))
    playback = call.session.playback
    playback.configure(ULAW)
    playback.add(bytes(160 * 3), 1)
    call.playback_tick()
    rings["downlink"].pop_exact(3 * 160)  # the channel thread played everything
    playback.add(bytes(160 * 3), 1)  # audio waited while the ring ran dry
    call.playback_tick()
    assert call.underruns == 1
    playback.interrupt(2)
    playback.add(bytes(160 * 3), 2)  # the reply, queued before the next tick
    call.playback_tick()
    assert call.underruns == 1
    assert rings["downlink"].used == 3 * 160


def test_caller_audio_goes_from_the_uplink_ring_to_the_session(bridge):
    call, rings, *_ = bridge
    call._on_event(FormatsNegotiated(ULAW, ULAW))
    rings["uplink"].push(b"\xff" * 480)
    call.pump()
    assert call.caller_bytes == 480 and call.frames_in == 3
    assert rings["uplink"].used == 0


def test_finish_sends_end_once_publishes_stats_and_forgets_the_call(bridge):
    call, rings, wake, _, forgotten, events = bridge
    ended = SessionEnded(EndStatus.FAILED, "websocket closed 1011: boom", "conv_9", 1011, "boom")
    call._finish(ended)
    call._finish(ended)
    assert control_records(rings["control"]) == [(CONTROL_END, ["FAILED", "conv_9", "websocket closed 1011: boom"])]
    assert forgotten == [call]
    [(name, body)] = events
    assert name == "ElevenLabsConversationStats"
    assert "Channel: Local/test-0001;2\r\n" in body and "Status: FAILED\r\n" in body


def test_unusable_settings_end_the_call_with_config_error_at_once():
    rings = {name: Ring.allocate(4096) for name in ("uplink", "downlink", "control", "clock")}
    wake = os.eventfd(0, os.EFD_NONBLOCK)
    call = Call({"channel": "c", "agent": "a", "agent_id": "x", "buffer_ms": "fast"},
                {name: ring.address for name, ring in rings.items()}, wake,
                schedule=lambda f: f(), forget=lambda c: None)
    assert call.finished and call.session is None
    [(kind, parts)] = control_records(rings["control"])
    assert kind == CONTROL_END and parts[0] == "CONFIG_ERROR" and "buffer_ms" in parts[2]
    os.close(wake)


def test_end_reason_adds_the_close_code_once():
    assert end_reason(SessionEnded(EndStatus.AGENT_ENDED, "agent ended the call", "c", 1000, "")) == \
        "agent ended the call (close 1000)"
    assert end_reason(SessionEnded(EndStatus.FAILED, "websocket closed 1011: x", "c", 1011, "x")) == \
        "websocket closed 1011: x"
    assert end_reason(SessionEnded(EndStatus.FAILED, "signed URL: HTTP 401", None)) == "signed URL: HTTP 401"


def test_a_call_task_that_fails_still_finishes_the_call(bridge):
    import asyncio

    call, rings, _, _, forgotten, _ = bridge

    async def broken() -> None:
        raise RuntimeError("boom")

    def loop_run(coroutine_function):
        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(coroutine_function())
            loop.run_until_complete(asyncio.wait([task]))
        finally:
            loop.close()
        return task

    task = loop_run(broken)
    async def agent_ended() -> None:  # run() returns; the playback thread finishes the call later
        return None

    done = loop_run(agent_ended)
    call.task_done(done)
    assert not call.finished
    call.task_done(task)
    assert call.finished and forgotten == [call]
    (record,) = control_records(rings["control"])
    assert record[0] == CONTROL_END and record[1][0] == "FAILED" and "boom" in record[1][2]
    assert call.wake_fd == -1
    call._wake()  # after the close: nothing is written anywhere
