"""The call bridge (pyconvai/call.py) with real rings and an eventfd, no network."""

import os

import pytest

from pyconvai.call import Call
from pyconvai.events import AgentAudioReceived, ConversationStarted, FormatsNegotiated, InterruptionReceived
from pyconvai.outcome import EndStatus, SessionEnded
from pyconvai.playback import FRAMES_AHEAD
from pyconvai.protocol import AudioFormat
from pyconvai.ring import Ring
from pyconvai.wire import CONTROL_HEADER, Control

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
    while header := ring.pop_exact(CONTROL_HEADER.size):
        kind, _, length = CONTROL_HEADER.unpack(header)
        records.append((kind, ring.pop_exact(length).decode().split("\0") if length else [""]))
    return records


def test_formats_and_start_become_control_records_and_wake_the_channel(bridge):
    call, rings, wake, *_ = bridge
    call._on_event(FormatsNegotiated(ULAW, AudioFormat("pcm", 16000)))
    call._on_event(ConversationStarted("conv_1"))
    assert control_records(rings["control"]) == [(Control.FORMATS, ["ulaw_8000", "pcm_16000"]),
                                                  (Control.STARTED, ["conv_1"])]
    assert os.eventfd_read(wake) == 2
    assert call.downlink.frame_bytes == 640 and call.input_frame_bytes == 160


def audio(call: Call, frames: int, event_id: int, at: float = 1.0) -> None:
    call._on_event(AgentAudioReceived(bytes(160 * frames), event_id, at))


def test_playback_keeps_the_ring_frames_ahead_and_a_flush_empties_it(bridge):
    call, rings, *_ = bridge
    call._on_event(FormatsNegotiated(ULAW, ULAW))
    audio(call, FRAMES_AHEAD + 5, 1)
    call.playback_tick()
    assert rings["downlink"].used == FRAMES_AHEAD * 160
    assert rings["downlink"].pop_exact(160) is not None
    call.playback_tick()
    assert rings["downlink"].used == FRAMES_AHEAD * 160
    call._on_event(InterruptionReceived(2, 2.0))  # queue and ring flushed under one lock
    assert rings["downlink"].used == 0 and call.downlink.queued_ms == 0
    audio(call, 1, 1)  # late audio of the interrupted reply
    assert rings["downlink"].used == 0
    assert call.stats.interruptions == 1


def test_audio_reaching_an_empty_ring_fills_it_and_wakes_the_channel_thread(bridge):
    call, rings, wake, *_ = bridge
    call._on_event(FormatsNegotiated(ULAW, ULAW))
    os.eventfd_read(wake)  # the formats record's wake
    audio(call, 2, 1)
    assert rings["downlink"].used == 2 * 160
    assert os.eventfd_read(wake) == 1
    audio(call, FRAMES_AHEAD, 1, at=1.1)  # the ring was not empty: topped up, no wake
    assert rings["downlink"].used == FRAMES_AHEAD * 160
    os.set_blocking(wake, False)
    with pytest.raises(BlockingIOError):
        os.eventfd_read(wake)


def test_an_underrun_is_a_dry_ring_with_audio_waiting_but_not_the_start_after_a_flush(bridge):
    call, rings, *_ = bridge
    call._on_event(FormatsNegotiated(ULAW, ULAW))
    audio(call, FRAMES_AHEAD + 3, 1)  # the ring takes its lead, 3 frames wait here
    call.playback_tick()
    rings["downlink"].pop_exact(FRAMES_AHEAD * 160)  # the channel thread played the whole lead
    call.playback_tick()  # and only now does the playback thread find the ring dry
    assert call.downlink.underruns == 1
    call._on_event(InterruptionReceived(2, 2.0))
    audio(call, 3, 2)  # the reply goes straight to the flushed ring
    call.playback_tick()
    assert call.downlink.underruns == 1
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
    assert control_records(rings["control"]) == [(Control.END, ["FAILED", "conv_9", "websocket closed 1011: boom", ""])]
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
    assert kind == Control.END and parts[0] == "CONFIG_ERROR" and "buffer_ms" in parts[2]
    os.close(wake)


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
    assert record[0] == Control.END and record[1][0] == "FAILED" and "boom" in record[1][2]
    assert call.wake_fd == -1
    call._wake()  # after the close: nothing is written anywhere


def test_server_text_cannot_forge_ami_headers(bridge):
    from pyconvai.events import Transcript

    call, rings, _, _, _, events = bridge
    call._on_event(Transcript("agent", "hello\r\nEvent: Hangup\r\nChannel: SIP/victim\x00", True, 3))
    [(name, body)] = events
    headers = [line.split(":", 1)[0] for line in body.split("\r\n") if line]
    assert name == "ElevenLabsTranscript" and headers.count("Event") == 0 and "\x00" not in body
    assert headers == ["Channel", "Uniqueid", "Agent", "ConversationID", "Role", "EventID", "Text"]


def test_a_client_tool_nobody_carries_out_is_refused_and_reported(bridge):
    from pyconvai.events import ClientToolCalled

    call, _, _, _, _, events = bridge
    call._on_event(ClientToolCalled("lookup_order", "c1", {"order": 7}))
    [(name, body)] = events
    assert name == "ElevenLabsToolCall"
    assert "Tool: lookup_order\r\n" in body and "IsError: yes\r\n" in body and 'Parameters: {"order":7}' in body


def test_an_agent_ending_behind_a_flood_drains_for_at_most_the_queue_cap(bridge, monkeypatch):
    """AGENT_ENDED with far more audio sent than playable: the call waits for what is queued
    (at most MAX_QUEUED_MS) plus the slack, never for everything the server sent."""
    import asyncio
    import time

    from pyconvai.call import DRAIN_SLACK_SECONDS
    from pyconvai.playback import MAX_QUEUED_MS

    call, *_ = bridge
    call._on_event(FormatsNegotiated(ULAW, ULAW))
    for event_id in range(1, 11):  # ten minutes of audio, a minute per event
        audio(call, 3000, event_id)
    cap_ms = MAX_QUEUED_MS + FRAMES_AHEAD * 20  # the queue, and the frames already in the ring
    assert call.downlink.queued_ms <= cap_ms

    async def agent_ended() -> SessionEnded:
        return SessionEnded(EndStatus.AGENT_ENDED, "agent ended the call (close 1000)", "conv_1", 1000, "")

    monkeypatch.setattr(call.session, "run", agent_ended)
    asyncio.run(call.run())
    assert call.ended is not None and not call.finished  # the playback thread finishes it once drained
    assert call.drain_deadline <= time.monotonic() + cap_ms / 1000 + DRAIN_SLACK_SECONDS
