"""ConvaiProtocol without a network: server JSON in, events and client JSON out."""

import base64
import json

import pytest

from pyconvai.protocol import (
    AgentAudio,
    AgentResponse,
    AgentResponseCorrection,
    AgentToolRequest,
    AgentToolResponse,
    AudioFormat,
    ClientToolCall,
    ConvaiProtocol,
    Interruption,
    Metadata,
    Ping,
    ProtocolError,
    ServerError,
    TentativeUserTranscript,
    Unknown,
    UserTranscript,
    VadScore,
)


def feed(msg: object) -> tuple[ConvaiProtocol, list]:
    proto = ConvaiProtocol()
    proto.receive_text(msg if isinstance(msg, str) else json.dumps(msg))
    return proto, proto.events_received()


def one(msg: object):
    proto, events = feed(msg)
    assert len(events) == 1, events
    return events[0]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- AudioFormat --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, encoding, rate, width, frame",
    [
        ("ulaw_8000", "ulaw", 8000, 1, 160),
        ("pcm_16000", "pcm", 16000, 2, 640),
        ("pcm_22050", "pcm", 22050, 2, 882),
        ("pcm_44100", "pcm", 44100, 2, 1764),
        ("pcm_48000", "pcm", 48000, 2, 1920),
    ],
)
def test_audio_format_parse(name, encoding, rate, width, frame):
    fmt = AudioFormat.parse(name)
    assert (fmt.encoding, fmt.sample_rate, fmt.bytes_per_sample) == (encoding, rate, width)
    assert fmt.frame_bytes(20) == frame
    assert fmt.name == str(fmt) == name


@pytest.mark.parametrize("name", ["mp3_44100", "pcm", "pcm_", "ulaw_x", "_8000", "pcm_0", ""])
def test_audio_format_rejects(name):
    with pytest.raises(ValueError):
        AudioFormat.parse(name)


def test_frame_bytes_whole_samples():
    assert AudioFormat("pcm", 22050).frame_bytes(10) == 220 * 2
    assert AudioFormat("ulaw", 8000).frame_bytes(240) == 1920
    size = AudioFormat("ulaw", 8000).frame_bytes(0.020 * 1000)  # float ms still gives an int
    assert size == 160 and isinstance(size, int)


# --- server messages ----------------------------------------------------------------


def test_metadata():
    proto, events = feed(
        {
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": {
                "conversation_id": "conv_1",
                "agent_output_audio_format": "ulaw_8000",
                "user_input_audio_format": "pcm_16000",
            },
        }
    )
    assert events == [
        Metadata("conv_1", AudioFormat("pcm", 16000), AudioFormat("ulaw", 8000))
    ]
    assert proto.metadata == events[0]


def test_metadata_defaults_input_format():
    ev = one(
        {
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": {
                "conversation_id": "c",
                "agent_output_audio_format": "pcm_24000",
            },
        }
    )
    assert ev.input_format == AudioFormat("pcm", 16000)
    assert ev.output_format == AudioFormat("pcm", 24000)


def test_metadata_unsupported_format_is_protocol_error():
    proto, events = feed(
        {
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": {"agent_output_audio_format": "mp3_44100"},
        }
    )
    assert isinstance(events[0], ProtocolError)
    assert events[0].message_type == "conversation_initiation_metadata"
    assert proto.errors == 1 and proto.metadata is None


