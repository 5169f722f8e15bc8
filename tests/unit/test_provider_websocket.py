"""The generic bridge protocol's sans-I/O core (pyconvai.providers.websocket)."""

from __future__ import annotations

import base64

from pyconvai.config import BridgeAgent, Listening
from pyconvai.protocol import (
    AgentAudio,
    AgentResponse,
    AudioFormat,
    ClientToolCall,
    Interruption,
    Metadata,
    ProtocolError,
    ServerError,
    Unknown,
    UserTranscript,
)
from pyconvai.providers import BridgeProtocol
from tests.unit.cores import feed, sent


def core(**agent) -> BridgeProtocol:
    return BridgeProtocol(BridgeAgent(url="ws://127.0.0.1:1/bridge", **agent))



def test_begin_sends_session_init_with_every_setting_then_the_initial_message():
    p = core(voice="alloy", language="de", system_prompt="Be brief.", initial_message="Hello",
             listening=Listening(False, 0.7, 800))
    p.begin()
    assert sent(p) == [
        {"type": "session.init", "config": {
            "audio_format": "g711_ulaw", "sample_rate": 8000, "channels": 1, "language": "de",
            "voice": "alloy", "system_prompt": "Be brief.", "vad_enabled": False, "vad_threshold": 0.7,
            "vad_silence_duration_ms": 800}},
        {"type": "text.input", "text": "Hello"},
    ]


def test_session_started_or_ready_starts_once_in_ulaw_unless_the_server_names_slin16():
    p = core()
    (meta,) = feed(p, {"type": "ready"})
    assert meta == Metadata("", AudioFormat("ulaw", 8000), AudioFormat("ulaw", 8000))
    assert feed(p, {"type": "session_started", "session_id": "s1"}) == []  # once only
    q = core()
    (meta,) = feed(q, {"type": "session_started", "session_id": "s2", "audio_format": "slin16", "sample_rate": 16000})
    assert meta == Metadata("s2", AudioFormat("pcm", 16000), AudioFormat("pcm", 16000))
    q.user_audio(b"\x01\x02")
    assert sent(q) == [{"type": "audio.input", "audio": base64.b64encode(b"\x01\x02").decode(), "format": "slin16"}]


def test_an_unsupported_format_is_a_protocol_error_on_the_start_message():
    p = core()
    (error,) = feed(p, {"type": "session_started", "audio_format": "opus"})
    assert isinstance(error, ProtocolError) and error.message_type in p.START_TYPES
    (error,) = feed(core(), {"type": "session_started", "audio_format": "pcm16", "sample_rate": 24000})
    assert isinstance(error, ProtocolError)


def test_audio_both_shapes_transcripts_both_shapes_and_barge_in_both_names():
    p = core()
    feed(p, {"type": "ready"})
    pcm = b"\xff" * 160
    b64 = base64.b64encode(pcm).decode()
    assert feed(p, {"type": "audio_delta", "audio": b64}) == [AgentAudio(pcm, None)]
    assert feed(p, {"type": "audio_chunk", "data": b64}) == [AgentAudio(pcm, None)]
    assert feed(p, {"type": "transcript", "role": "assistant", "text": "Hi"}) == [AgentResponse("Hi", None)]
    assert feed(p, {"type": "transcription", "speaker": "user", "text": "Yo"}) == [UserTranscript("Yo", None)]
    assert feed(p, {"type": "user_speech_started"}) == [Interruption(None, "user_speech_started")]
    assert feed(p, {"type": "speech_started"}) == [Interruption(None, "speech_started")]
    assert [type(e) for e in feed(p, {"type": "response_complete"})] == [Unknown]
    (bad,) = feed(p, {"type": "audio_delta", "audio": "not base64!"})
    assert isinstance(bad, ProtocolError)


def test_errors_carry_fatal_and_tools_round_trip():
    p = core()
    feed(p, {"type": "ready"})
    assert feed(p, {"type": "error", "message": "model overloaded", "fatal": True}) == [
        ServerError(None, "error", "model overloaded", "", True)]
    assert feed(p, {"type": "error", "message": "try again"})[0].fatal is False
    (call,) = feed(p, {"type": "tool_call", "call_id": "c1", "name": "lookup", "arguments": '{"q": "x"}'})
    assert call == ClientToolCall("lookup", "c1", {"q": "x"}, None)
    p.client_tool_result("c1", "found", False)
    p.user_message("1234#")
    assert sent(p) == [{"type": "tool_result", "call_id": "c1", "result": "found", "is_error": False},
                       {"type": "text.input", "text": "1234#"}]
    (bad,) = feed(p, {"type": "tool_call", "name": "lookup"})
    assert isinstance(bad, ProtocolError)


def test_a_server_that_talks_without_announcing_the_session_has_started_in_ulaw():
    p = core()
    meta, audio = feed(p, {"type": "audio_delta", "audio": base64.b64encode(b"\xff" * 160).decode()})
    assert meta == Metadata("", AudioFormat("ulaw", 8000), AudioFormat("ulaw", 8000))
    assert audio == AgentAudio(b"\xff" * 160, None)
    assert feed(p, {"type": "session_started"}) == []  # too late to change anything
