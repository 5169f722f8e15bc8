"""Session end to end against the simulator (127.0.0.1 only, every wait bounded)."""

from __future__ import annotations

import asyncio
import base64
import threading

import pytest
from loopback_helpers import (
    API_KEY,
    Played,
    caller_frames,
    converse,
    dominant_tone,
    feed_realtime,
    settings_for,
    until,
)
from websockets.asyncio.server import serve

from pyconvai.config import SessionSettings
from pyconvai.events import (
    AgentCorrection,
    ClientToolCalled,
    ConversationStarted,
    FormatsNegotiated,
    InterruptionReceived,
    ToolCall,
    Transcript,
)
from pyconvai.session import Session, SessionState
from pyconvai.sim import AgentScript

TONES = (440.0, 660.0, 880.0, 1200.0)


def audio_sent(rec, event_id: int | None = None) -> bytes:
    """Agent audio the simulator sent (optionally of one event_id), concatenated."""
    return b"".join(
        base64.b64decode(m["audio_event"]["audio_base_64"])
        for m in rec.sent_of_type("audio")
        if event_id is None or m["audio_event"]["event_id"] == event_id
    )


def of_type(events: list, cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


def test_greeting_received_and_framed(make_sim):
    script = AgentScript(greeting_ms=1000, odd_split=True, send_speed=10)
    sim = make_sim({"agent_greet": script})
    played = Played()
    events = played.events
    settings = settings_for(sim, "agent_greet", dynamic_variables={"caller_number": "+15551234"})
    session = Session(settings, played)

    async def driver(s: Session) -> None:
        await until(lambda: s.counters.audio_bytes_in >= 32000, 5)  # 1 s of pcm_16000
        s.hangup()

    ended, _ = asyncio.run(converse(session, driver))
    assert ended.status == "CALLER_HANGUP"
    (rec,) = sim.conversations
    assert rec.messages[0][1] == {
        "type": "conversation_initiation_client_data",
        "dynamic_variables": {"caller_number": "+15551234"},
    }
    assert of_type(events, FormatsNegotiated)[0].output_format.name == "pcm_16000"
    assert of_type(events, ConversationStarted) == [ConversationStarted(rec.conversation_id)]
    assert ended.conversation_id == session.conversation_id == rec.conversation_id
    greeting_id = rec.sent_of_type("agent_response")[0]["agent_response_event"]["event_id"]
    assert Transcript("agent", script.greeting_text, True, greeting_id) in events
    frames = played.frames()
    assert len(frames) == 50 and {len(f) for f in frames} == {640}
    assert b"".join(frames) == audio_sent(rec)  # odd chunk splits re-aligned exactly
    assert dominant_tone(frames, "pcm_16000", TONES) == 440.0
    assert session.counters.first_audio_seconds is not None
    assert session.counters.connect_seconds is not None
    assert session.state is SessionState.ENDED
    assert events[-1] == ended


def test_large_frame_over_one_mib(make_sim):
    sim = make_sim({"agent_big": AgentScript(large_frame=True, send_speed=50)})
    session = Session(settings_for(sim, "agent_big"))

    async def driver(s: Session) -> None:
        await until(lambda: s.counters.audio_bytes_in >= 800 * 1024, 5)
        s.hangup()

    ended, _ = asyncio.run(converse(session, driver))
    assert ended.status == "CALLER_HANGUP"
    assert session.counters.protocol_errors == 0


def test_pongs_echo_ping_ids(make_sim):
    sim = make_sim({"agent_ping": AgentScript(ping_interval_s=0.1, greeting_ms=0)})
    session = Session(settings_for(sim, "agent_ping"))

    async def driver(s: Session) -> None:
        await until(lambda: s.counters.pings >= 6, 5)
        await until(lambda: len(sim.conversations[0].pongs) >= 6, 2)
        s.hangup()

    ended, _ = asyncio.run(converse(session, driver))
    assert ended.status == "CALLER_HANGUP"
    (rec,) = sim.conversations
    assert rec.pongs == rec.pings_sent[: len(rec.pongs)]
    assert rec.sent_of_type("ping")[0]["ping_event"]["ping_ms"] is None
    assert isinstance(session.counters.last_ping_ms, int)


def test_barge_in_flushes_and_drops_stale_audio(make_sim):
    script = AgentScript(
        input_format="ulaw_8000",
        output_format="ulaw_8000",
        greeting_ms=4000,
        reply_ms=1000,
        send_speed=4,
        late_stale_chunks=3,
    )
    sim = make_sim({"agent_bargein": script})
    played = Played()
    events = played.events
    session = Session(settings_for(sim, "agent_bargein", buffer_ms=20), played)

    async def driver(s: Session) -> None:
        await until(lambda: of_type(events, FormatsNegotiated), 5)
        await until(lambda: played.queued_frames >= 20, 5)  # greeting is playing
        caller = [*caller_frames("ulaw_8000", None, 200), *caller_frames("ulaw_8000", 700, 400)]
        await feed_realtime(s, iter(caller))
        await until(lambda: of_type(events, InterruptionReceived), 5)
        await until(lambda: played.queued_frames >= 50, 5)  # the whole 1 s reply
        await until(lambda: played.downlink.stale_chunks >= 3, 2)
        s.hangup()

    ended, _ = asyncio.run(converse(session, driver))
    assert ended.status == "CALLER_HANGUP"
    (rec,) = sim.conversations
    (m,) = rec.interruptions
    greeting_id = rec.sent_of_type("agent_response")[0]["agent_response_event"]["event_id"]
    assert m > greeting_id
    (interruption,) = of_type(events, InterruptionReceived)
    assert interruption.event_id == m and played.dropped[0] > 0
    assert played.downlink.stale_chunks == 3
    # the reply carries the interruption's own id and is queued, nothing else is
    assert Transcript("agent", script.reply_text, True, m) in events
    assert Transcript("user", "[caller speech]", True, m) in events
    assert of_type(events, AgentCorrection)[0].event_id == greeting_id
    frames = played.frames()
    assert len(frames) == 50
    assert b"".join(frames) == audio_sent(rec, m)
    assert dominant_tone(frames, "ulaw_8000", TONES) == 880.0


def test_end_call_leaves_goodbye_to_play(make_sim):
    script = AgentScript(
        output_format="ulaw_8000",
        greeting_ms=600,
        goodbye_ms=410,  # 20.5 frames: the last one is completed by finish()
        end_call_after_turns=0,
        send_speed=10,
    )
    sim = make_sim({"agent_bye": script})
    played = Played()
    events = played.events
    session = Session(settings_for(sim, "agent_bye"), played)
    ended, _ = asyncio.run(converse(session))
    assert ended.status == "AGENT_ENDED"
    assert ended.reason == "agent ended the call"
    assert ended.close_code == 1000
    assert session.end_call_requested
    assert [e.name for e in of_type(events, ToolCall)] == ["end_call"]
    (rec,) = sim.conversations
    assert rec.closed.wait(2) and rec.closed_by == "server"
    frames = played.frames()
    sent = audio_sent(rec)
    assert len(sent) == 4800 + 3280
    assert len(frames) == 51
    assert b"".join(frames)[: len(sent)] == sent
    assert frames[-1][-80:] == b"\xff" * 80  # μ-law silence padding
    assert dominant_tone(frames[30:], "ulaw_8000", TONES) == 660.0


def test_max_duration_close_1000_is_agent_ended(make_sim):
    sim = make_sim({"agent_max": AgentScript(max_duration_s=0.3, greeting_ms=2000)})
    ended, _ = asyncio.run(converse(Session(settings_for(sim, "agent_max"))))
    assert ended.status == "AGENT_ENDED"
    assert "max_duration_exceeded" in ended.reason


def test_close_1008_is_config_error(make_sim):
    sim = make_sim(
        {
            "agent_1008": AgentScript(
                close_after_s=0.2, close_code=1008, close_reason="Invalid message received"
            )
        }
    )
    ended, _ = asyncio.run(converse(Session(settings_for(sim, "agent_1008"))))
    assert ended.status == "CONFIG_ERROR"
    assert ended.reason == "websocket closed 1008: invalid_message: Invalid message received"
    assert (ended.close_code, ended.close_reason) == (1008, "Invalid message received")


def test_override_not_enabled_is_config_error(make_sim):
    sim = make_sim({"agent_ovr": AgentScript(enabled_overrides=frozenset({"agent.language"}))})
    overrides = {"agent": {"first_message": "Hi from the PBX"}}
    session = Session(settings_for(sim, "agent_ovr", overrides=overrides))
    ended, _ = asyncio.run(converse(session))
    assert ended.status == "CONFIG_ERROR"
    assert "override_error" in ended.reason and "agent.first_message" in ended.reason
    assert sim.conversations[0].init_data["conversation_config_override"] == overrides


def test_enabled_override_is_accepted(make_sim):
    sim = make_sim({"agent_ovr": AgentScript(enabled_overrides=frozenset({"agent"}))})
    session = Session(settings_for(sim, "agent_ovr", overrides={"agent": {"language": "de"}}))

    async def driver(s: Session) -> None:
        await until(lambda: s.state is SessionState.ACTIVE, 5)
        await asyncio.sleep(0.3)
        s.hangup()

    ended, _ = asyncio.run(converse(session, driver))
    assert ended.status == "CALLER_HANGUP"


def test_unknown_agent_on_public_url_is_config_error(make_sim):
    sim = make_sim(strict=True)
    settings = settings_for(sim, "agent_nobody", api_key=None)
    ended, _ = asyncio.run(converse(Session(settings)))
    assert ended.status == "CONFIG_ERROR"
    assert ended.reason == "websocket closed 1008: Agent not found"


def test_close_1011_is_failed(make_sim):
    script = AgentScript(
        greeting_ms=3000,
        close_after_s=0.3,
        close_code=1011,
        close_reason="Unexpected error in websocket endpoint",
    )
    sim = make_sim({"agent_1011": script})
    ended, _ = asyncio.run(converse(Session(settings_for(sim, "agent_1011"))))
    assert ended.status == "FAILED"
    assert ended.reason == "websocket closed 1011: Unexpected error in websocket endpoint"
    assert ended.close_code == 1011


def test_abrupt_tcp_drop_mid_speech_is_failed(make_sim):
    sim = make_sim({"agent_drop": AgentScript(greeting_ms=5000, drop_tcp_after_s=0.4)})
    session = Session(settings_for(sim, "agent_drop"))
    ended, elapsed = asyncio.run(converse(session))
    assert ended.status == "FAILED"
    assert ended.reason == "connection lost mid-call"
    assert ended.close_code is None
    assert session.counters.audio_bytes_in > 0
    assert elapsed < 3.0


def test_signed_url_401_is_failed_at_once(make_sim):
    sim = make_sim()
    session = Session(settings_for(sim, "agent_a", api_key="sk-wrong"))
    ended, elapsed = asyncio.run(converse(session))
    assert ended.status == "FAILED"
    assert ended.reason == "signed URL: HTTP 401 invalid_api_key Invalid API key"
    assert elapsed < 1.0
    assert len(sim.http_requests) == 1 and sim.conversations == []


def test_slow_signed_url_fails_within_configured_timeout(make_sim):
    sim = make_sim({"agent_slow": AgentScript(signed_url_delay_s=1.5)})
    timeout, attempts = 0.3, 2
    settings = settings_for(
        sim, "agent_slow", connection_timeout_seconds=timeout, max_connection_attempts=attempts
    )
    ended, elapsed = asyncio.run(converse(Session(settings)))
    assert ended.status == "FAILED"
    assert ended.reason == "signed URL: timed out after 0.3 s"
    assert elapsed <= timeout * attempts + 0.25 + 0.5


def test_hangup_while_connecting_returns_promptly(make_sim):
    sim = make_sim({"agent_slow": AgentScript(signed_url_delay_s=1.5)})
    session = Session(settings_for(sim, "agent_slow", connection_timeout_seconds=5))

    async def driver(s: Session) -> None:
        await asyncio.sleep(0.2)
        s.hangup("caller gave up")

    ended, elapsed = asyncio.run(converse(session, driver))
    assert (ended.status, ended.reason) == ("CALLER_HANGUP", "caller gave up")
    assert elapsed < 1.0


def test_caller_hangup_from_another_thread_closes_1000(make_sim):
    sim = make_sim({"agent_a": AgentScript(greeting_ms=3000)})
    events: list = []
    session = Session(settings_for(sim, "agent_a"), events.append)

    async def driver(s: Session) -> None:
        await until(lambda: of_type(events, ConversationStarted), 5)
        await asyncio.sleep(0.2)
        threading.Thread(target=s.hangup, args=("caller hung up",)).start()

    ended, _ = asyncio.run(converse(session, driver))
    assert (ended.status, ended.reason) == ("CALLER_HANGUP", "caller hung up")
    (rec,) = sim.conversations
    assert rec.closed.wait(3)
    assert (rec.close_code, rec.closed_by) == (1000, "client")
    session.hangup()  # after the end: a no-op


@pytest.mark.parametrize(
    "buffer_ms, fmt, size",
    [
        (20, "ulaw_8000", 160),
        (240, "ulaw_8000", 1920),
        (20, "pcm_16000", 640),
        (240, "pcm_16000", 7680),
    ],
)
def test_buffer_ms_sets_user_audio_chunk_size(make_sim, buffer_ms, fmt, size):
    sim = make_sim({"agent_buf": AgentScript(input_format=fmt, greeting_ms=0)})
    session = Session(settings_for(sim, "agent_buf", buffer_ms=buffer_ms))
    fed_ms = 960

    async def driver(s: Session) -> None:
        await until(lambda: s.state is SessionState.ACTIVE, 5)
        await feed_realtime(s, caller_frames(fmt, None, fed_ms))
        await until(lambda: len(sim.conversations[0].audio_chunks) >= fed_ms // buffer_ms, 3)
        s.hangup()

    ended, _ = asyncio.run(converse(session, driver))
    assert ended.status == "CALLER_HANGUP"
    (rec,) = sim.conversations
    assert {len(chunk) for _, chunk in rec.audio_chunks} == {size}
    assert len(rec.received_audio) == fed_ms * size // buffer_ms
    assert session.counters.user_chunks_sent == fed_ms // buffer_ms
    assert session.counters.caller_bytes_out == len(rec.received_audio)


def test_caller_audio_before_metadata_keeps_last_300_ms(make_sim):
    sim = make_sim({"agent_early": AgentScript(input_format="ulaw_8000", greeting_ms=0)})
    session = Session(settings_for(sim, "agent_early", buffer_ms=20))
    fed = [bytes([i]) * 160 for i in range(50)]  # 1 s of μ-law, fed before connecting
    for frame in fed:
        session.feed_caller_audio(frame)

    async def driver(s: Session) -> None:
        await until(lambda: sim.conversations and len(sim.conversations[0].audio_chunks) >= 15, 5)
        s.hangup()

    ended, _ = asyncio.run(converse(session, driver))
    assert ended.status == "CALLER_HANGUP"
    assert sim.conversations[0].received_audio == b"".join(fed[-15:])  # newest 300 ms
    assert session.counters.caller_bytes_dropped == 35 * 160


def test_a_client_tool_call_reaches_the_listener_and_its_answer_the_agent(make_sim):
    sim = make_sim({"agent_tool": AgentScript(greeting_ms=200, client_tool_name="lookup_caller",
                                              client_tool_parameters={"account": 42})})
    events: list = []

    def listener(event):
        events.append(event)
        if isinstance(event, ClientToolCalled):
            session.answer_client_tool(event.tool_call_id, "no such caller", True)

    session = Session(settings_for(sim, "agent_tool"), listener)

    async def driver(s: Session) -> None:
        await until(lambda: sim.conversations and sim.conversations[0].tool_results, 5)
        s.hangup()

    ended, _ = asyncio.run(converse(session, driver))
    assert ended.status == "CALLER_HANGUP"
    (result,) = sim.conversations[0].tool_results
    assert (result["is_error"], result["result"]) == (True, "no such caller")
    (call,) = of_type(events, ClientToolCalled)
    assert (call.name, call.parameters, call.tool_call_id) == ("lookup_caller", {"account": 42}, result["tool_call_id"])


# --- misbehaving servers (a bare websockets server, not the simulator) ----------------


def run_against(handler, timeout: float = 0.5):
    """Run a session (public URL) against ``handler``; return (ended, session, elapsed)."""

    async def main():
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            settings = SessionSettings(
                "bad",
                "agent_bad",
                signed_url_endpoint=f"http://127.0.0.1:{port}/x",  # public URL: no api key
                connection_timeout_seconds=timeout,
                max_connection_attempts=1,
            )
            session = Session(settings)
            ended, elapsed = await converse(session, timeout=10)
            return ended, session, elapsed

    return asyncio.run(main())


def test_no_metadata_fails_within_timeout():
    async def silent(ws):
        await asyncio.wait_for(ws.wait_closed(), 5)

    ended, _, elapsed = run_against(silent, timeout=0.5)
    assert ended.status == "FAILED"
    assert ended.reason == "no conversation_initiation_metadata within 0.5 s"
    assert elapsed < 2.0


def test_garbage_is_counted_and_bad_format_is_config_error():
    async def garbage(ws):
        await ws.recv()  # init data
        await ws.send(b"\x00\x01")
        await ws.send("{not json")
        await ws.send('{"type": "brand_new_event"}')
        await ws.send(
            '{"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event":'
            ' {"conversation_id": "c1", "agent_output_audio_format": "mp3_44100"}}'
        )
        await asyncio.wait_for(ws.wait_closed(), 5)

    ended, session, _ = run_against(garbage, timeout=2)
    assert ended.status == "CONFIG_ERROR"
    assert ended.reason == (
        "unusable conversation_initiation_metadata: unsupported audio format 'mp3_44100'"
    )
    assert session.counters.protocol_errors == 3


def test_api_key_never_in_reason_or_repr(make_sim):
    sim = make_sim()
    settings = settings_for(sim, "agent_a", api_key=API_KEY + "-wrong")
    ended, _ = asyncio.run(converse(Session(settings)))
    assert API_KEY not in ended.reason and API_KEY not in repr(settings)