def test_duplicate_metadata_is_protocol_error():
    proto = ConvaiProtocol()
    msg = json.dumps(
        {"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {}}
    )
    proto.receive_text(msg)
    proto.receive_text(msg)
    first, second = proto.events_received()
    assert isinstance(first, Metadata) and isinstance(second, ProtocolError)
    assert proto.errors == 1


def test_audio():
    ev = one({"type": "audio", "audio_event": {"audio_base_64": b64(b"\x01\x02"), "event_id": 7}})
    assert ev == AgentAudio(b"\x01\x02", 7)


def test_audio_with_alignment_and_empty_payload():
    ev = one(
        {
            "type": "audio",
            "audio_event": {
                "audio_base_64": "",
                "event_id": 3,
                "alignment": {"chars": ["H"], "char_start_times_ms": [0], "char_durations_ms": [5]},
            },
        }
    )
    assert ev == AgentAudio(b"", 3)


def test_legacy_audio_shape():
    assert one({"type": "audio", "audio": {"chunk": b64(b"xyz")}}) == AgentAudio(b"xyz", None)


def test_agent_response_and_correction():
    assert one(
        {"type": "agent_response", "agent_response_event": {"agent_response": "Hi", "event_id": 1}}
    ) == AgentResponse("Hi", 1)
    assert one(
        {
            "type": "agent_response_correction",
            "agent_response_correction_event": {
                "original_agent_response": "Hello there friend",
                "corrected_agent_response": "Hello",
                "event_id": 1,
            },
        }
    ) == AgentResponseCorrection("Hello there friend", "Hello", 1)


def test_transcripts():
    assert one(
        {
            "type": "user_transcript",
            "user_transcription_event": {"user_transcript": "I need help", "event_id": 8},
        }
    ) == UserTranscript("I need help", 8)
    assert one(
        {
            "type": "tentative_user_transcript",
            "tentative_user_transcription_event": {"user_transcript": "I need", "event_id": 8},
        }
    ) == TentativeUserTranscript("I need", 8)


def test_interruption_with_and_without_reason():
    assert one({"type": "interruption", "interruption_event": {"event_id": 8}}) == Interruption(8)
    assert one(
        {"type": "interruption", "interruption_event": {"event_id": 9, "reason": "user"}}
    ) == Interruption(9, "user")


def test_vad_score():
    assert one({"type": "vad_score", "vad_score_event": {"vad_score": 0.95}}) == VadScore(0.95)
    assert one({"type": "vad_score", "vad_score_event": {"vad_score": 1}}) == VadScore(1.0)


def test_ping_queues_pong_with_same_id():
    proto, events = feed({"type": "ping", "ping_event": {"event_id": 42, "ping_ms": None}})
    assert events == [Ping(42, None)]
    assert [json.loads(m) for m in proto.messages_to_send()] == [{"type": "pong", "event_id": 42}]
    assert proto.messages_to_send() == []


def test_ping_ms_number_and_missing():
    assert one({"type": "ping", "ping_event": {"event_id": 1, "ping_ms": 35}}) == Ping(1, 35)
    assert one({"type": "ping", "ping_event": {"event_id": 2}}) == Ping(2, None)


def test_ping_without_event_id_is_protocol_error():
    proto, events = feed({"type": "ping", "ping_event": {"ping_ms": 5}})
    assert isinstance(events[0], ProtocolError)
    assert proto.messages_to_send() == []


def test_client_tool_call():
    ev = one(
        {
            "type": "client_tool_call",
            "client_tool_call": {
                "tool_name": "check_account",
                "tool_call_id": "call_123",
                "parameters": {"user_id": "u1"},
                "event_id": 9,
                "expects_response": True,
            },
        }
    )
    assert ev == ClientToolCall("check_account", "call_123", {"user_id": "u1"}, 9)


def test_agent_tool_request_and_response():
    assert one(
        {
            "type": "agent_tool_request",
            "agent_tool_request": {
                "tool_name": "lookup",
                "tool_call_id": "t1",
                "tool_type": "webhook",
                "event_id": 4,
            },
        }
    ) == AgentToolRequest("lookup", "t1", "webhook", 4)
    ev = one(
        {
            "type": "agent_tool_response",
            "agent_tool_response": {
                "tool_name": "end_call",
                "tool_call_id": "end_call_1",
                "tool_type": "system",
                "is_error": False,
                "is_called": True,
                "event_id": 5,
            },
        }
    )
    assert ev == AgentToolResponse("end_call", "end_call_1", "system", False, 5)
    assert ev.is_end_call


def test_agent_tool_response_without_event_id():
    ev = one(
        {
            "type": "agent_tool_response",
            "agent_tool_response": {
                "tool_name": "skip_turn",
                "tool_type": "system",
                "is_error": False,
            },
        }
    )
    assert ev == AgentToolResponse("skip_turn", "", "system", False, None)
    assert not ev.is_end_call


def test_error():
    ev = one(
        {
            "type": "error",
            "error_event": {
                "code": 1008,
                "message": "Override not allowed",
                "error_type": "override_error",
                "reason": "bad override",
                "debug_message": None,
                "details": None,
            },
        }
    )
    assert ev == ServerError(1008, "override_error", "Override not allowed", "bad override")


@pytest.mark.parametrize("kind", ["agent_chat_response_part", "internal_turn_probability", "x"])
def test_unknown_types(kind):
    proto, events = feed({"type": kind, "something": {"a": 1}})
    assert events == [Unknown(kind, {"type": kind, "something": {"a": 1}})]
    assert proto.errors == 0


def test_missing_optional_fields_take_defaults():
    assert one({"type": "agent_response"}) == AgentResponse("", None)
    assert one({"type": "user_transcript", "user_transcription_event": {}}) == UserTranscript(
        "", None
    )
    assert one({"type": "interruption"}) == Interruption(None)
    assert one({"type": "audio", "audio_event": {"audio_base_64": b64(b"a")}}) == AgentAudio(
        b"a", None
    )


# --- malformed input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "",
        "[1, 2]",
        '"just a string"',
        '{"no_type": 1}',
        '{"type": 5}',
        # wrong field types
        '{"type": "audio", "audio_event": {"audio_base_64": "AAAA", "event_id": "7"}}',
        '{"type": "audio", "audio_event": {"audio_base_64": "not base64!!", "event_id": 7}}',
        '{"type": "audio", "audio_event": {"audio_base_64": 12, "event_id": 7}}',
        '{"type": "audio", "audio_event": "AAAA"}',
        '{"type": "audio", "audio_event": {"audio_base_64": "AAAA", "event_id": true}}',
        '{"type": "ping", "ping_event": {"event_id": "42"}}',
        '{"type": "ping", "ping_event": {"event_id": 42, "ping_ms": "12"}}',
        '{"type": "interruption", "interruption_event": {"event_id": 1.5}}',
        '{"type": "vad_score", "vad_score_event": {"vad_score": "high"}}',
        '{"type": "vad_score", "vad_score_event": {}}',
        '{"type": "agent_response", "agent_response_event": {"agent_response": ["x"]}}',
        '{"type": "client_tool_call", "client_tool_call": {"tool_name": "x"}}',
        '{"type": "client_tool_call", "client_tool_call": {"tool_call_id": "c", "parameters": 3}}',
        '{"type": "agent_tool_response", "agent_tool_response": {"is_error": "no"}}',
        '{"type": "error", "error_event": {"code": "1008"}}',
    ],
)
def test_malformed_frames_become_protocol_errors(text):
    proto = ConvaiProtocol()
    proto.receive_text(text)
    events = proto.events_received()
    assert len(events) == 1 and isinstance(events[0], ProtocolError), events
    assert events[0].raw == text[:200]
    assert proto.errors == 1
    assert proto.messages_to_send() == []


def test_binary_frame_is_protocol_error():
    proto = ConvaiProtocol()
    proto.receive_bytes(b"\x00\x01binary")
    (ev,) = proto.events_received()
    assert isinstance(ev, ProtocolError) and "binary" in ev.description
    assert ev.raw == b"\x00\x01binary".hex()
    assert proto.errors == 1


def test_raw_excerpt_is_bounded():
    proto = ConvaiProtocol()
    proto.receive_text("{" + "x" * 10_000)
    (ev,) = proto.events_received()
    assert len(ev.raw) == 200


def test_errors_accumulate_and_parsing_continues():
    proto = ConvaiProtocol()
    proto.receive_text("garbage")
    proto.receive_bytes(b"\x00")
    proto.receive_text('{"type": "ping", "ping_event": {"event_id": 3, "ping_ms": null}}')
    events = proto.events_received()
    assert [type(e) for e in events] == [ProtocolError, ProtocolError, Ping]
    assert proto.errors == 2
    assert proto.events_received() == []


# --- client messages ----------------------------------------------------------------


def sent(proto: ConvaiProtocol) -> list[dict]:
    return [json.loads(m) for m in proto.messages_to_send()]


def test_init_data_minimal():
    proto = ConvaiProtocol()
    proto.init_data()
    assert sent(proto) == [{"type": "conversation_initiation_client_data"}]


def test_init_data_full():
    proto = ConvaiProtocol()
    proto.init_data(
        dynamic_variables={"caller_number": "+15551234567", "vip": True},
        overrides={"agent": {"first_message": "Hi"}},
        user_id="caller-42",
        extra_body={"temperature": 0.7},
    )
    assert sent(proto) == [
        {
            "type": "conversation_initiation_client_data",
            "conversation_config_override": {"agent": {"first_message": "Hi"}},
            "custom_llm_extra_body": {"temperature": 0.7},
            "dynamic_variables": {"caller_number": "+15551234567", "vip": True},
            "user_id": "caller-42",
        }
    ]


def test_init_data_omits_empty_overrides():
    proto = ConvaiProtocol()
    proto.init_data(dynamic_variables={}, overrides={})
    assert sent(proto) == [{"type": "conversation_initiation_client_data"}]


def test_user_audio_is_bare_base64_object():
    proto = ConvaiProtocol()
    proto.user_audio(b"\xff\x7f\x00")
    (msg,) = sent(proto)
    assert msg == {"user_audio_chunk": b64(b"\xff\x7f\x00")}


def test_other_client_messages_in_order():
    proto = ConvaiProtocol()
    proto.pong(12345)
    proto.client_tool_result("call_123", "Account is active", False)
    proto.contextual_update("Caller pressed 1")
    proto.contextual_update("billing", context_id="ivr-menu")
    proto.user_message("upgrade please")
    proto.user_activity()
    assert sent(proto) == [
        {"type": "pong", "event_id": 12345},
        {
            "type": "client_tool_result",
            "tool_call_id": "call_123",
            "result": "Account is active",
            "is_error": False,
        },
        {"type": "contextual_update", "text": "Caller pressed 1"},
        {"type": "contextual_update", "text": "billing", "context_id": "ivr-menu"},
        {"type": "user_message", "text": "upgrade please"},
        {"type": "user_activity"},
    ]
    assert proto.messages_to_send() == []
